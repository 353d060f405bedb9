// The fs's shared state and the mechanism every module uses: the inode table, free
// and reference maps, the queue of ops for the next commit, lookups by path and
// inode, the per-inode I/O gates (drain, pending ranges), and exec(): apply an op
// (ops.ts), queue it, and turn what it unmapped into frees after the commit. The
// commit itself is journal.ts; this class only serializes commits (one running, one
// queued behind it).
import { BlockDev } from '../block/blockdev'
import type { BtStore } from './btree/store'
import { EventSink, NULL_SINK } from '../control/events'
import { Extent, ExtentMap, FreeMap, RefMap, RunBounds } from './extents'
import {
  ATIME_MAX_AGE_MS, FileRef, Inode, LAZY_COMMIT_MS, MAX_FILE_SIZE, Pending, ROOT, STAMP_GEN, Stat, err, parsePath,
} from './inode'
import { doCommit } from './journal'
import { BS, Superblock, isArchive } from './layout'
import { Op, apply } from './ops'
import { heldBlocks, type SegKey, type Segment } from './state'

/**
 * An archive tier as a place extents can live: an append-only address space of 4 KiB
 * blocks outside the pool. A write is durable when it resolves (the fs points at it only
 * after); `alloc` hands out addresses never handed out before.
 */
export interface ArchiveLocation extends BlockDev {
  readonly name: string
  alloc(blocks: number): number
}

export class FsCore {
  inodes = new Map<number, Inode>()
  nextIno = ROOT + 1
  free: FreeMap[] = []
  /**
   * Per volume, how many extent-map chunks hold each block, each chunk array counted
   * once however many maps share it (a snapshot or clone shares all of its file's): so
   * a snapshot costs a count per chunk, not per extent. A block is held by one map only
   * when its count is 1 and no other map shares the chunk it is in (data.ts sharedPieces).
   */
  refs: RefMap[] = []
  /** Whether refs is kept up to date: not while mount replays the journal (it rebuilds them after). */
  counting = false
  /** Generation of the stamps: bumped (and checkpointed) at every mount, so stamps never repeat. */
  gen = 0
  ctr = 0
  genSeen = 0
  ops: Op[] = []
  opsBytes = 0
  dirtyAttrs = new Set<number>()
  lazyAttrs = new Set<number>()
  pendingFree: { vol: number; start: number; len: number }[] = []
  dirtyVols = new Set<number>()
  /** Open handles per inode (hold/release): what keeps an unlinked file as an orphan. */
  opened = new Map<number, number>()
  // journal state
  seq = 0
  nonce = 0
  head = 0
  tail = 0
  ckSlot = 0
  /** What mount replayed from the journal: non-zero after an unclean stop (crash recovery, for the log). */
  readonly replayed = { records: 0, ops: 0, bytes: 0 }
  events: EventSink = NULL_SINK
  /** fs.enospc events are held to one per NOSPACE_EVENT_MS; refusals in between are counted into the next. */
  noSpaceAt = 0
  noSpaceHeld = 0
  lastCkptLen = 0
  sinceCkpt = 0
  wantCkpt = false
  broken: Error | null = null
  closed = false
  inflight = 0
  idleWaiters: (() => void)[] = []
  commitRunning: Promise<void> | null = null
  commitNext: Promise<void> | null = null
  timer: NodeJS.Timeout | null = null
  /**
   * stateInodes: inode images the checkpoints serialized (those of segments written
   * again); stateVisited: live inodes their plans looked at (planState); stateBuckets:
   * directories' buckets of names they serialized; stateNames: directory entries their
   * plans copied (into images, or into the buckets to write).
   */
  counters = { commits: 0, records: 0, wraps: 0, checkpoints: 0, flushes: 0, metaBytes: 0, stateInodes: 0, stateVisited: 0, stateBuckets: 0, stateNames: 0 }
  /** One change of the volume list at a time: each writes a superblock derived from the last. */
  volChange: Promise<unknown> = Promise.resolve()
  /** Volumes being emptied by remove-volume: nothing new is placed on them. */
  draining = new Set<number>()
  /** Archive tiers attached by the HSM, by location number (ARCHIVE_BASE + slot). */
  archives = new Map<number, ArchiveLocation>()
  /** Told of every read and write of a live file's blocks [b0, b1) (the HSM's region heat). */
  onAccess: ((ino: number, b0: number, b1: number) => void) | null = null
  /** The extent trees' store (trees.ts); null only while a mount converts an old fs. */
  store: BtStore | null = null
  /** Inodes deleted since the last checkpoint: their trees go at the next one. */
  treeDrops: Inode[] = []
  /** Maps changed or copied since the last checkpoint (markDirty, rebase): what it applies to the trees, found without a walk over every inode. */
  treeChanged = new Set<Inode>()
  /** Changes recorded for the trees since the last checkpoint, and those the running one applies. */
  treeWork = 0
  treeWorkInFlight = 0
  /** Store blocks freed by the last store commit: free once the checkpoint naming it is durable. */
  metaFreed: number[] = []
  /** Volume 0 blocks the store uses (nodes, superblocks), freed ones until they are free. */
  storeBlocks = 0
  private segs: ReadonlyMap<SegKey, Segment> = new Map()
  private held = 0
  /** The durable checkpoint's state, by segment (state.ts). */
  get stateSegs(): ReadonlyMap<SegKey, Segment> { return this.segs }
  set stateSegs(segs: ReadonlyMap<SegKey, Segment>) {
    this.segs = segs
    this.held = heldBlocks(segs)
    this.stateTaken = 0
  }
  /** Volume 0 blocks stateSegs holds: every write asks (metaNearFull, metaReserve), so counted once per state. */
  get stateHeld(): number { return this.held }
  /**
   * Blocks the checkpoint in flight took for its new segments (state.ts take): room kept
   * for the next state, so counted with the held ones until they are (statfs did not move).
   */
  stateTaken = 0
  /**
   * Inodes whose image may differ from the durable state's: every inode an op touches
   * (ops.ts apply), a map that changes (trees.ts), and at commit the inodes of dirtyAttrs
   * and lazyAttrs. The next checkpoint writes the segments that hold them (planState).
   */
  stateChanged = new Set<number>()
  /**
   * Names added, removed or bound anew in each directory since the durable state (ops.ts
   * apply): of a directory whose names lie in buckets, the next checkpoint serializes the
   * buckets that hold them only (planState).
   */
  namesChanged = new Map<number, Set<string>>()
  nameChanged(dir: number, name: string): void {
    const names = this.namesChanged.get(dir)
    if (names) names.add(name); else this.namesChanged.set(dir, new Set([name]))
  }
  /** The next inode number when the durable checkpoint was taken. */
  stateNextIno = ROOT + 1
  /** Checkpoints and fsck's view of the trees, one at a time. */
  private treeLock: Promise<unknown> = Promise.resolve()

  constructor(readonly vols: BlockDev[], public sb: Superblock) {}

  live() {
    if (this.broken) throw err('EIO', `fs unusable after an I/O error: ${this.broken.message}`)
    if (this.closed) throw err('EIO', 'fs is closed')
  }

  /**
   * The inode a path names, or an inode by number: the view knows an open or looked-up
   * file by its number, since an unlinked file held open has no path and a path may by
   * then name another file.
   */
  resolve(path: FileRef): Inode {
    if (typeof path === 'number') return this.node(path)
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

  resolveParent(path: string): { dir: Inode; name: string } {
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

  fileNode(ino: number): Inode {
    const n = this.inodes.get(ino)
    if (!n) throw err('ENOENT', `no inode ${ino}`)
    if (n.isDir) throw err('EISDIR', `inode ${ino} is a directory`)
    if (!n.isReg) throw err('EINVAL', `inode ${ino} is not a regular file`)
    return n
  }

  regular(path: FileRef): Inode {
    const n = this.resolve(path)
    if (n.isDir) throw err('EISDIR', `is a directory: ${path}`)
    if (!n.isReg) throw err('EINVAL', `not a regular file: ${path}`)
    return n
  }

  node(ino: number): Inode {
    const n = this.inodes.get(ino)
    if (!n) throw err('ENOENT', `no inode ${ino}`)
    return n
  }

  stat(n: Inode): Stat {
    return { ino: n.ino, mode: n.mode, uid: n.uid, gid: n.gid, size: n.size, blocks: n.ext.total * (BS / 512),
      nlink: n.nlink, atime: n.atime, mtime: n.mtime, ctime: n.ctime, atimeNs: n.atimeNs, mtimeNs: n.mtimeNs, rdev: n.rdev }
  }

  drain(n: Inode): Promise<void> {
    if (!n.gate) n.gate = new Promise((r) => { n.gateOpen = r })
    return new Promise((r) => n.waiters.push(r))
  }

  wake(n: Inode) {
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

  pendingOver(n: Inode, lo: number, hi: number): Promise<void> | null {
    for (const p of n.pending) if (p.b0 < hi && lo < p.b1) return p.done
    return null
  }

  addPending(n: Inode, b0: number, b1: number, allocs: Extent[], replaced: Extent[]): Pending {
    let resolve!: () => void
    const done = new Promise<void>((r) => { resolve = r })
    const p: Pending = { b0, b1, done, resolve, allocs, replaced }
    n.pending.push(p)
    return p
  }

  endIo(n: Inode, p: Pending | null) {
    n.inflight--
    this.inflight--
    if (p) { n.pending.splice(n.pending.indexOf(p), 1); p.resolve() }
    this.wake(n)
  }

  checkIo(buf: Buffer, offset: number) {
    if (!Buffer.isBuffer(buf)) throw err('EINVAL', 'buffer expected')
    if (!Number.isSafeInteger(offset) || offset < 0) throw err('EINVAL', `bad offset ${offset}`)
    if (offset + buf.length > MAX_FILE_SIZE) throw err('EFBIG', `offset ${offset}+${buf.length} beyond the maximum file size`)
  }

  /** Apply a live op and queue it for the next commit; blocks no map holds any more are freed after that commit. */
  exec(op: Op): void {
    const punched = apply(this, op)
    this.log(op)
    // shared blocks gain their holder before the ones replaced lose theirs: a block in both stays
    if (op.o === 'sr') this.ref(this.inodes.get(op.i)!.ext.segments(op.d, op.d + op.b1 - op.b0).filter((g) => g.pb >= 0))
    this.unref(punched)
    // the new blocks start with one reference (allocated); each further map holding them adds one
    if (op.o === 'rl' && !isArchive(op.w)) for (let k = 2; k < op.h.length; k += 2) this.refs[op.w].adjust(op.q, op.n, 1)
  }

  /** A map copied a chunk it shared with others, to change it: one more chunk holds these blocks. */
  readonly copied = (extents: readonly Extent[]) => { if (this.counting) this.ref(extents) }

  /** A further chunk holds these extents. */
  private ref(extents: readonly Extent[] | ExtentMap) {
    this.byVolume(extents).forEach((runs, v) => this.refs[v].adjustMany(runs, 1))
  }

  /** Archived ranges no map holds are left to the HSM's check, which removes objects nothing points into. */
  unref(extents: Extent[]) {
    this.byVolume(extents).forEach((runs, v) => {
      for (const f of this.refs[v].adjustMany(runs, -1)) this.pendingFree.push({ vol: v, start: f.start, len: f.len })
    })
  }

  /** Pool extents' physical runs by volume (archived ones have no counts here), the empty left out. */
  byVolume(extents: readonly Extent[] | ExtentMap): Map<number, RunBounds> {
    const out = new Map<number, RunBounds>()
    extents.forEach((e) => {
      if (isArchive(e.vol) || e.len <= 0) return
      let l = out.get(e.vol)
      if (!l) out.set(e.vol, l = new RunBounds())
      l.add(e.pb, e.len)
    })
    return out
  }

  stamp(): number {
    if (++this.ctr >= STAMP_GEN) { this.gen++; this.ctr = 1 }
    return this.gen * STAMP_GEN + this.ctr
  }

  log(op: Op) {
    this.ops.push(op)
    this.opsBytes += op.o === 'ex' ? 40 + op.e.length * 12 : op.o === 'xa' ? 80 + (op.v?.length ?? 0) : 140
    this.armTimer()
  }

  armTimer() {
    if (this.timer || this.closed) return
    this.timer = setTimeout(() => {
      this.timer = null
      if (!this.closed && !this.broken) this.commit().catch(() => { /* recorded in this.broken */ })
    }, LAZY_COMMIT_MS)
    this.timer.unref()
  }

  withTrees<T>(f: () => Promise<T>): Promise<T> {
    const run = this.treeLock.then(f, f)
    this.treeLock = run.catch(() => undefined)
    return run
  }

  commit(): Promise<void> {
    if (!this.commitRunning) {
      this.commitRunning = this.withTrees(() => doCommit(this)).finally(() => { this.commitRunning = null })
      return this.commitRunning
    }
    if (!this.commitNext) {
      const noop = () => undefined
      this.commitNext = this.commitRunning.then(noop, noop).then(() => { this.commitNext = null; return this.commit() })
    }
    return this.commitNext
  }

  /** Written lazily, with the next commit that has something else to say (as lazytime). */
  touchAtime(n: Inode) {
    if (n.snapOf) return
    const now = Date.now()
    if (n.atime > n.mtime && n.atime > n.ctime && now - n.atime < ATIME_MAX_AGE_MS) return
    n.atime = now
    this.lazyAttrs.add(n.ino)
  }

  touchAttrs(n: Inode) {
    this.dirtyAttrs.add(n.ino)
    this.opsBytes += 120
    this.armTimer()
  }
}
