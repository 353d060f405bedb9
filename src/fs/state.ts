// The checkpoint's state (inodes, directories, xattrs: each inode one JSON array, the
// tree root of its map among them) on volume 0 blocks, in segments of about
// SEGMENTS.inodes live inodes, cut after each inode whose number hashes to a cut (so a
// segment's bounds move only where an inode is created or unlinked, and inodes left far
// apart by years of creates and unlinks still fill their blocks). A checkpoint writes only the segments whose bytes
// changed since the last one (a sha256 per segment, kept in memory, says which), each
// to fresh blocks from the top of the free space (as tree nodes are), flushed before
// the record that names them all is written into the checkpoint area; the blocks of
// the segments it replaced are freed once that record is durable. Only the segments
// holding an inode changed since the last checkpoint (FsCore.stateChanged) are captured
// and serialized again: a checkpoint's CPU follows what changed, not the number of files. So a checkpoint
// writes what changed, and the number of files is bounded by volume 0's space, not by
// the area. A directory of more than SEGMENTS.bucketMin names keeps its entries apart, in
// buckets by a hash of the name (key "ino.b"; its image says how many in field 22), so
// a create in a directory of 100k names rewrites one bucket, not every name. The
// record's payload is JSON {v: 5, nextIno, gen, store, segs: [[key, bytes, crc32,
// [[block, count]...]]...]}, a segment of inodes keyed by its first inode's number (v 4:
// by k, for the fixed range of 1024 numbers from k·1024; read as the number it starts
// at); a payload that is itself the state (v 1 or 2) is what mkfs and earlier versions
// wrote, and what a volume 0 with no free block gets.
import { createHash } from 'crypto'
import { crc32 } from '../native/sums'
import { VsmError, type BlockDev } from '../block/blockdev'
import type { FsCore } from './core'
import { type Dir, nameHash } from './dir'
import type { Inode } from './inode'
import { BS, Run } from './layout'

/**
 * How the state is cut: a segment of inodes ends at one inode number in `inodes` (about
 * that many live inodes a segment, and the segment a changed inode is in holds about
 * twice that); a directory of more than `bucketMin` names keeps them in buckets of about
 * `bucketNames` (tests shrink these to cut every directory into buckets, or every inode
 * into a segment of its own).
 */
export const SEGMENTS = { inodes: 512, bucketMin: 2048, bucketNames: 1024 }

/**
 * VSM_FS_STATE_VERIFY=1 (the test command sets it unless told otherwise): every checkpoint also captures every
 * inode and fails (EIO, the fs then refuses all calls) unless its plan (planState) wrote
 * or kept exactly the segments the whole state cuts into: an inode changed without a
 * mark in FsCore.stateChanged cannot pass a test unseen.
 */
export const STATE_CHECK = { verify: process.env.VSM_FS_STATE_VERIFY === '1' }

/** Inode numbers a segment of a v 4 pointer spanned (its key k: the numbers from k·1024). */
const V4_SEGMENT = 1024

/** A segment's key: the number of its first inode, or "ino.b" for bucket b of a directory's names. */
export type SegKey = number | string

/**
 * A segment of the durable state: its length, crc32, sha256 and where it lies; for a
 * segment of inodes, its last inode's number and how many it holds (with the key, its
 * first: which live inodes it holds, as no inode is born below the next number).
 */
export interface Segment { bytes: number; crc: number; hash: string; runs: Run[]; last?: number; count?: number }

/**
 * Whether a segment of inodes ends after inode `ino`: its number mixed (lowbias32) is a
 * multiple of SEGMENTS.inodes. A hash, not the number itself, so no pattern of creates
 * and unlinks keeps every cut dead and grows a segment without bound.
 */
export function cutAfter(ino: number): boolean {
  let x = (ino ^ Math.floor(ino / 2 ** 32)) >>> 0
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d)
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b)
  return ((x ^ (x >>> 16)) >>> 0) % SEGMENTS.inodes === 0
}

/**
 * An inode's image in the state (field 12, its map's tree root, is filled in after the
 * trees' commit). `buckets`: the directory's names are serialized apart, in that many
 * buckets (StatePlan.buckets), so the image leaves them out instead of copying them all.
 */
export function imageOf(n: Inode, buckets = 0): unknown[] {
  const a = [n.ino, n.mode, n.uid, n.gid, n.size, n.nlink, n.atime, n.mtime, n.ctime, n.vol, n.parent,
    n.entries && !buckets ? [...n.entries] : 0, 0, [...n.xattr].map(([k, v]) => [k, v.toString('base64')]),
    n.snaps ? [...n.snaps] : 0, n.snapOf, n.snapName, n.stamp, n.target, n.rdev, n.atimeNs, n.mtimeNs]
  if (buckets) a[22] = buckets
  return a
}

/**
 * What the next checkpoint writes, taken synchronously with the ops it covers: the
 * images of every inode in a segment that must be written again, the keys of the
 * durable segments it keeps, and each inode segment's last number and count.
 */
export interface StatePlan {
  images: [Inode, unknown[]][]
  same: SegKey[]
  members: Map<number, { last: number; count: number }>
  /**
   * Of a captured directory whose buckets of names are as many as the durable state's: the
   * only buckets to serialize, with their names captured (the others are in same; its
   * image holds none of its names).
   */
  buckets: Map<number, Map<number, [string, number][]>>
}

/**
 * Plan the next state: the live inodes in number order, cut as segmentsOf cuts them; a
 * durable segment is kept when it holds the same inodes (first, last and count) and
 * none of them is in `changed`; a directory's buckets of names are kept with its inode.
 * Every other segment is captured whole, so segmentsOf cuts the captured images into
 * the same segments.
 *
 * Only the numbers of the durable segments a change reaches are looked at (with 1M files,
 * a walk over every number took 62 ms a checkpoint): a segment none of whose numbers
 * changed still holds the same inodes, since an inode is born only above every durable
 * number and dies only by an op, which marks it. A segment after one whose last inode
 * died (its cut is gone, the two merge) and the last segment (new inodes join it) are
 * looked at too. A durable state with segments of no recorded bounds (a v 4 pointer, or
 * the whole state) is walked whole.
 */
export function planState(c: FsCore, changed: ReadonlySet<number>, names: ReadonlyMap<number, ReadonlySet<string>>): StatePlan {
  const plan: StatePlan = { images: [], same: [], members: new Map(), buckets: new Map() }
  const captured = new Set<number>()
  // A directory with as many buckets as it had durably: those none of whose names changed
  // are kept, the names of the others captured (no copy of the rest: copying 100k names
  // into the image was most of such a checkpoint; nor a hash of each: the directory keeps
  // its names by bucket). Returns the bucket count, or 0 when the directory is to be
  // serialized whole.
  const keepBuckets = (n: Inode, entries: Dir): number => {
    const dir = n.ino, count = bucketCount(entries.size)
    if (!c.stateSegs.has(`${dir}.${count - 1}`) || c.stateSegs.has(`${dir}.${count}`)) return 0
    const write = new Map<number, [string, number][]>()
    for (const name of names.get(dir) ?? []) write.set(nameHash(name) & (count - 1), [])
    for (const [b, list] of write) {
      for (const name of entries.namesIn(b, count)) list.push([name, entries.get(name)!])
      c.counters.stateNames += list.length
    }
    plan.buckets.set(dir, write)
    for (let b = 0; b < count; b++) if (!write.has(b)) plan.same.push(`${dir}.${b}`)
    return count
  }
  const sink: PlanSink = {
    kept(key, last, count) {
      plan.members.set(key, { last, count })
      plan.same.push(key)
    },
    walked(inos) {
      const key = inos[0], last = inos[inos.length - 1], count = inos.length
      c.counters.stateVisited += count
      const old = c.stateSegs.get(key)
      if (old?.last === last && old.count === count && inos.every((i) => !changed.has(i))) { sink.kept(key, last, count); return }
      plan.members.set(key, { last, count })
      for (const i of inos) {
        const n = c.inodes.get(i)!
        const buckets = n.entries && n.entries.size > SEGMENTS.bucketMin ? keepBuckets(n, n.entries) : 0
        if (n.entries && !buckets) c.counters.stateNames += n.entries.size
        plan.images.push([n, imageOf(n, buckets)])
        captured.add(i)
      }
    },
  }
  const durable = durableBounds(c.stateSegs)
  if (durable) planChanged(c, durable, changed, sink)
  else planWhole(c, sink)
  for (const k of c.stateSegs.keys()) if (typeof k === 'string' && c.inodes.has(dirOf(k)) && !captured.has(dirOf(k))) plan.same.push(k)
  return plan
}

/** How planning reports a segment: a durable one kept without looking at its inodes, or the live inodes of one walked. */
interface PlanSink { kept(key: number, last: number, count: number): void; walked(inos: number[]): void }

/**
 * The durable inode segments' first and last numbers and counts, in number order; null
 * unless they are cut as planning cuts now (bounds recorded, each but the last ending at
 * a cut): a v 4 pointer's fixed ranges, or segments cut under another SEGMENTS, are not.
 */
interface Bounds { keys: number[]; last: number[]; count: number[]; index: Map<number, number> }
function durableBounds(segs: ReadonlyMap<SegKey, Segment>): Bounds | null {
  const keys: number[] = []
  for (const k of segs.keys()) if (typeof k === 'number') keys.push(k)
  if (!keys.length) return null
  keys.sort((x, y) => x - y)
  const last: number[] = [], count: number[] = []
  for (let i = 0; i < keys.length; i++) {
    const sg = segs.get(keys[i])!
    if (sg.last === undefined || sg.count === undefined || (i < keys.length - 1 && !cutAfter(sg.last))) return null
    last.push(sg.last)
    count.push(sg.count)
  }
  return { keys, last, count, index: new Map(keys.map((k, i) => [k, i])) }
}

/** Every live inode, cut into segments. */
function planWhole(c: FsCore, sink: PlanSink): void {
  const inos = [...c.inodes.keys()]
  for (let i = 1; i < inos.length; i++) if (inos[i] < inos[i - 1]) { inos.sort((a, b) => a - b); break }
  for (let first = 0, i = 0; first < inos.length; first = i) {
    do i++; while (i < inos.length && !cutAfter(inos[i - 1]))
    sink.walked(inos.slice(first, i))
  }
}

/** The durable segments no change reaches kept as they are; from each one a change reaches, the numbers walked and cut again. */
function planChanged(c: FsCore, d: Bounds, changed: ReadonlySet<number>, sink: PlanSink): void {
  const m = d.keys.length
  const reached = new Uint8Array(m)
  reached[m - 1] = 1 // new inodes join the last segment or follow it
  for (const x of changed) {
    let lo = 0, hi = m - 1 // the last segment whose first number is at most x
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (d.keys[mid] <= x) lo = mid; else hi = mid - 1 }
    reached[lo] = 1
    // its last inode (the cut) may have died: the next segment may now start elsewhere
    if (x >= d.last[lo] && lo + 1 < m) reached[lo + 1] = 1
  }
  for (let i = 0; i < m;) {
    if (!reached[i]) { sink.kept(d.keys[i], d.last[i], d.count[i]); i++; continue }
    let n = d.keys[i]
    let seg: number[] = []
    for (; n < c.nextIno; n++) {
      // at a segment's start: a durable segment no change reached resumes as it is
      if (seg.length === 0 && n !== d.keys[i]) { const j = d.index.get(n); if (j !== undefined && !reached[j]) break }
      if (!c.inodes.has(n)) continue
      seg.push(n)
      if (cutAfter(n)) { sink.walked(seg); seg = [] }
    }
    if (seg.length) sink.walked(seg)
    i = n < c.nextIno ? d.index.get(n)! : m
  }
}

/** The state as the loader takes it: inode arrays and the fields beside them. */
export interface StateImage { v: number; nextIno: number; gen?: number; store?: number; inodes: unknown[][] }

const sha = (b: Buffer) => createHash('sha256').update(b).digest('base64')
/** The directory a bucket's key ("ino.b") belongs to. */
const dirOf = (k: string) => Number(k.slice(0, k.indexOf('.')))
const what = (k: SegKey) => (typeof k === 'number' ? `inodes from ${k}` : `names of directory ${dirOf(k)}`)

/** Buckets of names a directory of `size` names keeps them in (a power of two). */
function bucketCount(size: number): number {
  return 2 ** Math.ceil(Math.log2(size / SEGMENTS.bucketNames))
}

/**
 * The captured inode images grouped into segments' JSON, in inode number order, with the
 * buckets of each large directory's names: all of them when its image holds its names,
 * else those `buckets` captured for it. The images are copies, so the event loop is given
 * back between segments: I/O goes on while a state of many files is serialized (~3 µs an
 * inode).
 */
export async function segmentsOf(inodes: unknown[][], buckets?: StatePlan['buckets']): Promise<Map<SegKey, Buffer>> {
  const images: unknown[][] = []
  const out = new Map<SegKey, Buffer>()
  for (let a of inodes) {
    const entries = a[11] as [string, number][] | 0
    if (entries && entries.length > SEGMENTS.bucketMin) {
      const count = bucketCount(entries.length)
      const all: [string, number][][] = Array.from({ length: count }, () => [])
      for (const e of entries) all[nameHash(e[0]) & (count - 1)].push(e)
      all.forEach((b, i) => out.set(`${a[0]}.${i}`, Buffer.from(JSON.stringify(b))))
      a = a.slice()
      a[11] = 0
      a[22] = count
    } else if (a[22]) {
      for (const [i, b] of buckets?.get(a[0] as number) ?? []) out.set(`${a[0]}.${i}`, Buffer.from(JSON.stringify(b)))
    }
    images.push(a)
  }
  images.sort((x, y) => (x[0] as number) - (y[0] as number))
  for (let first = 0, i = 0; first < images.length; first = i) {
    do i++; while (i < images.length && !cutAfter(images[i - 1][0] as number))
    out.set(images[first][0] as number, Buffer.from(`[${images.slice(first, i).map((a) => JSON.stringify(a)).join(',')}]`))
    await new Promise((r) => setImmediate(r))
  }
  return out
}

/** STATE_CHECK.verify: the plan's segments (written or kept) are the whole state's, byte for byte. */
export function verifyPlan(c: FsCore, whole: Map<SegKey, Buffer>, wrote: Map<SegKey, Buffer>, plan: StatePlan): void {
  const kept = new Set(plan.same)
  const fail = (k: SegKey, why: string) => { throw new VsmError('EIO', `checkpoint plan differs from the whole state at its ${what(k)}: ${why}`) }
  for (const [k, buf] of whole) {
    if (kept.has(k)) { if (sha(buf) !== c.stateSegs.get(k)!.hash) fail(k, 'kept, but an inode in it changed') } else if (!wrote.get(k)?.equals(buf)) fail(k, wrote.has(k) ? 'written with other bytes' : 'missing')
  }
  for (const k of [...wrote.keys(), ...kept]) if (!whole.has(k)) fail(k, 'not in the state')
}

/**
 * Blocks the next state may take for `bytes` of JSON: each segment's last block is
 * partly empty. Its segments are at most the durable state's, one more for each cut
 * among the inode numbers handed out since (numbers only grow, so a new inode lands in
 * the last segment; an unlink only merges segments), and new buckets of names; a bucket
 * holds about half of SEGMENTS.bucketNames names or more, a block of JSON or more, so
 * the bytes bound those (counted twice).
 */
export function stateBlocks(c: FsCore, bytes: number): number {
  return 2 * Math.ceil(bytes / BS) + c.stateSegs.size + freshCuts(c) + 1
}

/** Cuts among the numbers from c.stateNextIno to c.nextIno, counted once each (stateBlocks runs at every create). */
const counted = new WeakMap<FsCore, { from: number; to: number; cuts: number }>()
function freshCuts(c: FsCore): number {
  let m = counted.get(c)
  if (!m || m.from !== c.stateNextIno || m.to > c.nextIno) counted.set(c, m = { from: c.stateNextIno, to: c.stateNextIno, cuts: 0 })
  for (; m.to < c.nextIno; m.to++) if (cutAfter(m.to)) m.cuts++
  return m.cuts
}

/** Bytes of JSON in a state's segments. */
export function stateBytes(segs: ReadonlyMap<SegKey, Segment>): number {
  let n = 0
  for (const s of segs.values()) n += s.bytes
  return n
}

/** Volume 0 blocks the durable state holds. */
export function heldBlocks(segs: ReadonlyMap<SegKey, Segment>): number {
  let n = 0
  for (const s of segs.values()) for (const r of s.runs) n += r.len
  return n
}

export function heldRuns(segs: ReadonlyMap<SegKey, Segment>): Run[] {
  return [...segs.values()].flatMap((s) => s.runs)
}

/** `count` blocks from the top of volume 0's free space as runs; null (nothing taken) when it has fewer. */
function take(c: FsCore, count: number): Run[] | null {
  if (count > c.free[0].free) return null
  const runs: Run[] = []
  for (let i = 0; i < count; i++) {
    const b = c.free[0].allocLast()!
    const last = runs[runs.length - 1]
    if (last && b === last.start - 1) { last.start = b; last.len++ } else runs.push({ start: b, len: 1 })
  }
  c.stateTaken += count
  return runs
}

/**
 * Write the segments that differ from the durable state's to fresh blocks and flush
 * them. Returns the new state's segments, the runs to free once its record is durable
 * and the bytes written; null (nothing taken) when volume 0 has no room for them.
 */
export async function writeSegments(c: FsCore, bufs: Map<SegKey, Buffer>, plan: StatePlan): Promise<{ segs: Map<SegKey, Segment>; freed: Run[]; written: number } | null> {
  const segs = new Map<SegKey, Segment>()
  for (const k of plan.same) segs.set(k, c.stateSegs.get(k)!)
  const writes: { buf: Buffer; runs: Run[] }[] = []
  for (const [k, buf] of bufs) {
    const hash = sha(buf), old = c.stateSegs.get(k), members = typeof k === 'number' ? plan.members.get(k) : undefined
    if (old && old.hash === hash && old.bytes === buf.length) { segs.set(k, old); continue }
    const runs = take(c, Math.ceil(buf.length / BS))
    if (!runs) {
      for (const w of writes) for (const r of w.runs) c.free[0].release(r.start, r.len)
      c.stateTaken = 0
      return null
    }
    segs.set(k, { bytes: buf.length, crc: crc32(buf), hash, runs, ...members })
    writes.push({ buf, runs })
  }
  let written = 0
  await Promise.all(writes.map(({ buf, runs }) => {
    const padded = Buffer.alloc(Math.ceil(buf.length / BS) * BS)
    buf.copy(padded)
    written += padded.length
    let off = 0
    return Promise.all(runs.map((r) => { const at = off; off += r.len * BS; return c.vols[0].write(padded.subarray(at, off), r.start * BS) }))
  }))
  if (writes.length) await c.vols[0].flush()
  const freed: Run[] = []
  for (const [k, s] of c.stateSegs) if (segs.get(k) !== s) freed.push(...s.runs)
  return { segs, freed, written }
}

export function encodePointer(head: { nextIno: number; gen: number; store: number }, segs: Map<SegKey, Segment>): Buffer {
  const list = [...segs].map(([k, s]) => [k, s.bytes, s.crc, s.runs.map((r) => [r.start, r.len])])
  return Buffer.from(JSON.stringify({ v: 5, ...head, segs: list }))
}

async function readSegment(dev: BlockDev, runs: Run[], bytes: number): Promise<Buffer> {
  const buf = Buffer.alloc(runs.reduce((a, r) => a + r.len, 0) * BS)
  let off = 0
  for (const r of runs) { await dev.read(buf.subarray(off, off + r.len * BS), r.start * BS); off += r.len * BS }
  return buf.subarray(0, bytes)
}

/** fsck: the durable state's segments read back against their crc (damage found before a mount refuses it). */
export async function checkSegments(dev: BlockDev, segs: ReadonlyMap<SegKey, Segment>, errors: string[]): Promise<void> {
  for (const [k, s] of segs) {
    if (crc32(await readSegment(dev, s.runs, s.bytes)) !== s.crc) errors.push(`the checkpoint's ${what(k)} (${s.bytes} bytes on volume 0) fail their checksum`)
  }
}

/**
 * The inode images of a state's segments (key, JSON), each large directory's buckets of
 * names put back into its image; a directory whose buckets are not all there is EIO.
 */
function assemble(parts: Iterable<[SegKey, Buffer]>): { inodes: unknown[][]; members: StatePlan['members'] } {
  const inodes: unknown[][] = []
  const members: StatePlan['members'] = new Map()
  const names = new Map<number, { entries: [string, number][]; buckets: number }>()
  for (const [k, seg] of parts) {
    const parsed = JSON.parse(seg.toString())
    if (typeof k === 'number') {
      for (const a of parsed) inodes.push(a)
      members.set(k, { last: parsed[parsed.length - 1]?.[0], count: parsed.length })
    } else {
      const got = names.get(dirOf(k))
      if (got) { for (const e of parsed) got.entries.push(e); got.buckets++ } else names.set(dirOf(k), { entries: parsed, buckets: 1 })
    }
  }
  for (const a of inodes) {
    if (!a[22]) continue
    const got = names.get(a[0] as number)
    if (got?.buckets !== a[22]) throw new VsmError('EIO', `the checkpoint holds ${got?.buckets ?? 0} of directory ${a[0]}'s ${a[22]} buckets of names`)
    a[11] = got.entries
  }
  return { inodes, members }
}

/**
 * The whole state as one JSON (v 2), for a checkpoint that finds no blocks for its
 * segments: the ones it wrote anew and, read back, the durable ones it keeps.
 */
export async function wholeState(c: FsCore, bufs: Map<SegKey, Buffer>, plan: StatePlan, head: { nextIno: number; gen: number; store: number }): Promise<Buffer> {
  const parts: [SegKey, Buffer][] = [...bufs]
  for (const k of plan.same) { const s = c.stateSegs.get(k)!; parts.push([k, await readSegment(c.vols[0], s.runs, s.bytes)]) }
  return wholePayload(head, assemble(parts).inodes)
}

/** A checkpoint payload that is the state itself (v 2): mkfs's, and a checkpoint's without blocks for segments. */
export function wholePayload(head: { nextIno: number; gen: number; store: number }, images: unknown[][]): Buffer {
  const inodes = images.map((a) => JSON.stringify(a))
  return Buffer.from(`{"v":2,"nextIno":${head.nextIno},"gen":${head.gen},"store":${head.store},"inodes":[${inodes.join(',')}]}`)
}

/**
 * The state a checkpoint payload holds, read from the segments it names (blocks in
 * [lo, hi) of volume 0), with those segments. A segment that fails its crc is
 * corruption (segments are flushed before the record is written), never a crash's
 * leftovers: EIO, rather than fall back to an older checkpoint and lose what this one
 * made durable.
 */
export async function readState(dev: BlockDev, payload: Buffer, lo: number, hi: number): Promise<{ image: StateImage; segs: Map<SegKey, Segment> }> {
  const p = JSON.parse(payload.toString())
  const segs = new Map<SegKey, Segment>()
  if (p.v !== 4 && p.v !== 5) return { image: p, segs }
  const parts: [SegKey, Buffer][] = []
  for (const [key, bytes, crc, list] of p.segs as [SegKey, number, number, [number, number][]][]) {
    const k = p.v === 4 && typeof key === 'number' ? key * V4_SEGMENT : key
    const runs = list.map(([start, len]) => ({ start, len }))
    const blocks = runs.reduce((a, r) => a + r.len, 0)
    if (runs.some((r) => !Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.len) || r.len <= 0 || r.start < lo || r.start + r.len > hi) ||
      !Number.isSafeInteger(bytes) || bytes < 0 || bytes > blocks * BS) {
      throw new VsmError('EIO', `the checkpoint names blocks outside volume 0's data area (${what(k)})`)
    }
    const seg = await readSegment(dev, runs, bytes)
    if (crc32(seg) !== crc) throw new VsmError('EIO', `the checkpoint's ${what(k)} (${bytes} bytes on volume 0) fail their checksum`)
    parts.push([k, seg])
    segs.set(k, { bytes, crc, hash: sha(seg), runs })
  }
  const { inodes, members } = assemble(parts)
  // a v 4 segment's key is not its first inode: no bounds, so planning never keeps it
  if (p.v === 5) for (const [k, m] of members) Object.assign(segs.get(k)!, m)
  return { image: { v: 2, nextIno: p.nextIno, gen: p.gen, store: p.store, inodes }, segs }
}
