// The vsm file system: files as extents on volumes, a directory tree, xattrs, and
// a checkpoint + circular journal inside volume 0 (ext4 data=ordered / XFS-like).
//
// Every metadata change is a logical op (mk, rm, mv, ln, or, tr, at, xa, ex, ph) applied to
// the in-memory state by apply() and appended to `ops`; a commit (fsync, sync,
// close, background timer) flushes the data volumes, then writes the ops as one
// journal record (or, when the journal is half full, a whole-state checkpoint) and
// flushes volume 0. Mount loads the newest valid checkpoint and replays records of
// its epoch (nonce) in seq order until the first bad one, rebuilds the free maps
// from the extents, and starts a new epoch with a fresh checkpoint.
import { randomBytes, randomUUID } from 'crypto'
import { BlockDev, VsmError, checkRange } from '../block/blockdev'
import { EventSink, NULL_SINK } from '../control/events'
import { Extent, ExtentMap, FreeMap, RefMap } from './extents'
import { PLACEMENT_XATTR, parseRules, pick } from './placement'
import {
  BS, JR_HDR, JR_OPS, JR_WRAP, SB_VERSION, Superblock, decodeRecordHeader, encodeCheckpoint, encodeRecord,
  clearLabel, planLayout, probeVolume, readCheckpoint, readLabel, readSuperblock, recordCrcOk, recordLen, superblockFits, writeLabel, writeSuperblock,
} from './layout'

export const S_IFMT = 0o170000
export const S_IFDIR = 0o040000
export const S_IFREG = 0o100000
export const S_IFLNK = 0o120000
const S_IFCHR = 0o020000, S_IFBLK = 0o060000, S_IFIFO = 0o010000, S_IFSOCK = 0o140000
/** The types mknod makes: plain inodes the kernel serves itself (fifos, sockets) or hands to a driver (devices). */
const NODE_TYPES = new Set([S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK])
/** rename(2) flags (renameat2). */
export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
/** utimensat(2)'s UTIME_NOW and UTIME_OMIT as utimens() takes them. */
export type TimeSpec = number | 'now' | 'omit'
const NAME_MAX = 255
const PATH_MAX = 4096
const LINK_MAX = 65000
const NO_ID = 0xffffffff
/** relatime: a read moves atime when it is older than the last change or than a day. */
const ATIME_MAX_AGE_MS = 86_400_000
const XATTR_MAX = 65536
export const MAX_FILE_SIZE = 2 ** 50
const ROOT = 1
const LAZY_COMMIT_MS = 5000

export interface Stat {
  ino: number; mode: number; uid: number; gid: number; size: number; blocks: number; nlink: number
  atime: number; mtime: number; ctime: number
  /** Device number of a character or block special file (0 otherwise). */
  rdev: number
}

export interface StatFs { bsize: number; blocks: number; bfree: number; bavail: number; files: number; ffree: number; namemax: number }

type Op =
  /** l: a symlink's target; r: a device's number. */
  | { o: 'mk'; p: number; n: string; i: number; m: number; u: number; g: number; t: number; v: number; l?: string; r?: number }
  /** k: the inode is open, keep it as an orphan when its last name goes. */
  | { o: 'rm'; p: number; n: string; t: number; k?: 1 }
  /** x: exchange the two entries (RENAME_EXCHANGE); k as for rm, for a replaced target. */
  | { o: 'mv'; p: number; n: string; q: number; m: string; t: number; x?: 1; k?: 1 }
  /** Hard link: one more name for inode i. */
  | { o: 'ln'; i: number; p: number; n: string; t: number }
  /** An orphan (unlinked while open) is released: its blocks go. */
  | { o: 'or'; i: number }
  | { o: 'tr'; i: number; s: number; t: number; st: number }
  | { o: 'ph'; i: number; b0: number; b1: number; t: number; st: number }
  | { o: 'at'; i: number; m: number; u: number; g: number; s: number; a: number; mt: number; c: number; st: number }
  | { o: 'xa'; i: number; n: string; v: string | null; t: number }
  /** Maps file blocks (replacing what they mapped: copy-on-write moves a block). */
  | { o: 'ex'; i: number; e: number[]; st: number }
  /** Snapshot s of file i, named n: a copy of the extent map (shared, not the data), size z. */
  | { o: 'sn'; i: number; s: number; n: string; z: number; t: number; st: number }
  | { o: 'sd'; s: number; t: number }
  /** File i becomes a copy of its snapshot s. */
  | { o: 'rv'; i: number; s: number; t: number; st: number }
  /** New file i named n in directory p, sharing every block of snapshot s. */
  | { o: 'cl'; s: number; p: number; n: string; i: number; m: number; u: number; g: number; t: number; v: number; st: number }
  /**
   * Relocate: blocks [p, p+n) of volume v now live at [q, q+n) of volume w, in every
   * map listed in h as (inode, file block where the run starts in it).
   */
  | { o: 'rl'; v: number; p: number; n: number; w: number; q: number; h: number[] }
  /** File i's new blocks are placed on volume v. */
  | { o: 'pv'; i: number; v: number }

/**
 * An I/O that maps blocks and has not logged them yet. `replaced` are the shared
 * extents a copy-on-write took out of the file's map: their reference stays counted
 * until the new mapping is logged, so no commit can free them while the durable
 * state still points at them.
 */
interface Pending { b0: number; b1: number; done: Promise<void>; resolve: () => void; allocs: Extent[]; replaced: Extent[] }

export interface SnapshotInfo { name: string; ino: number; size: number; created: number; stamp: number; uniqueBytes: number }
export interface MapEntry { offset: number; length: number; volume: string; physical: number; shared: boolean; refs: number }

const STAMP_GEN = 2 ** 32

class Inode {
  entries?: Map<string, number>
  ext = new ExtentMap()
  xattr = new Map<string, Buffer>()
  inflight = 0
  pending: Pending[] = []
  waiters: (() => void)[] = []
  /** Set while truncate/unlink/rename waits for I/O to drain: new I/O waits here, so it cannot starve them. */
  gate: Promise<void> | null = null
  gateOpen: () => void = () => undefined
  /** A file's snapshots by name (snapshot inodes live outside the directory tree). */
  snaps?: Map<string, number>
  /** For a snapshot inode: the file it belongs to, and its name. */
  snapOf = 0
  snapName = ''
  /** Ordering stamp of the latest change to the data (generation << 32 | counter). */
  stamp = 0
  /** A snapshot's checkpoint entry, made once: a snapshot never changes. */
  frozen?: string
  /** A symlink's target. */
  target = ''
  /** A device's number. */
  rdev = 0
  constructor(
    public ino: number, public mode: number, public uid: number, public gid: number, public size: number,
    public nlink: number, public atime: number, public mtime: number, public ctime: number,
    public vol: number, public parent: number,
  ) {}
  get isDir() { return (this.mode & S_IFMT) === S_IFDIR }
  get isReg() { return (this.mode & S_IFMT) === S_IFREG }
  /** Unlinked while open: out of the tree, its data kept until the last close (or the next mount). */
  get isOrphan() { return this.nlink === 0 && !this.snapOf && !this.isDir }
  get busy() { return this.inflight > 0 || this.pending.length > 0 }
}

function err(code: string, msg: string): VsmError { return new VsmError(code, msg) }

const NOSPACE_EVENT_MS = 10_000

/** Stands in the slot of a volume dropped from the fs: nothing maps to it, so nothing reaches it. */
const REMOVED: BlockDev = {
  size: 0,
  read: async () => { throw err('EIO', 'volume removed from the fs') },
  write: async () => { throw err('EIO', 'volume removed from the fs') },
  flush: async () => undefined,
  close: async () => undefined,
}

/** mkfs never formats over a file system (or what looks like the remains of one). */
async function refuseFormatted(dev: BlockDev, name: string): Promise<void> {
  const p = await probeVolume(dev)
  if (p.kind === 'fs') throw err('EEXIST', `volume ${name} already holds a vsm file system (${p.sb.uuid}): refusing to format it`)
  if (p.kind === 'member') throw err('EEXIST', `volume ${name} is already part of vsm file system ${p.uuid}: refusing to format it`)
  if (p.kind === 'damaged') throw err('EEXIST', `volume ${name} holds a damaged vsm file system superblock or label: refusing to format it`)
}

function checkName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw err('EINVAL', 'empty file name')
  if (name === '.' || name === '..') throw err('EINVAL', `bad file name '${name}'`)
  if (name.includes('/') || name.includes('\0')) throw err('EINVAL', `file name may not contain '/' or NUL: ${JSON.stringify(name)}`)
  if (Buffer.byteLength(name) > NAME_MAX) throw err('ENAMETOOLONG', `file name longer than ${NAME_MAX} bytes`)
}

function parsePath(path: string): string[] {
  if (typeof path !== 'string' || !path.startsWith('/')) throw err('EINVAL', `path must be absolute: ${JSON.stringify(path)}`)
  // no limit on the whole path: the kernel bounds each call's path (PATH_MAX), not how
  // deep a file lies below the mount; names are checked one by one
  const parts = path.split('/').filter((p) => p !== '')
  for (const p of parts) checkName(p)
  return parts
}

function checkId(v: number, what: string) {
  if (!Number.isSafeInteger(v) || v < 0 || v > 0xffffffff) throw err('EINVAL', `bad ${what}: ${v}`)
}

function checkMode(m: number) {
  if (!Number.isSafeInteger(m) || m < 0) throw err('EINVAL', `bad mode: ${m}`)
}

function checkTime(t: number, what: string) {
  if (typeof t !== 'number' || !Number.isFinite(t)) throw err('EINVAL', `bad ${what}: ${t}`)
}

function checkXattrName(name: string) {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 255 || name.includes('\0')) {
    throw err('EINVAL', `bad xattr name: ${JSON.stringify(name)}`)
  }
}

/** Subtract sorted, coalesced interval lists: runs of a not covered by b. */
function subtractRuns(a: { start: number; len: number }[], b: { start: number; len: number }[]) {
  const out: { start: number; len: number }[] = []
  let j = 0
  for (const r of a) {
    let s = r.start
    const e = r.start + r.len
    while (j < b.length && b[j].start + b[j].len <= s) j++
    let k = j
    while (s < e && k < b.length && b[k].start < e) {
      if (b[k].start > s) out.push({ start: s, len: b[k].start - s })
      s = Math.max(s, b[k].start + b[k].len)
      k++
    }
    if (s < e) out.push({ start: s, len: e - s })
  }
  return out
}

function coalesce(runs: { start: number; len: number }[]) {
  const sorted = runs.slice().sort((x, y) => x.start - y.start)
  const out: { start: number; len: number }[] = []
  for (const r of sorted) {
    const l = out[out.length - 1]
    if (l && l.start + l.len >= r.start) l.len = Math.max(l.len, r.start + r.len - l.start)
    else out.push({ ...r })
  }
  return out
}

export class FileSystem {
  private inodes = new Map<number, Inode>()
  private nextIno = ROOT + 1
  private free: FreeMap[] = []
  private refs: RefMap[] = []
  /** Generation of the stamps: bumped (and checkpointed) at every mount, so stamps never repeat. */
  private gen = 0
  private ctr = 0
  private genSeen = 0
  private ops: Op[] = []
  private opsBytes = 0
  private dirtyAttrs = new Set<number>()
  private lazyAttrs = new Set<number>()
  private pendingFree: { vol: number; start: number; len: number }[] = []
  private dirtyVols = new Set<number>()
  /** Open handles per inode (hold/release): what keeps an unlinked file as an orphan. */
  private opened = new Map<number, number>()
  // journal state
  private seq = 0
  private nonce = 0
  private head = 0
  private tail = 0
  private ckSlot = 0
  /** What mount replayed from the journal: non-zero after an unclean stop (crash recovery, for the log). */
  readonly replayed = { records: 0, ops: 0, bytes: 0 }
  private events: EventSink = NULL_SINK
  /** fs.enospc events are held to one per NOSPACE_EVENT_MS; refusals in between are counted into the next. */
  private noSpaceAt = 0
  private noSpaceHeld = 0
  private lastCkptLen = 0
  private sinceCkpt = 0
  private wantCkpt = false
  private broken: Error | null = null
  private closed = false
  private inflight = 0
  private idleWaiters: (() => void)[] = []
  private commitRunning: Promise<void> | null = null
  private commitNext: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null
  private counters = { commits: 0, records: 0, wraps: 0, checkpoints: 0, flushes: 0, metaBytes: 0 }

  private constructor(private readonly vols: BlockDev[], private sb: Superblock) {}

  // ---------------------------------------------------------------- mkfs / mount

  /** journalBytes overrides the journal size (tests use a small one to exercise wrap and checkpoints). */
  static async mkfs(volumes: BlockDev[], opts: { volumeNames?: string[]; journalBytes?: number } = {}): Promise<void> {
    if (!Array.isArray(volumes) || volumes.length === 0) throw err('EINVAL', 'mkfs needs at least one volume')
    const names = opts.volumeNames ?? volumes.map((_, i) => `vol${i}`)
    if (names.length !== volumes.length) throw err('EINVAL', `volumeNames has ${names.length} names for ${volumes.length} volumes`)
    if (new Set(names).size !== names.length || names.some((n) => typeof n !== 'string' || !n)) throw err('EINVAL', 'volume names must be distinct non-empty strings')
    for (let i = 1; i < volumes.length; i++) {
      if (volumes[i].size < 2 * BS) throw err('ENOSPC', `volume ${i} too small (${volumes[i].size} bytes)`)
    }
    for (let i = 0; i < volumes.length; i++) await refuseFormatted(volumes[i], names[i])
    const total = volumes.reduce((s, v) => s + v.size, 0)
    const plan = planLayout(volumes[0].size, total, opts.journalBytes)
    const sb: Superblock = {
      version: SB_VERSION, seq: 1, uuid: randomUUID(), blockSize: BS,
      volumes: volumes.map((v, i) => ({ size: Math.floor(v.size / BS) * BS, name: names[i] })),
      ...plan, created: Date.now(),
    }
    const fs = new FileSystem(volumes, sb)
    const now = Date.now()
    const root = new Inode(ROOT, S_IFDIR | 0o755, 0, 0, 0, 2, now, now, now, 0, ROOT)
    root.entries = new Map()
    fs.inodes.set(ROOT, root)
    // invalidate anything a previous fs left in the second checkpoint slot and the journal
    await volumes[0].write(Buffer.alloc(BS), sb.ckpt[1])
    await volumes[0].write(Buffer.alloc(BS), sb.journal)
    fs.seq = 1
    fs.nonce = randomBytes(4).readUInt32LE(0)
    const ck = encodeCheckpoint({ seq: fs.seq++, nonce: fs.nonce, jstart: 0, len: 0 }, fs.serialize())
    if (ck.length > sb.ckptLen) throw err('ENOSPC', 'checkpoint area too small')
    await volumes[0].write(ck, sb.ckpt[0])
    for (let i = 1; i < volumes.length; i++) await writeLabel(volumes[i], sb.uuid, i)
    for (const v of volumes) await v.flush()
    // the superblock last: a torn mkfs leaves no mountable fs
    await writeSuperblock(volumes[0], sb)
  }

  static async mount(volumes: BlockDev[], opts: { volumeNames?: string[] } = {}): Promise<FileSystem> {
    if (!Array.isArray(volumes) || volumes.length === 0) throw err('EINVAL', 'mount needs at least one volume')
    // the metadata volume is the one with a superblock; the rest are ordered by their labels
    let sb: Superblock | null = null, metaIdx = -1
    for (let k = 0; k < volumes.length && !sb; k++) {
      try { sb = await readSuperblock(volumes[k]); metaIdx = k } catch { /* not this one */ }
    }
    if (!sb) throw err('EINVAL', 'no vsm fs superblock found on any volume')
    const live = sb.volumes.flatMap((v, i) => (v.removed ? [] : [i]))
    if (live.length !== volumes.length) throw err('EINVAL', `fs has ${live.length} volumes, ${volumes.length} given`)
    const ordered: BlockDev[] = sb.volumes.map((v) => (v.removed ? REMOVED : (undefined as unknown as BlockDev)))
    ordered[0] = volumes[metaIdx]
    for (let k = 0; k < volumes.length; k++) {
      if (k === metaIdx) continue
      const l = await readLabel(volumes[k])
      if (!l || l.uuid !== sb.uuid || l.index < 1 || l.index >= sb.volumes.length || ordered[l.index]) {
        throw err('EINVAL', `volume ${k} does not belong to fs ${sb.uuid}`)
      }
      ordered[l.index] = volumes[k]
    }
    if (opts.volumeNames) {
      if (opts.volumeNames.length !== volumes.length) throw err('EINVAL', 'volumeNames length does not match volumes')
      for (let k = 0; k < volumes.length; k++) {
        const idx = ordered.indexOf(volumes[k])
        if (sb.volumes[idx].name !== opts.volumeNames[k]) throw err('EINVAL', `volume ${k} is '${sb.volumes[idx].name}', not '${opts.volumeNames[k]}'`)
      }
    }
    for (const i of live) {
      if (ordered[i].size < sb.volumes[i].size) throw err('EINVAL', `volume '${sb.volumes[i].name}' is smaller than when formatted`)
    }
    const fs = new FileSystem(ordered, sb)
    await fs.load()
    return fs
  }

  private async load(): Promise<void> {
    const { sb } = this
    const v0 = this.vols[0]
    const cks = await Promise.all(sb.ckpt.map((off) => readCheckpoint(v0, off, sb.ckptLen)))
    let slot = -1
    for (let i = 0; i < 2; i++) if (cks[i] && (slot < 0 || cks[i]!.h.seq > cks[slot]!.h.seq)) slot = i
    if (slot < 0) throw err('EIO', 'no valid checkpoint on volume 0')
    const ck = cks[slot]!
    this.deserialize(ck.payload)
    this.ckSlot = slot
    this.nonce = ck.h.nonce
    this.lastCkptLen = ck.payload.length
    // replay the journal of this checkpoint's epoch
    const jl = sb.journalLen
    const jbuf = Buffer.alloc(jl)
    await v0.read(jbuf, sb.journal)
    let pos = ck.h.jstart, seq = ck.h.seq + 1, used = 0
    for (;;) {
      if (pos >= jl) pos = 0
      const hb = jbuf.subarray(pos, pos + JR_HDR)
      const h = decodeRecordHeader(hb)
      if (!h || h.seq !== seq || h.nonce !== ck.h.nonce) break
      const rl = recordLen(h.len)
      if (pos + rl > jl) break
      const payload = jbuf.subarray(pos + JR_HDR, pos + JR_HDR + h.len)
      if (!recordCrcOk(hb, payload, h.crc)) break
      seq++
      if (h.type === JR_WRAP) { used += jl - pos; pos = 0; continue }
      if (h.type !== JR_OPS) break
      let ops: Op[]
      try { ops = JSON.parse(payload.toString()) } catch { break }
      for (const op of ops) this.apply(op, true)
      pos += rl
      used += rl
      this.replayed.records++
      this.replayed.ops += ops.length
      this.replayed.bytes += rl
    }
    this.seq = seq
    this.head = pos >= jl ? 0 : pos
    this.tail = ck.h.jstart
    this.sinceCkpt = used
    this.gen = Math.max(this.gen, this.genSeen) + 1
    this.ctr = 0
    // rebuild the free maps and reference counts from the extents
    const errors: string[] = []
    const built = this.buildFree(errors)
    this.free = built.free
    this.refs = built.refs
    if (errors.length) throw err('EIO', `fs metadata inconsistent, refusing to mount: ${errors[0]}`)
    // files unlinked while open when the last run ended: nobody holds them now
    for (const ino of this.orphans()) this.exec({ o: 'or', i: ino })
    // start a new epoch: stale records of a crashed run can never be replayed later
    this.wantCkpt = true
    await this.commit()
  }

  private dataRange(v: number): [number, number] {
    if (this.sb.volumes[v].removed) return [1, 1]
    return [v === 0 ? this.sb.dataStart : 1, this.sb.volumes[v].size / BS]
  }

  /**
   * Free maps and reference counts as the extent maps imply them. A block may be in
   * several maps (a file and its snapshots, clones), never twice in one; `claims` are
   * extra references held by copy-on-write I/O in flight.
   */
  private buildFree(errors: string[], claims: Extent[] = []): { free: FreeMap[]; refs: RefMap[] } {
    const runs: { start: number; len: number }[][] = this.vols.map(() => [])
    const add = (ino: number, e: Extent) => {
      if (e.vol < 0 || e.vol >= this.vols.length || this.sb.volumes[e.vol].removed) { errors.push(`inode ${ino}: extent on unknown or removed volume ${e.vol}`); return false }
      runs[e.vol].push({ start: e.pb, len: e.len })
      return true
    }
    for (const n of this.inodes.values()) {
      const mine: { start: number; len: number }[][] = this.vols.map(() => [])
      for (const e of n.ext.ex) if (add(n.ino, e)) mine[e.vol].push({ start: e.pb, len: e.len })
      mine.forEach((r, v) => {
        if (r.length < 2) return
        const sum = r.reduce((a, x) => a + x.len, 0)
        const u = RefMap.fromRuns(r).union.reduce((a, x) => a + x.len, 0)
        if (u !== sum) errors.push(`inode ${n.ino}: maps a block of volume ${v} twice`)
      })
    }
    for (const c of claims) add(0, c)
    const free: FreeMap[] = [], refs: RefMap[] = []
    runs.forEach((r, v) => {
      const [lo, hi] = this.dataRange(v)
      const b = RefMap.fromRuns(r)
      free.push(FreeMap.fromAllocated(lo, hi, b.union, errors))
      refs.push(b.refs)
    })
    return { free, refs }
  }

  private serialize(): Buffer {
    const inodes: string[] = []
    for (const n of this.inodes.values()) {
      // a snapshot never changes (a deleted one is a new inode if the name returns):
      // its JSON is made once, not at every checkpoint
      if (n.snapOf && n.frozen) { inodes.push(n.frozen); continue }
      let ext = n.ext
      if (n.pending.some((p) => p.allocs.length)) {
        // data of allocating writes in flight is not yet written: leave those extents
        // out, and put back what a copy-on-write replaced
        ext = ext.clone()
        for (const p of n.pending) for (const a of p.allocs) ext.punch(a.fb, a.fb + a.len)
        for (const p of n.pending) for (const a of p.replaced) ext.insert(a.fb, a.vol, a.pb, a.len)
      }
      const json = JSON.stringify([n.ino, n.mode, n.uid, n.gid, n.size, n.nlink, n.atime, n.mtime, n.ctime, n.vol, n.parent,
        n.entries ? [...n.entries] : 0, ext.flat(), [...n.xattr].map(([k, v]) => [k, v.toString('base64')]),
        n.snaps ? [...n.snaps] : 0, n.snapOf, n.snapName, n.stamp, n.target, n.rdev])
      if (n.snapOf) n.frozen = json
      inodes.push(json)
    }
    return Buffer.from(`{"v":1,"nextIno":${this.nextIno},"gen":${this.gen},"inodes":[${inodes.join(',')}]}`)
  }

  private deserialize(payload: Buffer) {
    const st = JSON.parse(payload.toString())
    if (st.v !== 1) throw err('EIO', `unknown checkpoint version ${st.v}`)
    this.nextIno = st.nextIno
    this.inodes.clear()
    for (const a of st.inodes) {
      const n = new Inode(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10])
      if (a[11]) n.entries = new Map(a[11])
      const f: number[] = a[12]
      for (let i = 0; i < f.length; i += 4) n.ext.insert(f[i], f[i + 1], f[i + 2], f[i + 3])
      for (const [k, v] of a[13]) n.xattr.set(k, Buffer.from(v, 'base64'))
      if (a[14]) n.snaps = new Map(a[14])
      n.snapOf = a[15] ?? 0
      n.snapName = a[16] ?? ''
      n.stamp = a[17] ?? 0
      n.target = a[18] ?? ''
      n.rdev = a[19] ?? 0
      this.inodes.set(n.ino, n)
    }
    this.gen = st.gen ?? 0
    if (!this.inodes.get(ROOT)?.isDir) throw err('EIO', 'checkpoint has no root directory')
  }

  // ---------------------------------------------------------------- ops

  /**
   * Apply one logical op to the in-memory state; returns the extents it took out of
   * maps (exec() turns them into frees through the reference counts, which replay
   * leaves alone: mount rebuilds them from the extents).
   */
  private apply(op: Op, replay = false): Extent[] {
    const bad = (why: string) => err('EIO', `journal op ${op.o} inconsistent: ${why}`)
    const node = (i: number) => { const n = this.inodes.get(i); if (!n) throw bad(`no inode ${i}`); return n }
    const dir = (i: number) => { const n = node(i); if (!n.entries) throw bad(`inode ${i} not a directory`); return n }
    const snap = (i: number) => { const n = node(i); if (!n.snapOf) throw bad(`inode ${i} not a snapshot`); return n }
    if ('st' in op && op.st) this.genSeen = Math.max(this.genSeen, Math.floor(op.st / STAMP_GEN))
    const stamp = (n: Inode, st: number) => { if (st > n.stamp) n.stamp = st }
    const dropSnap = (s: Inode): Extent[] => {
      this.inodes.get(s.snapOf)?.snaps?.delete(s.snapName)
      this.inodes.delete(s.ino)
      return s.ext.punch(0, Infinity)
    }
    const dropInode = (n: Inode): Extent[] => {
      this.inodes.delete(n.ino)
      this.dirtyAttrs.delete(n.ino)
      this.lazyAttrs.delete(n.ino)
      // a deleted disk takes its snapshots along; clones keep their blocks by reference
      const out = n.ext.punch(0, Infinity)
      for (const s of n.snaps?.values() ?? []) out.push(...dropSnap(node(s)))
      return out
    }
    /** keep: the inode is open; at its last name it becomes an orphan instead of going. */
    const dropEntry = (d: Inode, name: string, t: number, keep = false): Extent[] => {
      const i = d.entries!.get(name)
      if (i === undefined) throw bad(`no entry ${name}`)
      const n = node(i)
      d.entries!.delete(name)
      d.mtime = d.ctime = t
      if (n.isDir) { d.nlink--; this.inodes.delete(i); return [] }
      n.nlink--
      n.ctime = t
      if (n.nlink > 0 || keep) return []
      return dropInode(n)
    }
    const newFile = (p: number, name: string, i: number, m: number, u: number, g: number, t: number, v: number) => {
      const d = dir(p)
      if (d.entries!.has(name) || this.inodes.has(i)) throw bad(`${name} exists`)
      const isDir = (m & S_IFMT) === S_IFDIR
      const n = new Inode(i, m, u, g, 0, isDir ? 2 : 1, t, t, t, v, p)
      if (isDir) { n.entries = new Map(); d.nlink++ }
      this.inodes.set(i, n)
      d.entries!.set(name, i)
      d.mtime = d.ctime = t
      this.nextIno = Math.max(this.nextIno, i + 1)
      return n
    }
    switch (op.o) {
      case 'mk': {
        const n = newFile(op.p, op.n, op.i, op.m, op.u, op.g, op.t, op.v)
        if (op.l !== undefined) { n.target = op.l; n.size = Buffer.byteLength(op.l) }
        n.rdev = op.r ?? 0
        return []
      }
      case 'rm': return dropEntry(dir(op.p), op.n, op.t, !!op.k)
      case 'ln': {
        const n = node(op.i), d = dir(op.p)
        if (n.isDir || n.snapOf || n.nlink === 0) throw bad(`inode ${op.i} cannot take a link`)
        if (d.entries!.has(op.n)) throw bad(`${op.n} exists`)
        d.entries!.set(op.n, op.i)
        n.nlink++
        n.ctime = d.mtime = d.ctime = op.t
        return []
      }
      case 'or': {
        const n = node(op.i)
        if (!n.isOrphan) throw bad(`inode ${op.i} is not an orphan`)
        return dropInode(n)
      }
      case 'mv': {
        const s = dir(op.p), d = dir(op.q)
        const i = s.entries!.get(op.n)
        if (i === undefined) throw bad(`no entry ${op.n}`)
        const n = node(i)
        let freed: Extent[] = []
        const old = d.entries!.get(op.m)
        if (old === i) return []
        if (op.x) { this.exchange(s, op.n, d, op.m, op.t); return [] }
        if (old !== undefined) freed = dropEntry(d, op.m, op.t, !!op.k)
        s.entries!.delete(op.n)
        d.entries!.set(op.m, i)
        if (n.isDir && s !== d) { s.nlink--; d.nlink++; n.parent = op.q }
        s.mtime = s.ctime = d.mtime = d.ctime = n.ctime = op.t
        return freed
      }
      case 'tr': {
        const n = node(op.i)
        // sizes are journaled at commit time, so do not trust n.size here: no block
        // past the new end may survive, whatever the size was
        const freed = n.ext.punch(Math.ceil(op.s / BS), Infinity)
        n.size = op.s
        n.mtime = n.ctime = op.t
        stamp(n, op.st)
        return freed
      }
      case 'ph': {
        const n = node(op.i)
        n.mtime = n.ctime = op.t
        stamp(n, op.st)
        return n.ext.punch(op.b0, op.b1)
      }
      case 'at': {
        const n = this.inodes.get(op.i)
        if (!n) { if (replay) return []; throw bad(`no inode ${op.i}`) }
        n.mode = op.m; n.uid = op.u; n.gid = op.g; n.size = op.s; n.atime = op.a; n.mtime = op.mt; n.ctime = op.c
        stamp(n, op.st ?? 0)
        return []
      }
      case 'xa': {
        const n = node(op.i)
        if (op.v === null) n.xattr.delete(op.n)
        else n.xattr.set(op.n, Buffer.from(op.v, 'base64'))
        n.ctime = op.t
        return []
      }
      case 'ex': {
        const n = node(op.i)
        const out: Extent[] = []
        for (let k = 0; k < op.e.length; k += 4) {
          out.push(...n.ext.punch(op.e[k], op.e[k] + op.e[k + 3]))
          n.ext.insert(op.e[k], op.e[k + 1], op.e[k + 2], op.e[k + 3])
        }
        stamp(n, op.st ?? 0)
        return out
      }
      case 'sn': {
        const f = node(op.i)
        if (f.isDir || f.snapOf) throw bad(`inode ${op.i} cannot have snapshots`)
        if (f.snaps?.has(op.n) || this.inodes.has(op.s)) throw bad(`snapshot ${op.n} exists`)
        const s = new Inode(op.s, S_IFREG | 0o444, f.uid, f.gid, op.z, 0, op.t, op.t, op.t, f.vol, 0)
        s.ext = f.ext.clone()
        s.xattr = new Map(f.xattr)
        s.snapOf = f.ino
        s.snapName = op.n
        s.stamp = op.st
        this.inodes.set(op.s, s)
        ;(f.snaps ??= new Map()).set(op.n, op.s)
        this.nextIno = Math.max(this.nextIno, op.s + 1)
        return []
      }
      case 'sd': return dropSnap(snap(op.s))
      case 'rv': {
        const f = node(op.i), s = snap(op.s)
        const out = f.ext.punch(0, Infinity)
        f.ext = s.ext.clone()
        f.size = s.size
        f.mtime = f.ctime = op.t
        stamp(f, op.st)
        return out
      }
      case 'cl': {
        const s = snap(op.s)
        const n = newFile(op.p, op.n, op.i, op.m, op.u, op.g, op.t, op.v)
        n.ext = s.ext.clone()
        n.size = s.size
        n.xattr = new Map(s.xattr)
        stamp(n, op.st)
        return []
      }
      case 'rl': {
        const out: Extent[] = []
        for (let k = 0; k < op.h.length; k += 2) {
          const h = node(op.h[k]), fb = op.h[k + 1]
          const was = h.ext.punch(fb, fb + op.n)
          if (was.length !== 1 || was[0].vol !== op.v || was[0].pb !== op.p || was[0].len !== op.n) throw bad(`inode ${h.ino} does not map ${op.v}:${op.p}+${op.n} at ${fb}`)
          h.ext.insert(fb, op.w, op.q, op.n)
          out.push(...was)
        }
        return out
      }
      case 'pv': node(op.i).vol = op.v; return []
    }
  }

  /** RENAME_EXCHANGE: entries a (in s) and b (in d) swap inodes; directories change parent. */
  private exchange(s: Inode, a: string, d: Inode, b: string, t: number): void {
    const i = s.entries!.get(a), j = d.entries!.get(b)
    if (i === undefined || j === undefined) throw err('EIO', `journal op mv inconsistent: exchange needs ${a} and ${b}`)
    const n = this.inodes.get(i)!, m = this.inodes.get(j)!
    s.entries!.set(a, j)
    d.entries!.set(b, i)
    if (s !== d) {
      if (n.isDir) { n.parent = d.ino; s.nlink--; d.nlink++ }
      if (m.isDir) { m.parent = s.ino; d.nlink--; s.nlink++ }
    }
    s.mtime = s.ctime = d.mtime = d.ctime = n.ctime = m.ctime = t
  }

  /** Apply a live op and queue it for the next commit; blocks no map holds any more are freed after that commit. */
  private exec(op: Op): void {
    const punched = this.apply(op)
    this.log(op)
    this.unref(punched)
    const held = op.o === 'sn' ? op.s : op.o === 'rv' || op.o === 'cl' ? op.i : 0
    if (held) for (const e of this.inodes.get(held)!.ext.ex) this.refs[e.vol].adjust(e.pb, e.len, 1)
    // the new blocks start with one reference (allocated); each further map holding them adds one
    if (op.o === 'rl') for (let k = 2; k < op.h.length; k += 2) this.refs[op.w].adjust(op.q, op.n, 1)
  }

  private unref(extents: Extent[]) {
    for (const e of extents) {
      for (const f of this.refs[e.vol].adjust(e.pb, e.len, -1)) this.pendingFree.push({ vol: e.vol, start: f.start, len: f.len })
    }
  }

  private stamp(): number {
    if (++this.ctr >= STAMP_GEN) { this.gen++; this.ctr = 1 }
    return this.gen * STAMP_GEN + this.ctr
  }

  private log(op: Op) {
    this.ops.push(op)
    this.opsBytes += op.o === 'ex' ? 40 + op.e.length * 12 : op.o === 'xa' ? 80 + (op.v?.length ?? 0) : 140
    this.armTimer()
  }

  private armTimer() {
    if (this.timer || this.closed) return
    this.timer = setTimeout(() => {
      this.timer = null
      if (!this.closed && !this.broken) this.commit().catch(() => { /* recorded in this.broken */ })
    }, LAZY_COMMIT_MS)
    this.timer.unref()
  }

  /** Metadata close to what one checkpoint area can hold: refuse growth. */
  private metaNearFull(extra = 0): boolean {
    return this.lastCkptLen + this.sinceCkpt + this.opsBytes + extra > this.sb.ckptLen * 0.8
  }

  /**
   * Refuse metadata growth when the state would not fit one checkpoint area. The
   * estimate counts journal bytes since the last checkpoint; when it says full,
   * take a checkpoint first to measure exactly.
   */
  private async ensureMeta(extra: number): Promise<void> {
    if (!this.metaNearFull(extra)) return
    if (this.sinceCkpt > 0 || this.opsBytes > 0) { this.wantCkpt = true; await this.commit() }
    if (this.metaNearFull(extra)) throw err('ENOSPC', 'no space left for fs metadata')
  }

  /** Where the fs reports what an operator must act on (a write refused for lack of space). */
  useEvents(events: EventSink): void { this.events = events }

  /** The error for a write that needs `blocks` more than the volume has; reported, but a guest retrying must not flood the log. */
  private noSpace(ino: number, vol: number, blocks: number): VsmError {
    const volume = this.sb.volumes[vol].name
    const now = Date.now()
    if (now - this.noSpaceAt >= NOSPACE_EVENT_MS) {
      this.events.publish('fs.enospc', { ino, volume, neededBytes: blocks * BS, freeBytes: this.free[vol].free * BS, unreportedRefusals: this.noSpaceHeld, reason: 'a write needs more blocks than the volume has free' }, 'warn')
      this.noSpaceAt = now
      this.noSpaceHeld = 0
    } else {
      this.noSpaceHeld++
    }
    return err('ENOSPC', `no space left on volume ${volume}`)
  }

  private live() {
    if (this.broken) throw err('EIO', `fs unusable after an I/O error: ${this.broken.message}`)
    if (this.closed) throw err('EIO', 'fs is closed')
  }

  // ---------------------------------------------------------------- commit

  private commit(): Promise<void> {
    if (!this.commitRunning) {
      this.commitRunning = this.doCommit().finally(() => { this.commitRunning = null })
      return this.commitRunning
    }
    if (!this.commitNext) {
      const noop = () => undefined
      this.commitNext = this.commitRunning.then(noop, noop).then(() => { this.commitNext = null; return this.commit() })
    }
    return this.commitNext
  }

  private attrOp(n: Inode): Op {
    return { o: 'at', i: n.ino, m: n.mode, u: n.uid, g: n.gid, s: n.size, a: n.atime, mt: n.mtime, c: n.ctime, st: n.stamp }
  }

  private async doCommit(): Promise<void> {
    if (this.broken) throw err('EIO', `fs unusable after an I/O error: ${this.broken.message}`)
    // ---- synchronous snapshot: which ops, which frees, which volumes
    const ops = this.ops
    this.ops = []
    this.opsBytes = 0
    for (const i of this.dirtyAttrs) { const n = this.inodes.get(i); if (n) ops.push(this.attrOp(n)) }
    this.dirtyAttrs.clear()
    if (ops.length) {
      for (const i of this.lazyAttrs) { const n = this.inodes.get(i); if (n) ops.push(this.attrOp(n)) }
      this.lazyAttrs.clear()
    }
    const frees = this.pendingFree
    this.pendingFree = []
    const vols = [...this.dirtyVols]
    this.dirtyVols.clear()
    const jl = this.sb.journalLen
    let ck: Buffer | null = null
    const recs: { buf: Buffer; pos: number }[] = []
    let recBytes = 0
    let ckSlot = this.ckSlot, ckNonce = this.nonce, ckHead = this.head
    if (ops.length || this.wantCkpt) {
      let useCk = this.wantCkpt || this.metaNearFull()
      let payload: Buffer | null = null
      if (!useCk) {
        payload = Buffer.from(JSON.stringify(ops))
        const rl = recordLen(payload.length)
        const wrap = this.head + rl > jl
        const need = (wrap ? jl - this.head : 0) + rl
        const used = (this.head - this.tail + jl) % jl
        if (used + need > jl / 2) useCk = true
      }
      if (useCk) {
        this.wantCkpt = false
        this.lazyAttrs.clear()
        const state = this.serialize()
        ckSlot = 1 - this.ckSlot
        ckNonce = randomBytes(4).readUInt32LE(0)
        ckHead = this.head
        ck = encodeCheckpoint({ seq: this.seq++, nonce: ckNonce, jstart: ckHead, len: state.length }, state)
        if (ck.length > this.sb.ckptLen) {
          this.broken = err('ENOSPC', `metadata (${ck.length} bytes) exceeds the checkpoint area (${this.sb.ckptLen} bytes)`)
          throw this.broken
        }
        this.nonce = ckNonce
      } else {
        let pos = this.head
        const rl = recordLen(payload!.length)
        if (pos + rl > jl) {
          recs.push({ buf: encodeRecord(JR_WRAP, this.seq++, this.nonce, Buffer.alloc(0)), pos })
          recBytes += jl - pos
          pos = 0
        }
        recs.push({ buf: encodeRecord(JR_OPS, this.seq++, this.nonce, payload!), pos })
        recBytes += rl
        pos += rl
        this.head = pos >= jl ? 0 : pos
      }
    }
    // ---- data first, then the commit record (data=ordered)
    try {
      await Promise.all(vols.map((v) => this.vols[v].flush()))
      this.counters.commits++
      this.counters.flushes += vols.length
      if (ck) {
        this.counters.checkpoints++
        this.counters.metaBytes += ck.length
        await this.vols[0].write(ck, this.sb.ckpt[ckSlot])
        await this.vols[0].flush()
        this.ckSlot = ckSlot
        this.tail = ckHead
        this.lastCkptLen = ck.length
        this.sinceCkpt = 0
      } else if (recs.length) {
        this.counters.records += recs.length
        for (const r of recs) this.counters.metaBytes += r.buf.length
        if (recs.length > 1 || this.head === 0) this.counters.wraps++
        await Promise.all(recs.map((r) => this.vols[0].write(r.buf, this.sb.journal + r.pos)))
        await this.vols[0].flush()
        this.sinceCkpt += recBytes
      }
    } catch (e) {
      this.broken = e as Error
      throw err('EIO', `commit failed: ${(e as Error).message}`)
    }
    // blocks freed by the now-durable ops may be reused
    for (const f of frees) this.free[f.vol].release(f.start, f.len)
  }

  // ---------------------------------------------------------------- lookup helpers

  private resolve(path: string): Inode {
    const parts = parsePath(path)
    let n = this.inodes.get(ROOT)!
    for (const p of parts) {
      if (!n.entries) throw err('ENOTDIR', `not a directory on the way to ${path}`)
      const i = n.entries.get(p)
      if (i === undefined) throw err('ENOENT', `no such file or directory: ${path}`)
      n = this.inodes.get(i)!
    }
    return n
  }

  private resolveParent(path: string): { dir: Inode; name: string } {
    const parts = parsePath(path)
    if (parts.length === 0) throw err('EBUSY', 'the root directory cannot be the target of this operation')
    const name = parts.pop()!
    let n = this.inodes.get(ROOT)!
    for (const p of parts) {
      if (!n.entries) throw err('ENOTDIR', `not a directory on the way to ${path}`)
      const i = n.entries.get(p)
      if (i === undefined) throw err('ENOENT', `no such directory: ${'/' + parts.join('/')}`)
      n = this.inodes.get(i)!
    }
    if (!n.entries) throw err('ENOTDIR', `parent of ${path} is not a directory`)
    return { dir: n, name }
  }

  private fileNode(ino: number): Inode {
    const n = this.inodes.get(ino)
    if (!n) throw err('ENOENT', `no inode ${ino}`)
    if (n.isDir) throw err('EISDIR', `inode ${ino} is a directory`)
    if (!n.isReg) throw err('EINVAL', `inode ${ino} is not a regular file`)
    return n
  }

  private stat(n: Inode): Stat {
    return { ino: n.ino, mode: n.mode, uid: n.uid, gid: n.gid, size: n.size, blocks: n.ext.total * (BS / 512),
      nlink: n.nlink, atime: n.atime, mtime: n.mtime, ctime: n.ctime, rdev: n.rdev }
  }

  private drain(n: Inode): Promise<void> {
    if (!n.gate) n.gate = new Promise((r) => { n.gateOpen = r })
    return new Promise((r) => n.waiters.push(r))
  }

  private wake(n: Inode) {
    if (!n.busy && n.waiters.length) {
      const w = n.waiters
      n.waiters = []
      for (const f of w) f() // the draining ops run first, then the gated I/O
      const open = n.gateOpen
      n.gate = null
      open()
    }
    if (this.inflight === 0 && this.idleWaiters.length) { const w = this.idleWaiters; this.idleWaiters = []; for (const f of w) f() }
  }

  private pendingOver(n: Inode, lo: number, hi: number): Promise<void> | null {
    for (const p of n.pending) if (p.b0 < hi && lo < p.b1) return p.done
    return null
  }

  private addPending(n: Inode, b0: number, b1: number, allocs: Extent[], replaced: Extent[]): Pending {
    let resolve!: () => void
    const done = new Promise<void>((r) => { resolve = r })
    const p: Pending = { b0, b1, done, resolve, allocs, replaced }
    n.pending.push(p)
    return p
  }

  private endIo(n: Inode, p: Pending | null) {
    n.inflight--
    this.inflight--
    if (p) { n.pending.splice(n.pending.indexOf(p), 1); p.resolve() }
    this.wake(n)
  }

  private checkIo(buf: Buffer, offset: number) {
    if (!Buffer.isBuffer(buf)) throw err('EINVAL', 'buffer expected')
    if (!Number.isSafeInteger(offset) || offset < 0) throw err('EINVAL', `bad offset ${offset}`)
    if (offset + buf.length > MAX_FILE_SIZE) throw err('EFBIG', `offset ${offset}+${buf.length} beyond the maximum file size`)
  }

  // ---------------------------------------------------------------- namespace

  getattr(path: string): Stat {
    this.live()
    return this.stat(this.resolve(path))
  }

  lookup(path: string): number {
    this.live()
    return this.resolve(path).ino
  }

  readdir(path: string): string[] {
    this.live()
    const n = this.resolve(path)
    if (!n.entries) throw err('ENOTDIR', `not a directory: ${path}`)
    return [...n.entries.keys()]
  }

  private async makeNode(path: string, mode: number, uid: number, gid: number, type: number, vol: number, extra: { l?: string; r?: number } = {}): Promise<number> {
    this.live()
    checkMode(mode); checkId(uid, 'uid'); checkId(gid, 'gid')
    this.resolveParent(path)
    await this.ensureMeta(400 + (extra.l?.length ?? 0) * 2)
    this.live()
    const { dir, name } = this.resolveParent(path)
    if (dir.entries!.has(name)) throw err('EEXIST', `already exists: ${path}`)
    const ino = this.nextIno
    this.exec({ o: 'mk', p: dir.ino, n: name, i: ino, m: type | (mode & 0o7777), u: uid, g: gid, t: Date.now(), v: vol, ...extra })
    return ino
  }

  /** A symbolic link at `path` holding `target` (stored as given; the kernel resolves it). */
  async symlink(target: string, path: string, uid: number, gid: number): Promise<number> {
    if (typeof target !== 'string' || target.length === 0 || target.includes('\0')) throw err('EINVAL', 'a symlink target is a non-empty string without NUL')
    if (Buffer.byteLength(target) >= PATH_MAX) throw err('ENAMETOOLONG', `symlink target longer than ${PATH_MAX - 1} bytes`)
    return this.makeNode(path, 0o777, uid, gid, S_IFLNK, 0, { l: target })
  }

  readlink(path: string): string {
    this.live()
    const n = this.resolve(path)
    if ((n.mode & S_IFMT) !== S_IFLNK) throw err('EINVAL', `not a symbolic link: ${path}`)
    return n.target
  }

  /** mknod(2): a regular file, fifo, socket or device node (mode carries the type; rdev the device number). */
  async mknod(path: string, mode: number, rdev: number, uid: number, gid: number): Promise<number> {
    checkMode(mode)
    const type = (mode & S_IFMT) || S_IFREG
    if (!NODE_TYPES.has(type)) throw err(type === S_IFDIR ? 'EPERM' : 'EINVAL', `mknod cannot make type ${type.toString(8)}`)
    const dev = type === S_IFCHR || type === S_IFBLK
    if (dev && (!Number.isSafeInteger(rdev) || rdev < 0)) throw err('EINVAL', `bad device number ${rdev}`)
    return this.makeNode(path, mode, uid, gid, type, 0, dev ? { r: rdev } : {})
  }

  /** link(2): a second name for a file (not a directory). */
  async link(from: string, to: string): Promise<void> {
    this.live()
    const n = this.resolve(from)
    if (n.isDir) throw err('EPERM', `cannot hard-link a directory: ${from}`)
    this.resolveParent(to)
    await this.ensureMeta(400)
    this.live()
    const m = this.resolve(from)
    const { dir, name } = this.resolveParent(to)
    if (dir.entries!.has(name)) throw err('EEXIST', `already exists: ${to}`)
    if (m.nlink >= LINK_MAX) throw err('EMLINK', `${from} has ${LINK_MAX} links`)
    this.exec({ o: 'ln', i: m.ino, p: dir.ino, n: name, t: Date.now() })
  }

  /**
   * An open handle on an inode: while any is held, removing its last name keeps the
   * inode as an orphan (readable and writable through the handle) until release().
   */
  hold(ino: number): void {
    this.node(ino)
    this.opened.set(ino, (this.opened.get(ino) ?? 0) + 1)
  }

  /** The last release of an orphan frees it (a crash before that frees it at the next mount). */
  async release(ino: number): Promise<void> {
    const c = (this.opened.get(ino) ?? 0) - 1
    if (c > 0) { this.opened.set(ino, c); return }
    this.opened.delete(ino)
    for (;;) {
      const n = this.inodes.get(ino)
      if (!n?.isOrphan || this.opened.has(ino) || this.broken || this.closed) return
      if (n.busy) { await this.drain(n); continue }
      this.exec({ o: 'or', i: ino })
      return
    }
  }

  /** Files unlinked while open, not yet released. */
  orphans(): number[] {
    return [...this.inodes.values()].filter((n) => n.isOrphan).map((n) => n.ino)
  }

  async mkdir(path: string, mode: number, uid: number, gid: number): Promise<void> {
    await this.makeNode(path, mode, uid, gid, S_IFDIR, 0)
  }

  async create(path: string, mode: number, uid: number, gid: number, opts: { volume?: number } = {}): Promise<number> {
    const vol = opts.volume ?? this.placementFor(path)
    this.placeable(vol, 'create')
    return this.makeNode(path, mode, uid, gid, S_IFREG, vol)
  }

  async unlink(path: string): Promise<void> {
    for (;;) {
      this.live()
      const { dir, name } = this.resolveParent(path)
      const i = dir.entries!.get(name)
      if (i === undefined) throw err('ENOENT', `no such file: ${path}`)
      const n = this.inodes.get(i)!
      if (n.isDir) throw err('EISDIR', `is a directory: ${path}`)
      if (n.nlink <= 1 && n.busy && !this.opened.has(i)) { await this.drain(n); continue }
      this.exec({ o: 'rm', p: dir.ino, n: name, t: Date.now(), ...this.keep(i) })
      return
    }
  }

  async rmdir(path: string): Promise<void> {
    this.live()
    const { dir, name } = this.resolveParent(path)
    const i = dir.entries!.get(name)
    if (i === undefined) throw err('ENOENT', `no such directory: ${path}`)
    const n = this.inodes.get(i)!
    if (!n.isDir) throw err('ENOTDIR', `not a directory: ${path}`)
    if (n.entries!.size) throw err('ENOTEMPTY', `directory not empty: ${path}`)
    this.exec({ o: 'rm', p: dir.ino, n: name, t: Date.now() })
  }

  /** A directory may not move below itself. */
  private checkNotBelow(dirIno: number, under: Inode, from: string, to: string) {
    for (let a = under; ; a = this.inodes.get(a.parent)!) {
      if (a.ino === dirIno) throw err('EINVAL', `cannot move ${from} into its own subtree ${to}`)
      if (a.ino === ROOT) break
    }
  }

  private keep(ino: number): { k?: 1 } {
    return this.opened.has(ino) ? { k: 1 } : {}
  }

  /** rename(2), and renameat2's RENAME_NOREPLACE and RENAME_EXCHANGE flags. */
  async rename(from: string, to: string, flags = 0): Promise<void> {
    if (!Number.isInteger(flags) || flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) || flags === (RENAME_NOREPLACE | RENAME_EXCHANGE)) {
      throw err('EINVAL', `bad rename flags ${flags}`)
    }
    for (;;) {
      this.live()
      const s = this.resolveParent(from)
      const d = this.resolveParent(to)
      const i = s.dir.entries!.get(s.name)
      if (i === undefined) throw err('ENOENT', `no such file or directory: ${from}`)
      const n = this.inodes.get(i)!
      const t = d.dir.entries!.get(d.name)
      if (flags & RENAME_NOREPLACE && t !== undefined) throw err('EEXIST', `already exists: ${to}`)
      if (flags & RENAME_EXCHANGE) {
        if (t === undefined) throw err('ENOENT', `no such file or directory: ${to}`)
        if (t === i) return
        if (n.isDir) this.checkNotBelow(i, d.dir, from, to)
        if (this.inodes.get(t)!.isDir) this.checkNotBelow(t, s.dir, to, from)
        this.exec({ o: 'mv', p: s.dir.ino, n: s.name, q: d.dir.ino, m: d.name, t: Date.now(), x: 1 })
        return
      }
      if (n.isDir) this.checkNotBelow(i, d.dir, from, to)
      if (t === i) return
      if (t !== undefined) {
        const tn = this.inodes.get(t)!
        if (n.isDir && !tn.isDir) throw err('ENOTDIR', `cannot replace non-directory ${to} with a directory`)
        if (!n.isDir && tn.isDir) throw err('EISDIR', `cannot replace directory ${to} with a non-directory`)
        if (tn.isDir && tn.entries!.size) throw err('ENOTEMPTY', `directory not empty: ${to}`)
        if (!tn.isDir && tn.nlink <= 1 && tn.busy && !this.opened.has(t)) { await this.drain(tn); continue }
      }
      this.exec({ o: 'mv', p: s.dir.ino, n: s.name, q: d.dir.ino, m: d.name, t: Date.now(), ...(t === undefined ? {} : this.keep(t)) })
      return
    }
  }

  async truncate(path: string, size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw err('EINVAL', `bad size ${size}`)
    if (size > MAX_FILE_SIZE) throw err('EFBIG', `size ${size} beyond the maximum file size`)
    let zeroed: [Inode, number] | null = null
    for (;;) {
      this.live()
      const n = this.regular(path)
      if (n.busy) { await this.drain(n); continue }
      if (size > n.size && n.size % BS && !(zeroed && zeroed[0] === n && zeroed[1] === n.size)) {
        // bytes past EOF in the last block may be stale: zero them before they become visible
        const m = n.ext.lookup(Math.floor(n.size / BS))
        if (m && this.refs[m.vol].anyShared(m.pb, 1)) { await this.unshare(n.ino, Math.floor(n.size / BS), Math.floor(n.size / BS) + 1); continue }
        if (m) {
          const old: number = n.size, gb = Math.floor(old / BS)
          const zlen = Math.min((gb + 1) * BS, size) - old
          const p = this.addPending(n, gb, gb + 1, [], [])
          n.inflight++; this.inflight++
          try { await this.vols[m.vol].write(Buffer.alloc(zlen), m.pb * BS + (old % BS)) }
          finally { this.dirtyVols.add(m.vol); this.endIo(n, p) }
          zeroed = [n, old]
          continue
        }
      }
      this.exec({ o: 'tr', i: n.ino, s: size, t: Date.now(), st: this.stamp() })
      return
    }
  }

  /** Deallocate the whole blocks inside [offset, offset+length) and zero the partial edges. */
  async punchHole(ino: number, offset: number, length: number): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) throw err('EINVAL', `bad range ${offset}+${length}`)
    for (;;) {
      this.live()
      const n = this.fileNode(ino)
      const end = Math.min(offset + length, n.size)
      if (end <= offset) return
      if (n.busy) { await this.drain(n); continue }
      const b0 = Math.ceil(offset / BS), b1 = Math.floor(end / BS)
      // partial edges: plain zero writes (through the normal write path)
      const edges: [number, number][] = []
      if (b0 > b1) edges.push([offset, end])
      else {
        if (offset < b0 * BS) edges.push([offset, b0 * BS])
        if (end > b1 * BS && b1 * BS >= offset) edges.push([b1 * BS, end])
      }
      for (const [s, e] of edges) {
        if (n.ext.lookup(Math.floor(s / BS))) await this.write(ino, Buffer.alloc(e - s), s)
      }
      if (n.busy) { await this.drain(n) }
      this.live()
      if (this.inodes.get(ino) !== n) throw err('ENOENT', `no inode ${ino}`)
      if (b1 > b0) this.exec({ o: 'ph', i: ino, b0, b1, t: Date.now(), st: this.stamp() })
      return
    }
  }

  async chmod(path: string, mode: number): Promise<void> {
    this.live()
    checkMode(mode)
    const n = this.resolve(path)
    n.mode = (n.mode & S_IFMT) | (mode & 0o7777)
    n.ctime = Date.now()
    this.touchAttrs(n)
  }

  /** An id of -1 (as uid_t: 0xffffffff) leaves that one unchanged, as chown(2). */
  async chown(path: string, uid: number, gid: number): Promise<void> {
    this.live()
    checkId(uid, 'uid'); checkId(gid, 'gid')
    const n = this.resolve(path)
    if (uid !== NO_ID) n.uid = uid
    if (gid !== NO_ID) n.gid = gid
    n.ctime = Date.now()
    this.touchAttrs(n)
  }

  /** Times in epoch ms, or utimensat's 'now' (UTIME_NOW) and 'omit' (UTIME_OMIT); ctime moves unless both are omitted. */
  async utimens(path: string, atime: TimeSpec, mtime: TimeSpec): Promise<void> {
    this.live()
    if (atime !== 'now' && atime !== 'omit') checkTime(atime, 'atime')
    if (mtime !== 'now' && mtime !== 'omit') checkTime(mtime, 'mtime')
    const n = this.resolve(path)
    if (atime === 'omit' && mtime === 'omit') return
    const now = Date.now()
    if (atime !== 'omit') n.atime = atime === 'now' ? now : atime
    if (mtime !== 'omit') n.mtime = mtime === 'now' ? now : mtime
    n.ctime = now
    this.touchAttrs(n)
  }

  /** Written lazily, with the next commit that has something else to say (as lazytime). */
  private touchAtime(n: Inode) {
    if (n.snapOf) return
    const now = Date.now()
    if (n.atime > n.mtime && n.atime > n.ctime && now - n.atime < ATIME_MAX_AGE_MS) return
    n.atime = now
    this.lazyAttrs.add(n.ino)
  }

  private touchAttrs(n: Inode) {
    this.dirtyAttrs.add(n.ino)
    this.opsBytes += 120
    this.armTimer()
  }

  getxattr(path: string, name: string): Buffer | undefined {
    this.live()
    checkXattrName(name)
    const v = this.resolve(path).xattr.get(name)
    return v ? Buffer.from(v) : undefined
  }

  listxattr(path: string): string[] {
    this.live()
    return [...this.resolve(path).xattr.keys()]
  }

  async setxattr(path: string, name: string, value: Buffer): Promise<void> {
    this.live()
    checkXattrName(name)
    if (!Buffer.isBuffer(value)) throw err('EINVAL', 'xattr value must be a Buffer')
    if (value.length > XATTR_MAX) throw err('E2BIG', `xattr value larger than ${XATTR_MAX} bytes`)
    this.resolve(path)
    await this.ensureMeta(value.length * 2 + 400)
    this.live()
    const n = this.resolve(path)
    this.exec({ o: 'xa', i: n.ino, n: name, v: value.toString('base64'), t: Date.now() })
  }

  async removexattr(path: string, name: string): Promise<void> {
    this.live()
    checkXattrName(name)
    const n = this.resolve(path)
    if (!n.xattr.has(name)) throw err('ENODATA', `no xattr ${name} on ${path}`)
    this.exec({ o: 'xa', i: n.ino, n: name, v: null, t: Date.now() })
  }

  // ---------------------------------------------------------------- data path

  async read(ino: number, buf: Buffer, offset: number): Promise<number> {
    this.live()
    let n = this.fileNode(ino)
    this.checkIo(buf, offset)
    while (n.gate) { await n.gate; this.live(); n = this.fileNode(ino) }
    let len: number
    for (;;) {
      if (offset >= n.size || buf.length === 0) return 0
      len = Math.min(buf.length, n.size - offset)
      const p = n.pending.length ? this.pendingOver(n, Math.floor(offset / BS), Math.ceil((offset + len) / BS)) : null
      if (!p) break
      await p
      this.live()
      n = this.fileNode(ino)
    }
    this.touchAtime(n)
    const end = offset + len
    const segs = n.ext.segments(Math.floor(offset / BS), Math.ceil(end / BS))
    const ios: Promise<number>[] = []
    for (const s of segs) {
      const ss = s.fb * BS
      const ds = Math.max(ss, offset), de = Math.min(ss + s.len * BS, end)
      if (s.pb < 0) buf.fill(0, ds - offset, de - offset)
      else ios.push(this.vols[s.vol].read(buf.subarray(ds - offset, de - offset), s.pb * BS + (ds - ss)))
    }
    if (ios.length) {
      n.inflight++; this.inflight++
      try { await Promise.all(ios) } finally { this.endIo(n, null) }
    }
    return len
  }

  async write(ino: number, buf: Buffer, offset: number): Promise<number> {
    this.live()
    let n = this.fileNode(ino)
    this.checkIo(buf, offset)
    if (n.snapOf) throw err('EROFS', 'a snapshot is read-only')
    const len = buf.length
    if (len === 0) return 0
    const end = offset + len
    const b0 = Math.floor(offset / BS), b1 = Math.ceil(end / BS)
    for (;;) {
      while (n.gate) { await n.gate; this.live(); n = this.fileNode(ino) }
      if (this.metaNearFull(1000)) { await this.ensureMeta(1000); this.live(); n = this.fileNode(ino); continue }
      // wait for allocating writes in flight on the blocks this one touches
      const p = n.pending.length ? this.pendingOver(n, Math.floor(Math.min(offset, n.size) / BS), b1) : null
      if (p) { await p; this.live(); n = this.fileNode(ino); continue }
      // a block this write changes only in part must be private first (read, copy, remap)
      const partial: number[] = []
      if (offset % BS) partial.push(b0)
      if (end % BS) partial.push(b1 - 1)
      if (offset > n.size && n.size % BS) partial.push(Math.floor(n.size / BS))
      const sh = partial.find((b) => this.sharedBlock(n, b))
      if (sh === undefined) break
      await this.unshare(ino, sh, sh + 1)
      this.live()
      n = this.fileNode(ino)
    }
    // ---- synchronous: map, allocate, build the I/O list
    const oldSize = n.size
    const vol = n.vol
    const io: [number, Buffer, number][] = []
    let pb0 = b0
    if (offset > oldSize && oldSize % BS) {
      const gb = Math.floor(oldSize / BS)
      const m = n.ext.lookup(gb)
      if (m) {
        // stale bytes past the old EOF in its block become visible: zero them
        const gEnd = Math.min((gb + 1) * BS, offset)
        io.push([m.vol, Buffer.alloc(gEnd - oldSize), m.pb * BS + (oldSize % BS)])
        pb0 = Math.min(pb0, gb)
      }
    }
    // mapped blocks held only by this file are overwritten in place; holes and shared
    // blocks (a snapshot or clone holds them too) get fresh blocks
    const segs: { fb: number; len: number; vol: number; pb: number; shared: boolean }[] = []
    let fresh = 0
    for (const sg of n.ext.segments(b0, b1)) {
      if (sg.pb < 0) { segs.push({ ...sg, shared: false }); fresh += sg.len; continue }
      const refs = this.refs[sg.vol]
      if (!refs.anyShared(sg.pb, sg.len)) { segs.push({ ...sg, shared: false }); continue }
      for (const pc of refs.pieces(sg.pb, sg.len)) {
        segs.push({ fb: sg.fb + pc.start - sg.pb, len: pc.len, vol: sg.vol, pb: pc.start, shared: pc.n > 1 })
        if (pc.n > 1) fresh += pc.len
      }
    }
    const allocs: Extent[] = []
    const replaced: Extent[] = []
    if (fresh) {
      if (fresh > this.free[vol].free) throw this.noSpace(ino, vol, fresh)
      if (this.metaNearFull(segs.length * 40)) throw err('ENOSPC', 'no space left for fs metadata')
    }
    for (const s of segs) {
      const ss = s.fb * BS
      if (s.pb >= 0 && !s.shared) {
        const ds = Math.max(ss, offset), de = Math.min(ss + s.len * BS, end)
        io.push([s.vol, buf.subarray(ds - offset, de - offset), s.pb * BS + (ds - ss)])
        continue
      }
      if (s.shared) replaced.push(...n.ext.punch(s.fb, s.fb + s.len))
      const prev = n.ext.lookup(s.fb - 1)
      const got = this.free[vol].alloc(s.len, prev && prev.vol === vol ? prev.pb + 1 : -1)!
      let fb = s.fb
      for (const r of got) {
        n.ext.insert(fb, vol, r.start, r.len)
        allocs.push({ fb, vol, pb: r.start, len: r.len })
        const ps = fb * BS, pe = (fb + r.len) * BS
        const xs = Math.max(ps, offset), xe = Math.min(pe, end)
        const dev = r.start * BS - ps // file byte -> device byte
        if (xs === ps && xe === pe) io.push([vol, buf.subarray(xs - offset, xe - offset), r.start * BS])
        else {
          // a fresh block is written whole: only the partial first/last block is copied
          // into a zero-filled block; the aligned middle goes straight from buf
          let a = ps
          if (xs > ps || pe - ps === BS) {
            const blk = Buffer.alloc(BS)
            buf.copy(blk, xs - ps, xs - offset, Math.min(ps + BS, xe) - offset)
            io.push([vol, blk, ps + dev])
            a = ps + BS
          }
          if (a < pe) {
            const midEnd = xe < pe ? pe - BS : pe
            if (midEnd > a) io.push([vol, buf.subarray(a - offset, midEnd - offset), a + dev])
            if (midEnd < pe) {
              const blk = Buffer.alloc(BS)
              buf.copy(blk, 0, midEnd - offset, xe - offset)
              io.push([vol, blk, midEnd + dev])
            }
          }
        }
        fb += r.len
      }
    }
    const newSize = Math.max(oldSize, end)
    n.size = newSize
    n.mtime = n.ctime = Date.now()
    n.stamp = this.stamp()
    if (allocs.length || newSize !== oldSize) { this.dirtyAttrs.add(ino); this.armTimer() } else this.lazyAttrs.add(ino)
    const p = allocs.length || pb0 < b0 ? this.addPending(n, pb0, b1, allocs, replaced) : null
    n.inflight++; this.inflight++
    let ok = false
    try {
      if (io.length === 1) await this.vols[io[0][0]].write(io[0][1], io[0][2])
      else await Promise.all(io.map(([v, b, o]) => this.vols[v].write(b, o)))
      ok = true
    } finally {
      for (const [v] of io) this.dirtyVols.add(v)
      this.settle(n, allocs, replaced, ok)
      this.endIo(n, p)
    }
    return len
  }

  private sharedBlock(n: Inode, fb: number): boolean {
    const m = n.ext.lookup(fb)
    return !!m && this.refs[m.vol].anyShared(m.pb, 1)
  }

  /**
   * End of an I/O that mapped `allocs` in place of `replaced`: on success log the new
   * mapping and drop the references the old one held; on failure nothing was logged or
   * made durable, so the blocks go straight back and the old mapping returns.
   */
  private settle(n: Inode, allocs: Extent[], replaced: Extent[], ok: boolean) {
    if (!ok) {
      for (const a of allocs) { n.ext.punch(a.fb, a.fb + a.len); this.free[a.vol].release(a.pb, a.len) }
      for (const r of replaced) n.ext.insert(r.fb, r.vol, r.pb, r.len)
      return
    }
    if (!allocs.length) return
    const e: number[] = []
    for (const a of allocs) e.push(a.fb, a.vol, a.pb, a.len)
    this.log({ o: 'ex', i: n.ino, e, st: n.stamp })
    this.unref(replaced)
  }

  /**
   * Give file `ino` private copies of the shared blocks in [b0, b1): copy-on-write ahead
   * of a write that changes a shared block in part, and the step of flatten. Shared
   * blocks are never written in place, so reading them while remapping is safe; the
   * range is pending meanwhile, so the file's own reads and writes there wait.
   * Returns the number of blocks copied.
   */
  async unshare(ino: number, b0: number, b1: number): Promise<number> {
    let n = this.fileNode(ino)
    for (;;) {
      this.live()
      while (n.gate) { await n.gate; this.live(); n = this.fileNode(ino) }
      const p = this.pendingOver(n, b0, b1)
      if (!p) break
      await p
      n = this.fileNode(ino)
    }
    if (n.snapOf) throw err('EROFS', 'a snapshot is read-only')
    const shared: Extent[] = []
    for (const sg of n.ext.segments(b0, b1)) {
      if (sg.pb < 0 || !this.refs[sg.vol].anyShared(sg.pb, sg.len)) continue
      for (const pc of this.refs[sg.vol].pieces(sg.pb, sg.len)) {
        if (pc.n > 1) shared.push({ fb: sg.fb + pc.start - sg.pb, vol: sg.vol, pb: pc.start, len: pc.len })
      }
    }
    if (!shared.length) return 0
    const vol = n.vol
    const count = shared.reduce((a, x) => a + x.len, 0)
    if (count > this.free[vol].free) throw this.noSpace(ino, vol, count)
    const allocs: Extent[] = [], replaced: Extent[] = []
    const io: { from: Extent; to: Extent }[] = []
    for (const s of shared) {
      replaced.push(...n.ext.punch(s.fb, s.fb + s.len))
      const prev = n.ext.lookup(s.fb - 1)
      let fb = s.fb
      for (const r of this.free[vol].alloc(s.len, prev && prev.vol === vol ? prev.pb + 1 : -1)!) {
        const to = { fb, vol, pb: r.start, len: r.len }
        n.ext.insert(fb, vol, r.start, r.len)
        allocs.push(to)
        io.push({ from: { fb, vol: s.vol, pb: s.pb + (fb - s.fb), len: r.len }, to })
        fb += r.len
      }
    }
    n.stamp = this.stamp()
    const p = this.addPending(n, b0, b1, allocs, replaced)
    n.inflight++; this.inflight++
    let ok = false
    try {
      for (const { from, to } of io) {
        const b = Buffer.allocUnsafe(from.len * BS)
        await this.vols[from.vol].read(b, from.pb * BS)
        await this.vols[to.vol].write(b, to.pb * BS)
        this.dirtyVols.add(to.vol)
      }
      ok = true
    } finally {
      this.settle(n, allocs, replaced, ok)
      this.endIo(n, p)
    }
    return count
  }

  async fsync(ino: number): Promise<void> {
    this.live()
    if (!this.inodes.has(ino)) throw err('ENOENT', `no inode ${ino}`)
    await this.commit()
  }

  async sync(): Promise<void> {
    this.live()
    await this.commit()
  }

  statfs(): StatFs {
    this.live()
    let blocks = 0, bfree = 0
    for (const f of this.free) { blocks += f.hi - f.lo; bfree += f.free }
    const files = Math.floor(this.sb.ckptLen * 0.8 / 160)
    return { bsize: BS, blocks, bfree, bavail: bfree, files, ffree: Math.max(0, files - this.inodes.size), namemax: NAME_MAX }
  }

  /** Journal activity since mount (commits, records, wraps, checkpoints, data flushes, metadata bytes written). */
  journalStats() {
    return { ...this.counters, journalBytes: this.sb.journalLen, used: (this.head - this.tail + this.sb.journalLen) % this.sb.journalLen }
  }

  /** Names and sizes of the volumes, index = placement number for create(); a removed one keeps its slot. */
  volumes(): { name: string; size: number; removed?: true }[] {
    return this.sb.volumes.map((v) => ({ ...v }))
  }

  /** Names of the volumes the fs spans now, in fs order. */
  volumeNames(): string[] {
    return this.sb.volumes.filter((v) => !v.removed).map((v) => v.name)
  }

  /** Placement number of a volume of the fs by name. */
  volumeIndex(name: string): number {
    const i = this.sb.volumes.findIndex((v) => v.name === name && !v.removed)
    if (i < 0) throw err('ENOENT', `volume ${name} is not part of the file system (it spans ${this.volumeNames().join(', ')})`)
    return i
  }

  openFile(path: string): BlockDev {
    this.live()
    return new FsFile(this, this.regular(path).ino)
  }

  // ---------------------------------------------------------------- snapshots and clones

  /**
   * Snapshot a file: one journal op, whatever the file's size (the snapshot shares
   * every block; the first later write to a shared block copies it). The file's I/O in
   * flight drains first, so the snapshot holds every write acknowledged before the call
   * and none begun after; it is durable when this resolves.
   */
  async snapshot(path: string, name: string): Promise<SnapshotInfo> {
    checkName(name)
    for (;;) {
      this.live()
      const n = this.regular(path)
      if (n.snaps?.has(name)) throw err('EEXIST', `snapshot ${name} of ${path} already exists`)
      if (this.metaNearFull(n.ext.ex.length * 30 + 400)) { await this.ensureMeta(n.ext.ex.length * 30 + 400); continue }
      if (n.busy) { await this.drain(n); continue }
      this.exec({ o: 'sn', i: n.ino, s: this.nextIno, n: name, z: n.size, t: Date.now(), st: this.stamp() })
      break
    }
    await this.commit()
    return this.snapshots(path).find((x) => x.name === name)!
  }

  snapshots(path: string): SnapshotInfo[] {
    this.live()
    const n = this.regular(path)
    return [...n.snaps ?? []].map(([name, i]) => {
      const s = this.inodes.get(i)!
      let unique = 0
      for (const e of s.ext.ex) for (const pc of this.refs[e.vol].pieces(e.pb, e.len)) if (pc.n === 1) unique += pc.len
      return { name, ino: i, size: s.size, created: s.ctime, stamp: s.stamp, uniqueBytes: unique * BS }
    }).sort((a, b) => a.stamp - b.stamp)
  }

  /** Inode number of snapshot `name` of a file. */
  snapshotIno(path: string, name: string): number {
    this.live()
    const i = this.regular(path).snaps?.get(name)
    if (i === undefined) throw err('ENOENT', `no snapshot ${name} of ${path}`)
    return i
  }

  /** Delete a snapshot; the blocks no other file, snapshot or clone holds are freed. */
  async deleteSnapshot(path: string, name: string): Promise<void> {
    for (;;) {
      const i = this.snapshotIno(path, name)
      const s = this.inodes.get(i)!
      if (s.busy) { await this.drain(s); continue }
      this.exec({ o: 'sd', s: i, t: Date.now() })
      break
    }
    await this.commit()
  }

  /** The file's contents become its snapshot's (size too); the snapshot stays. */
  async revert(path: string, name: string): Promise<void> {
    for (;;) {
      const i = this.snapshotIno(path, name)
      const n = this.regular(path)
      if (n.busy) { await this.drain(n); continue }
      this.exec({ o: 'rv', i: n.ino, s: i, t: Date.now(), st: this.stamp() })
      this.dirtyAttrs.add(n.ino)
      break
    }
    await this.commit()
  }

  /** A new writable file sharing every block of a snapshot; no data is copied. */
  async clone(path: string, name: string, newPath: string, opts: { mode?: number; uid?: number; gid?: number } = {}): Promise<number> {
    const mode = opts.mode ?? 0o644, uid = opts.uid ?? 0, gid = opts.gid ?? 0
    checkMode(mode); checkId(uid, 'uid'); checkId(gid, 'gid')
    for (;;) {
      const si = this.snapshotIno(path, name)
      const s = this.inodes.get(si)!
      const { dir, name: leaf } = this.resolveParent(newPath)
      if (dir.entries!.has(leaf)) throw err('EEXIST', `already exists: ${newPath}`)
      if (this.metaNearFull(s.ext.ex.length * 30 + 400)) { await this.ensureMeta(s.ext.ex.length * 30 + 400); continue }
      const ino = this.nextIno
      this.exec({ o: 'cl', s: si, p: dir.ino, n: leaf, i: ino, m: S_IFREG | (mode & 0o7777), u: uid, g: gid, t: Date.now(), v: s.vol, st: this.stamp() })
      await this.commit()
      return ino
    }
  }

  /** Blocks of a file (or snapshot) that another file, snapshot or clone also holds. */
  sharedBlocks(ino: number): number {
    this.live()
    let shared = 0
    for (const e of this.node(ino).ext.ex) {
      if (!this.refs[e.vol].anyShared(e.pb, e.len)) continue
      for (const pc of this.refs[e.vol].pieces(e.pb, e.len)) if (pc.n > 1) shared += pc.len
    }
    return shared
  }

  /** Size in blocks of the file's block address space ([0, blocks) covers every extent). */
  blockSpan(ino: number): number {
    const ex = this.node(ino).ext.ex
    return ex.length ? ex[ex.length - 1].fb + ex[ex.length - 1].len : 0
  }

  /** Allocated extents of a file or snapshot, split where the sharing changes. */
  extentMap(ino: number): MapEntry[] {
    this.live()
    const out: MapEntry[] = []
    for (const e of this.node(ino).ext.ex) {
      for (const pc of this.refs[e.vol].pieces(e.pb, e.len)) {
        out.push({ offset: (e.fb + pc.start - e.pb) * BS, length: pc.len * BS, volume: this.sb.volumes[e.vol].name,
          physical: pc.start * BS, shared: pc.n > 1, refs: pc.n })
      }
    }
    return out
  }

  /** Size, mode, stamp of any inode, snapshots included. */
  statIno(ino: number): Stat & { stamp: number } {
    this.live()
    const n = this.node(ino)
    return { ...this.stat(n), stamp: n.stamp }
  }

  /**
   * Byte-compare two files or snapshots; ranges mapped to the same blocks (or both
   * holes) are equal without reading. Returns the first differing offset, or -1.
   */
  async compare(a: number, b: number): Promise<number> {
    const na = this.node(a), nb = this.node(b)
    const size = Math.max(na.size, nb.size)
    const CH = 256
    const ba = Buffer.alloc(CH * BS), bb = Buffer.alloc(CH * BS)
    for (let c = 0; c * BS < size; c += CH) {
      const sa = na.ext.segments(c, c + CH), sb = nb.ext.segments(c, c + CH)
      const same = na.size === nb.size && sa.length === sb.length && sa.every((x, k) => x.vol === sb[k].vol && x.pb === sb[k].pb && x.len === sb[k].len)
      if (same) continue
      const len = Math.min(CH * BS, size - c * BS)
      ba.fill(0); bb.fill(0)
      await this.read(a, ba.subarray(0, len), c * BS)
      await this.read(b, bb.subarray(0, len), c * BS)
      if (!ba.subarray(0, len).equals(bb.subarray(0, len))) {
        for (let k = 0; k < len; k++) if (ba[k] !== bb[k]) return c * BS + k
      }
    }
    return na.size === nb.size ? -1 : Math.min(na.size, nb.size)
  }

  /** The newest stamp handed out (generation << 32 | counter). */
  lastStamp(): number {
    return this.gen * STAMP_GEN + this.ctr
  }

  openSnapshot(path: string, name: string): BlockDev {
    return new SnapFile(this, this.snapshotIno(path, name))
  }

  private regular(path: string): Inode {
    const n = this.resolve(path)
    if (n.isDir) throw err('EISDIR', `is a directory: ${path}`)
    if (!n.isReg) throw err('EINVAL', `not a regular file: ${path}`)
    return n
  }

  private node(ino: number): Inode {
    const n = this.inodes.get(ino)
    if (!n) throw err('ENOENT', `no inode ${ino}`)
    return n
  }

  /** @internal for FsFile */
  sizeOf(ino: number): number {
    return this.inodes.get(ino)?.size ?? 0
  }

  // ---------------------------------------------------------------- fsck

  async check(): Promise<{ ok: boolean; errors: string[]; leakedBytes: number }> {
    const errors: string[] = []
    let leaked = 0
    const root = this.inodes.get(ROOT)
    if (!root || !root.isDir) errors.push('no root directory')
    // extents
    for (const n of this.inodes.values()) {
      if (!Number.isSafeInteger(n.size) || n.size < 0 || n.size > MAX_FILE_SIZE) errors.push(`inode ${n.ino}: bad size ${n.size}`)
      let last = -1, total = 0
      for (const e of n.ext.ex) {
        if (e.fb < last) errors.push(`inode ${n.ino}: extents overlap or unsorted at file block ${e.fb}`)
        if (e.len <= 0) errors.push(`inode ${n.ino}: empty extent`)
        last = e.fb + e.len
        total += e.len
      }
      if (total !== n.ext.total) errors.push(`inode ${n.ino}: block count ${n.ext.total} != extents ${total}`)
      const pendingBlocks = n.pending.reduce((s, p) => Math.max(s, p.b1), 0)
      if (last > Math.max(Math.ceil(n.size / BS), pendingBlocks)) errors.push(`inode ${n.ino}: extent past EOF (block ${last}, size ${n.size})`)
      if (n.isDir && n.ext.total) errors.push(`directory ${n.ino} has data extents`)
    }
    // ownership, the free map and the reference counts (copy-on-write I/O in flight
    // still holds a reference to what it replaced)
    const claims: Extent[] = []
    for (const n of this.inodes.values()) for (const p of n.pending) claims.push(...p.replaced)
    const expected = this.buildFree(errors, claims)
    for (let v = 0; v < this.vols.length; v++) {
      const actual = coalesce([...this.free[v].fr, ...this.pendingFree.filter((f) => f.vol === v)])
      const exp = expected.free[v].fr
      if (JSON.stringify(expected.refs[v].r) !== JSON.stringify(this.refs[v].r)) {
        errors.push(`volume ${v}: reference counts differ from the extent maps (${this.refs[v].r.length} shared runs, ${expected.refs[v].r.length} expected)`)
      }
      for (const r of subtractRuns(actual, exp)) errors.push(`volume ${v}: blocks ${r.start}+${r.len} both free and allocated`)
      for (const r of subtractRuns(exp, actual)) leaked += r.len * BS
      let sum = 0
      for (const r of this.free[v].fr) sum += r.len
      if (sum !== this.free[v].free) errors.push(`volume ${v}: free counter ${this.free[v].free} != map ${sum}`)
    }
    // directory tree
    const refs = new Map<number, number>()
    const seenDirs = new Set<number>()
    const stack = root ? [root] : []
    if (root) seenDirs.add(ROOT)
    while (stack.length) {
      const d = stack.pop()!
      let subdirs = 0
      for (const [name, i] of d.entries!) {
        try { checkName(name) } catch { errors.push(`directory ${d.ino}: bad name ${JSON.stringify(name)}`) }
        const c = this.inodes.get(i)
        if (!c) { errors.push(`directory ${d.ino}: entry ${name} -> missing inode ${i}`); continue }
        refs.set(i, (refs.get(i) ?? 0) + 1)
        if (c.isDir) {
          subdirs++
          if (seenDirs.has(i)) { errors.push(`directory ${i} reachable twice`); continue }
          seenDirs.add(i)
          if (c.parent !== d.ino) errors.push(`directory ${i}: parent ${c.parent} but found in ${d.ino}`)
          stack.push(c)
        } else if (!NODE_TYPES.has(c.mode & S_IFMT) && (c.mode & S_IFMT) !== S_IFLNK) errors.push(`inode ${i}: unknown type ${c.mode.toString(8)}`)
      }
      if (d.nlink !== 2 + subdirs) errors.push(`directory ${d.ino}: nlink ${d.nlink} != ${2 + subdirs}`)
    }
    for (const n of this.inodes.values()) {
      if (n.ino === ROOT) continue
      if (n.snapOf) {
        if (this.inodes.get(n.snapOf)?.snaps?.get(n.snapName) !== n.ino) errors.push(`snapshot ${n.ino} (${n.snapName}): its file ${n.snapOf} does not list it`)
        continue
      }
      for (const [name, i] of n.snaps ?? []) if (this.inodes.get(i)?.snapOf !== n.ino) errors.push(`inode ${n.ino}: snapshot ${name} -> ${i} is not its snapshot`)
      const r = refs.get(n.ino) ?? 0
      if (!n.isReg && !n.isDir && n.ext.total) errors.push(`inode ${n.ino}: a ${(n.mode & S_IFMT).toString(8)} node has data extents`)
      if (n.isOrphan) {
        if (r) errors.push(`inode ${n.ino}: nlink 0 but ${r} entries`)
        else if (!this.opened.has(n.ino)) errors.push(`inode ${n.ino}: orphan nobody holds open`)
        continue
      }
      if (r === 0) errors.push(`inode ${n.ino}: not reachable from the root`)
      else if (!n.isDir && r !== n.nlink) errors.push(`inode ${n.ino}: nlink ${n.nlink} but ${r} entries`)
      if (n.ino >= this.nextIno) errors.push(`inode ${n.ino} >= next inode number ${this.nextIno}`)
    }
    return { ok: errors.length === 0, errors, leakedBytes: leaked }
  }

  // ---------------------------------------------------------------- volumes online

  /** One change of the volume list at a time: each writes a superblock derived from the last. */
  private volChange: Promise<unknown> = Promise.resolve()

  private serialVolumes<T>(f: () => Promise<T>): Promise<T> {
    const run = this.volChange.then(f, f)
    this.volChange = run.catch(() => undefined)
    return run
  }

  /** The next superblock: same layout, one more seq. */
  private nextSuperblock(volumes: Superblock['volumes']): Superblock {
    const sb: Superblock = { ...this.sb, version: SB_VERSION, seq: (this.sb.seq ?? 0) + 1, volumes }
    if (!superblockFits(sb)) throw err('ENOSPC', 'the superblock has no room for another volume')
    return sb
  }

  /**
   * Add a volume to the mounted fs: its label first, then a superblock listing it. A
   * crash between leaves the old fs (the label alone makes nothing part of it, and a
   * label of this fs on a volume it does not list may be taken again); after, the new.
   */
  addVolume(dev: BlockDev, name: string): Promise<{ name: string; size: number; index: number }> {
    return this.serialVolumes(async () => {
      this.live()
      if (typeof name !== 'string' || !name) throw err('EINVAL', 'volume name expected')
      if (this.volumeNames().includes(name)) throw err('EEXIST', `volume ${name} is already part of the file system`)
      if (dev.size < 2 * BS) throw err('ENOSPC', `volume ${name} too small (${dev.size} bytes)`)
      const p = await probeVolume(dev)
      if (!(p.kind === 'blank' || (p.kind === 'member' && p.uuid === this.sb.uuid))) await refuseFormatted(dev, name)
      const index = this.sb.volumes.length
      const size = Math.floor(dev.size / BS) * BS
      const sb = this.nextSuperblock([...this.sb.volumes, { size, name }])
      await writeLabel(dev, sb.uuid, index)
      await dev.flush()
      await writeSuperblock(this.vols[0], sb)
      this.vols.push(dev)
      this.free.push(FreeMap.fromAllocated(1, size / BS, [], []))
      this.refs.push(new RefMap())
      this.sb = sb
      this.events.publish('fs.volume-added', { volume: name, size, index })
      return { name, size, index }
    })
  }

  /** A volume files can be placed on: in the fs and not removed. */
  private placeable(v: number, what: string): void {
    if (!Number.isSafeInteger(v) || v < 0 || v >= this.vols.length || this.sb.volumes[v].removed) throw err('EINVAL', `${what}: no volume ${v} in the fs`)
    if (this.draining.has(v)) throw err('EBUSY', `${what}: volume ${this.sb.volumes[v].name} is being removed from the fs`)
  }

  /** Volumes being emptied by remove-volume: nothing new is placed on them. */
  private draining = new Set<number>()

  /**
   * Start removing a volume: from now on nothing is placed on it, and every file and
   * snapshot placed there is placed on `to` instead. The caller then relocates what
   * `inodesOn()` lists and calls finishRemove(). Volume 0 holds the metadata: never.
   */
  beginRemove(name: string, to: number): number {
    this.live()
    const v = this.volumeIndex(name)
    if (v === 0) throw err('EBUSY', `volume ${name} holds the fs metadata and cannot be removed`)
    if (this.draining.has(v)) throw err('EBUSY', `volume ${name} is already being removed`)
    this.placeable(to, 'remove-volume')
    if (to === v) throw err('EINVAL', 'remove-volume: the target is the volume being removed')
    this.draining.add(v)
    for (const n of this.inodes.values()) if (!n.isDir && n.vol === v) this.exec({ o: 'pv', i: n.ino, v: to })
    return v
  }

  /** Files and snapshots with blocks on volume v. */
  inodesOn(v: number): number[] {
    const out: number[] = []
    for (const n of this.inodes.values()) if (n.ext.ex.some((e) => e.vol === v)) out.push(n.ino)
    return out
  }

  /** A remove-volume that stopped (cancelled, failed): the volume takes new files again. */
  cancelRemove(v: number): void {
    this.draining.delete(v)
  }

  /**
   * Drop an emptied volume: the relocations are made durable first, then a superblock
   * marks its slot removed (its number is never reused, so no extent changes meaning),
   * then its label is cleared so the pool can reuse or delete it. A crash before the
   * superblock leaves it in the fs (empty); after, out of it, maybe with a stale label
   * that add-volume accepts again.
   */
  finishRemove(v: number): Promise<{ name: string }> {
    return this.serialVolumes(async () => {
      this.live()
      if (!this.draining.has(v)) throw err('EINVAL', `volume ${v} is not being removed`)
      const left = this.inodesOn(v)
      if (left.length) throw err('EBUSY', `volume ${this.sb.volumes[v].name} still holds blocks of ${left.length} file(s)`)
      await this.commit()
      const name = this.sb.volumes[v].name
      const sb = this.nextSuperblock(this.sb.volumes.map((x, i) => (i === v ? { ...x, removed: true as const } : x)))
      await writeSuperblock(this.vols[0], sb)
      const dev = this.vols[v]
      this.sb = sb
      this.vols[v] = REMOVED
      this.free[v] = FreeMap.fromAllocated(1, 1, [], [])
      this.refs[v] = new RefMap()
      this.draining.delete(v)
      await clearLabel(dev)
      await dev.flush()
      return { name }
    })
  }

  /** The volume placement policy gives a new file at `path`: the nearest directory's rules that say something (src/fs/placement.ts). */
  placementFor(path: string): number {
    this.live()
    const { dir, name } = this.resolveParent(path)
    const live = this.volumeNames()
    for (let d = dir; ; d = this.inodes.get(d.parent)!) {
      const v = pick(parseRules(d.xattr.get(PLACEMENT_XATTR)), name, (x) => live.includes(x))
      if (v !== null) return this.volumeIndex(v)
      if (d.ino === ROOT) return 0
    }
  }

  /** New blocks of file `ino` go to volume `vol` from now on (fs move sets it before relocating). */
  setPlacement(ino: number, vol: number): void {
    this.live()
    this.placeable(vol, 'placement')
    const n = this.fileNode(ino)
    if (n.vol !== vol) this.exec({ o: 'pv', i: ino, v: vol })
  }

  /** The volume new blocks of file `ino` go to (its placement). */
  placementVolume(ino: number): string {
    this.live()
    return this.sb.volumes[this.fileNode(ino).vol].name
  }

  /** Per volume the fs spans: data bytes and free bytes (the HSM's tier capacity and use). */
  volumeSpace(): { name: string; size: number; free: number }[] {
    this.live()
    return this.sb.volumes.flatMap((v, i) => v.removed ? [] : [{ name: v.name, size: (this.free[i].hi - this.free[i].lo) * BS, free: this.free[i].free * BS }])
  }

  /** Per volume, the bytes a file's (or snapshot's) extents occupy there. */
  placementOf(ino: number): Record<string, number> {
    this.live()
    const out: Record<string, number> = {}
    for (const e of this.node(ino).ext.ex) {
      const name = this.sb.volumes[e.vol].name
      out[name] = (out[name] ?? 0) + e.len * BS
    }
    return out
  }

  /**
   * Every map that holds physical run r, as pieces contiguous in each of them: the
   * file's own piece, and for a shared run the snapshots and clones that map it too
   * (a scan of all maps, paid only for shared blocks).
   */
  private holdersOf(n: Inode, r: Extent): { vol: number; pb: number; len: number; h: [Inode, number][] }[] {
    if (!this.refs[r.vol].anyShared(r.pb, r.len)) return [{ vol: r.vol, pb: r.pb, len: r.len, h: [[n, r.fb]] }]
    const end = r.pb + r.len
    const hits: { m: Inode; fb: number; lo: number; hi: number }[] = []
    const cuts = new Set<number>([r.pb, end])
    for (const m of this.inodes.values()) {
      for (const e of m.ext.ex) {
        if (e.vol !== r.vol || e.pb >= end || e.pb + e.len <= r.pb) continue
        const lo = Math.max(e.pb, r.pb), hi = Math.min(e.pb + e.len, end)
        hits.push({ m, fb: e.fb + (lo - e.pb), lo, hi })
        cuts.add(lo); cuts.add(hi)
      }
    }
    const at = [...cuts].sort((a, b) => a - b)
    const out: { vol: number; pb: number; len: number; h: [Inode, number][] }[] = []
    for (let k = 0; k + 1 < at.length; k++) {
      const lo = at[k], hi = at[k + 1]
      out.push({ vol: r.vol, pb: lo, len: hi - lo, h: hits.filter((x) => x.lo <= lo && hi <= x.hi).map((x) => [x.m, x.fb + (lo - x.lo)]) })
    }
    return out
  }

  /**
   * Move the blocks file `ino` maps in [b0, b1) onto volume `to`, while the file is in
   * use: the HSM's mechanism and fs move's step. Each run is copied, then one `rl` op
   * remaps it in every map that holds it (snapshots and clones keep sharing it). The
   * file's I/O drains first and the moved ranges of every holder are pending during the
   * copy, so reads and writes there wait for the step (one chunk) and nothing is lost;
   * the old blocks are freed after the commit that carries the remap, and the remap is
   * journaled only after the copies (data=ordered). Returns the blocks moved.
   */
  async relocate(ino: number, b0: number, b1: number, to: number): Promise<number> {
    this.placeable(to, 'relocate')
    if (!Number.isSafeInteger(b0) || !Number.isSafeInteger(b1) || b0 < 0 || b1 < b0) throw err('EINVAL', `bad block range ${b0}..${b1}`)
    let pieces: { vol: number; pb: number; len: number; h: [Inode, number][] }[]
    for (;;) {
      this.live()
      const n = this.fileNode(ino)
      const runs = n.ext.segments(b0, b1).filter((sg) => sg.pb >= 0 && sg.vol !== to)
      if (!runs.length) return 0
      pieces = runs.flatMap((sg) => this.holdersOf(n, sg))
      const busy = pieces.flatMap((pc) => pc.h.map(([m]) => m)).find((m) => m.busy || m.gate)
      if (!busy) break
      if (busy.gate && !busy.busy) await busy.gate
      else await this.drain(busy)
    }
    const count = pieces.reduce((a, pc) => a + pc.len, 0)
    if (count > this.free[to].free) throw err('ENOSPC', `no space left on volume ${this.sb.volumes[to].name} to move ${count * BS} bytes`)
    // synchronous from here to the pending marks: no I/O can slip in between
    const moves: { vol: number; pb: number; len: number; q: number; h: [Inode, number][] }[] = []
    let goal = -1
    for (const pc of pieces) {
      let off = 0
      for (const got of this.free[to].alloc(pc.len, goal)!) {
        moves.push({ vol: pc.vol, pb: pc.pb + off, len: got.len, q: got.start, h: pc.h.map(([m, fb]) => [m, fb + off]) })
        off += got.len
        goal = got.start + got.len
      }
    }
    const marks: [Inode, Pending][] = []
    for (const mv of moves) for (const [m, fb] of mv.h) {
      marks.push([m, this.addPending(m, fb, fb + mv.len, [], [])])
      m.inflight++; this.inflight++
    }
    let ok = false
    try {
      for (const mv of moves) {
        const b = Buffer.allocUnsafe(mv.len * BS)
        await this.vols[mv.vol].read(b, mv.pb * BS)
        await this.vols[to].write(b, mv.q * BS)
      }
      this.dirtyVols.add(to)
      ok = true
    } finally {
      if (ok) {
        for (const mv of moves) {
          this.exec({ o: 'rl', v: mv.vol, p: mv.pb, n: mv.len, w: to, q: mv.q, h: mv.h.flatMap(([m, fb]) => [m.ino, fb]) })
        }
      } else {
        for (const mv of moves) this.free[to].release(mv.q, mv.len)
      }
      for (const [m, p] of marks) this.endIo(m, p)
    }
    return count
  }

  // ---------------------------------------------------------------- close

  async close(): Promise<void> {
    if (this.closed) return
    while (this.inflight > 0) await new Promise<void>((r) => this.idleWaiters.push(r))
    if (this.timer) { clearTimeout(this.timer); this.timer = null }
    if (!this.broken) {
      this.wantCkpt = true
      await this.commit()
      if (this.commitRunning || this.commitNext) await this.commit()
    }
    this.closed = true
  }
}

/** A regular file as a BlockDev (size = the file's size; writes may not extend it). */
class FsFile implements BlockDev {
  constructor(private readonly fs: FileSystem, readonly ino: number) {}
  get size() { return this.fs.sizeOf(this.ino) }
  read(buf: Buffer, offset: number) { return this.fs.read(this.ino, buf, offset) }
  async write(buf: Buffer, offset: number) {
    checkRange(this, offset, buf.length)
    await this.fs.write(this.ino, buf, offset)
  }
  flush() { return this.fs.fsync(this.ino) }
  discard(offset: number, length: number) { return this.fs.punchHole(this.ino, offset, length) }
  async close() { /* nothing held */ }
}

/** A snapshot as a read-only BlockDev. */
class SnapFile implements BlockDev {
  constructor(private readonly fs: FileSystem, readonly ino: number) {}
  get size() { return this.fs.sizeOf(this.ino) }
  read(buf: Buffer, offset: number) { return this.fs.read(this.ino, buf, offset) }
  async write(): Promise<void> { throw err('EROFS', 'a snapshot is read-only') }
  async flush() { /* nothing to write */ }
  async close() { /* nothing held */ }
}
