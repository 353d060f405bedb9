// The checkpoint's state (inodes, directories, xattrs: each inode one JSON array, the
// tree root of its map among them) on volume 0 blocks, in segments of SEG_INODES
// consecutive inode numbers. A checkpoint writes only the segments whose bytes
// changed since the last one (a sha256 per segment, kept in memory, says which), each
// to fresh blocks from the top of the free space (as tree nodes are), flushed before
// the record that names them all is written into the checkpoint area; the blocks of
// the segments it replaced are freed once that record is durable. So a checkpoint
// writes what changed, and the number of files is bounded by volume 0's space, not by
// the area. The record's payload is JSON {v: 4, nextIno, gen, store, segs: [[k, bytes,
// crc32, [[block, count]...]]...]}; a payload that is itself the state (v 1 or 2) is
// what mkfs and earlier versions wrote, and what a volume 0 with no free block gets.
import { createHash } from 'crypto'
import { crc32 } from '../native/sums'
import { VsmError, type BlockDev } from '../block/blockdev'
import type { FsCore } from './core'
import { BS, Run } from './layout'

export const SEG_INODES = 1024

/** A segment of the durable state: its length, crc32, sha256 and where it lies. */
export interface Segment { bytes: number; crc: number; hash: string; runs: Run[] }

/** The state as the loader takes it: inode arrays and the fields beside them. */
export interface StateImage { v: number; nextIno: number; gen?: number; store?: number; inodes: unknown[][] }

const sha = (b: Buffer) => createHash('sha256').update(b).digest('base64')

/**
 * The captured inode images grouped into segments' JSON, by inode number. The images
 * are copies, so the event loop is given back between segments: I/O goes on while a
 * state of many files is serialized (~3 µs an inode).
 */
export async function segmentsOf(inodes: unknown[][]): Promise<Map<number, Buffer>> {
  const groups = new Map<number, unknown[][]>()
  for (const a of inodes) {
    const k = Math.floor((a[0] as number) / SEG_INODES)
    let g = groups.get(k)
    if (!g) groups.set(k, g = [])
    g.push(a)
  }
  const out = new Map<number, Buffer>()
  for (const [k, g] of [...groups].sort((x, y) => x[0] - y[0])) {
    g.sort((x, y) => (x[0] as number) - (y[0] as number))
    out.set(k, Buffer.from(`[${g.map((a) => JSON.stringify(a)).join(',')}]`))
    await new Promise((r) => setImmediate(r))
  }
  return out
}

/** Volume 0 blocks the durable state holds. */
export function heldBlocks(segs: Map<number, Segment>): number {
  let n = 0
  for (const s of segs.values()) for (const r of s.runs) n += r.len
  return n
}

export function heldRuns(segs: Map<number, Segment>): Run[] {
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
  return runs
}

/**
 * Write the segments that differ from the durable state's to fresh blocks and flush
 * them. Returns the new state's segments, the runs to free once its record is durable
 * and the bytes written; null (nothing taken) when volume 0 has no room for them.
 */
export async function writeSegments(c: FsCore, bufs: Map<number, Buffer>): Promise<{ segs: Map<number, Segment>; freed: Run[]; written: number } | null> {
  const segs = new Map<number, Segment>()
  const writes: { buf: Buffer; runs: Run[] }[] = []
  for (const [k, buf] of bufs) {
    const hash = sha(buf), old = c.stateSegs.get(k)
    if (old && old.hash === hash && old.bytes === buf.length) { segs.set(k, old); continue }
    const runs = take(c, Math.ceil(buf.length / BS))
    if (!runs) {
      for (const w of writes) for (const r of w.runs) c.free[0].release(r.start, r.len)
      return null
    }
    segs.set(k, { bytes: buf.length, crc: crc32(buf), hash, runs })
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

export function encodePointer(head: { nextIno: number; gen: number; store: number }, segs: Map<number, Segment>): Buffer {
  const list = [...segs].map(([k, s]) => [k, s.bytes, s.crc, s.runs.map((r) => [r.start, r.len])])
  return Buffer.from(JSON.stringify({ v: 4, ...head, segs: list }))
}

/**
 * The state a checkpoint payload holds, read from the segments it names (blocks in
 * [lo, hi) of volume 0), with those segments. A segment that fails its crc is
 * corruption (segments are flushed before the record is written), never a crash's
 * leftovers: EIO, rather than fall back to an older checkpoint and lose what this one
 * made durable.
 */
export async function readState(dev: BlockDev, payload: Buffer, lo: number, hi: number): Promise<{ image: StateImage; segs: Map<number, Segment> }> {
  const p = JSON.parse(payload.toString())
  const segs = new Map<number, Segment>()
  if (p.v !== 4) return { image: p, segs }
  const inodes: unknown[][] = []
  for (const [k, bytes, crc, list] of p.segs as [number, number, number, [number, number][]][]) {
    const runs = list.map(([start, len]) => ({ start, len }))
    const blocks = runs.reduce((a, r) => a + r.len, 0)
    if (runs.some((r) => !Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.len) || r.len <= 0 || r.start < lo || r.start + r.len > hi) ||
      !Number.isSafeInteger(bytes) || bytes < 0 || bytes > blocks * BS) {
      throw new VsmError('EIO', `the checkpoint names blocks outside volume 0's data area (inodes from ${k * SEG_INODES})`)
    }
    const buf = Buffer.alloc(blocks * BS)
    let off = 0
    for (const r of runs) { await dev.read(buf.subarray(off, off + r.len * BS), r.start * BS); off += r.len * BS }
    const seg = buf.subarray(0, bytes)
    if (crc32(seg) !== crc) throw new VsmError('EIO', `the checkpoint's inodes from ${k * SEG_INODES} (${bytes} bytes on volume 0) fail their checksum`)
    for (const a of JSON.parse(seg.toString())) inodes.push(a)
    segs.set(k, { bytes, crc, hash: sha(seg), runs })
  }
  return { image: { v: 2, nextIno: p.nextIno, gen: p.gen, store: p.store, inodes }, segs }
}
