// Remapping between volumes (fs move's step and the HSM's mechanism): find every map
// that holds a run, copy it, and remap it in all of them with one `rl` op. The target
// may be an archive tier (migration out of the pool: every map holding the blocks goes,
// so the pool blocks are freed) and the source may be one (recall: only the file's own
// map comes home; a snapshot sharing the range stays archived).
import type { FsCore } from './core'
import { Extent } from './extents'
import { Inode, Pending, err } from './inode'
import { BS, isArchive } from './layout'
import { anyShared, readAt, writeAt } from './data'
import { placeable } from './volumes'
import { spare } from './space'

/**
 * Every map that holds physical run r, as pieces contiguous in each of them: the
 * file's own piece, and for a shared run the snapshots and clones that map it too
 * (a scan of all maps, paid only for shared blocks).
 */
export function holdersOf(c: FsCore, n: Inode, r: Extent): { vol: number; pb: number; len: number; h: [Inode, number][] }[] {
  if (isArchive(r.vol) || !anyShared(c, n.ext, r)) return [{ vol: r.vol, pb: r.pb, len: r.len, h: [[n, r.fb]] }]
  const end = r.pb + r.len
  const hits: { m: Inode; fb: number; lo: number; hi: number }[] = []
  const cuts = new Set<number>([r.pb, end])
  for (const m of c.inodes.values()) {
    for (const e of m.ext) {
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
 * journaled only after the copies (data=ordered; an archive's writes are durable when
 * they resolve). `archivedOnly`: move only runs that lie in an archive (a recall).
 * `unlessHeldBy`: leave the runs that inode maps too (a snapshot's blocks that the live
 * file no longer holds move, the ones it shares with the file stay). Returns the blocks moved.
 */
export async function relocate(c: FsCore, ino: number, b0: number, b1: number, to: number, archivedOnly = false, unlessHeldBy?: number): Promise<number> {
  const archive = isArchive(to) ? c.archives.get(to) : undefined
  if (isArchive(to) && !archive) throw err('EIO', `relocate: archive location ${to} is not attached`)
  if (!archive) placeable(c, to, 'relocate')
  if (!Number.isSafeInteger(b0) || !Number.isSafeInteger(b1) || b0 < 0 || b1 < b0) throw err('EINVAL', `bad block range ${b0}..${b1}`)
  let pieces: { vol: number; pb: number; len: number; h: [Inode, number][] }[]
  for (;;) {
    c.live()
    const n = c.fileNode(ino)
    const runs = n.ext.segments(b0, b1).filter((sg) => sg.pb >= 0 && sg.vol !== to && (!archivedOnly || isArchive(sg.vol)))
    if (!runs.length) return 0
    pieces = runs.flatMap((sg) => holdersOf(c, n, sg)).filter((pc) => !pc.h.some(([m]) => m.ino === unlessHeldBy))
    if (!pieces.length) return 0
    const busy = pieces.flatMap((pc) => pc.h.map(([m]) => m)).find((m) => m.busy || m.gate)
    if (!busy) break
    if (busy.gate && !busy.busy) await busy.gate
    else await c.drain(busy)
  }
  const count = pieces.reduce((a, pc) => a + pc.len, 0)
  if (!archive && count > spare(c, to)) throw err('ENOSPC', `no space left on volume ${c.sb.volumes[to].name} to move ${count * BS} bytes`)
  // synchronous from here to the pending marks: no I/O can slip in between
  const moves: { vol: number; pb: number; len: number; q: number; h: [Inode, number][] }[] = []
  let goal = -1
  for (const pc of pieces) {
    let off = 0
    for (const got of archive ? [{ start: archive.alloc(pc.len), len: pc.len }] : c.free[to].alloc(pc.len, goal)!) {
      moves.push({ vol: pc.vol, pb: pc.pb + off, len: got.len, q: got.start, h: pc.h.map(([m, fb]) => [m, fb + off]) })
      off += got.len
      goal = got.start + got.len
    }
  }
  const marks: [Inode, Pending][] = []
  for (const mv of moves) for (const [m, fb] of mv.h) {
    marks.push([m, c.addPending(m, fb, fb + mv.len, [], [])])
    m.inflight++; c.inflight++
  }
  let ok = false
  try {
    for (const mv of moves) {
      const b = Buffer.allocUnsafe(mv.len * BS)
      await readAt(c, mv.vol, b, mv.pb * BS)
      await writeAt(c, to, b, mv.q * BS)
    }
    if (!archive) c.dirtyVols.add(to)
    ok = true
  } finally {
    if (ok) {
      for (const mv of moves) {
        c.exec({ o: 'rl', v: mv.vol, p: mv.pb, n: mv.len, w: to, q: mv.q, h: mv.h.flatMap(([m, fb]) => [m.ino, fb]) })
      }
    } else {
      // archive addresses are never handed out again: what a failed step wrote there is an orphan for the HSM's check
      if (!archive) for (const mv of moves) c.free[to].release(mv.q, mv.len)
    }
    for (const [m, p] of marks) c.endIo(m, p)
  }
  return count
}

/** Waits until file `ino` has no I/O in flight and no gate; returns it. */
async function quiet(c: FsCore, ino: number): Promise<Inode> {
  for (;;) {
    c.live()
    const n = c.fileNode(ino)
    if (!n.busy && !n.gate) return n
    if (n.gate && !n.busy) await n.gate
    else await c.drain(n)
  }
}

/**
 * Premigration's copy: the pool runs file `ino` maps in [b0, b1) are copied to fresh
 * addresses in archive `to` (durable when this resolves) and stay mapped where they
 * are. The range is pending during the copy, so the copies are of one instant; returns
 * them as [file block, address, blocks] with the file's stamp at that instant. `hash`
 * is fed the bytes copied, run by run (the HSM checks them against the pool after a
 * crash, which may have lost a lazily journaled stamp).
 */
export async function copyOut(c: FsCore, ino: number, b0: number, b1: number, to: number, hash?: { update(b: Buffer): unknown }): Promise<{ stamp: number; runs: [number, number, number][] }> {
  const archive = c.archives.get(to)
  if (!archive) throw err('EIO', `premigrate: archive location ${to} is not attached`)
  const n = await quiet(c, ino)
  const runs = n.ext.segments(b0, b1).filter((sg) => sg.pb >= 0 && !isArchive(sg.vol))
  const stamp = n.stamp
  if (!runs.length) return { stamp, runs: [] }
  const p = c.addPending(n, b0, b1, [], [])
  n.inflight++; c.inflight++
  try {
    const out: [number, number, number][] = []
    for (const r of runs) {
      const q = archive.alloc(r.len)
      const b = Buffer.allocUnsafe(r.len * BS)
      await readAt(c, r.vol, b, r.pb * BS)
      hash?.update(b)
      await archive.write(b, q * BS)
      out.push([r.fb, q, r.len])
    }
    return { stamp, runs: out }
  } finally { c.endIo(n, p) }
}

/**
 * Premigration's release: if file `ino` has not changed since its copies were made (its
 * stamp is still `stamp`), the pool runs they cover are remapped onto them in every map
 * holding them, with one `rl` op each and no copy; the pool blocks are freed after the
 * commit. Returns the blocks released, or -1 when the file changed (the copies are stale).
 */
export async function release(c: FsCore, ino: number, copies: [number, number, number][], to: number, stamp: number): Promise<number> {
  if (!c.archives.has(to)) throw err('EIO', `release: archive location ${to} is not attached`)
  let moves: { vol: number; pb: number; len: number; q: number; h: [Inode, number][] }[]
  for (;;) {
    const n = await quiet(c, ino)
    if (n.stamp !== stamp) return -1
    moves = []
    for (const [fb, q, len] of copies) {
      for (const sg of n.ext.segments(fb, fb + len)) {
        if (sg.pb < 0 || isArchive(sg.vol)) continue
        for (const pc of holdersOf(c, n, sg)) {
          const own = pc.h.find(([m]) => m === n)!
          moves.push({ vol: pc.vol, pb: pc.pb, len: pc.len, q: q + own[1] - fb, h: pc.h })
        }
      }
    }
    // a snapshot or clone reading these blocks finishes first: they are freed after the next commit
    const busy = moves.flatMap((mv) => mv.h.map(([m]) => m)).find((m) => m.busy || m.gate)
    if (!busy) break
    if (busy.gate && !busy.busy) await busy.gate
    else await c.drain(busy)
  }
  for (const mv of moves) c.exec({ o: 'rl', v: mv.vol, p: mv.pb, n: mv.len, w: to, q: mv.q, h: mv.h.flatMap(([m, fb]) => [m.ino, fb]) })
  return moves.reduce((a, mv) => a + mv.len, 0)
}
