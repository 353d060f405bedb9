// Space maps: the per-volume free maps and reference counts as the extent maps and the
// metadata store's blocks imply them (mount and check rebuild them; the counts are
// never written), what data writes may take (volume 0 keeps blocks back for the
// trees), the ENOSPC refusal and its event, and what statfs reports.
import type { FsCore } from './core'
import { Extent, FreeMap, RefMap, RunBounds } from './extents'
import { NAME_MAX, StatFs, err } from './inode'
import { BS, isArchive } from './layout'
import { VsmError } from '../block/blockdev'
import { metaBudget, metaReserve } from './trees'

const NOSPACE_EVENT_MS = 10_000

export function dataRange(c: FsCore, v: number): [number, number] {
  if (c.sb.volumes[v].removed) return [1, 1]
  return [v === 0 ? c.sb.dataStart : 1, c.sb.volumes[v].size / BS]
}

/**
 * Free maps and reference counts as the extent maps imply them. A block may be in
 * several maps (a file and its snapshots, clones), never twice in one; it is counted
 * once for each distinct chunk array that holds it; `claims` are
 * extra references held by copy-on-write I/O in flight; `meta` the blocks of volume 0
 * the metadata store uses (no extent may hold one).
 */
export function buildFree(c: FsCore, errors: string[], claims: Extent[] = [], meta: { start: number; len: number }[] = []): { free: FreeMap[]; refs: RefMap[] } {
  const runs = c.vols.map(() => new RunBounds())
  const known = (ino: number, e: Extent) => {
    if (isArchive(e.vol)) return false
    if (e.vol < 0 || e.vol >= c.vols.length || c.sb.volumes[e.vol].removed) { errors.push(`inode ${ino}: extent on unknown or removed volume ${e.vol}`); return false }
    return true
  }
  // a block is counted once per chunk array holding it, however many maps share that
  // chunk (FsCore.refs)
  const seen = new Set<readonly Extent[]>()
  for (const n of c.inodes.values()) {
    n.ext.forEachChunk((ex) => {
      if (seen.has(ex)) return
      seen.add(ex)
      for (const e of ex) if (known(n.ino, e)) runs[e.vol].add(e.pb, e.len)
    })
  }
  for (const cl of claims) if (known(0, cl)) runs[cl.vol].add(cl.pb, cl.len)
  const counted = runs.map((r) => RefMap.fromRuns(r))
  // a block one map holds twice is counted twice (the two extents are in one array or
  // in two distinct ones): only a volume with blocks counted twice needs each map's own check
  const twice = counted.map((b) => b.refs.count > 0)
  if (twice.some(Boolean)) {
    const mine = c.vols.map(() => new RunBounds())
    for (const n of c.inodes.values()) {
      n.ext.forEachChunk((ex) => { for (const e of ex) if (twice[e.vol] && known(n.ino, e)) mine[e.vol].add(e.pb, e.len) })
      mine.forEach((r, v) => {
        if (r.n >= 2 && r.overlaps()) errors.push(`inode ${n.ino}: maps a block of volume ${v} twice`)
        r.clear()
      })
    }
  }
  const free: FreeMap[] = [], refs: RefMap[] = []
  counted.forEach((b, v) => {
    const [lo, hi] = dataRange(c, v)
    if (v === 0 && meta.length) {
      const m = RefMap.fromRuns(meta).union
      const both = RefMap.fromRuns([...b.union, ...m])
      if (both.refs.count) errors.push(`volume 0: block ${both.refs.toArray()[0].start} both metadata and data`)
      free.push(FreeMap.fromAllocated(lo, hi, both.union, errors))
    } else free.push(FreeMap.fromAllocated(lo, hi, b.union, errors))
    refs.push(b.refs)
  })
  return { free, refs }
}

/**
 * The addresses the fs's maps hold in archive location `vol`, sorted and coalesced
 * (shared ones once), copy-on-write I/O in flight included: everything an archive
 * object must keep; the rest of the archive is orphaned.
 */
export function archivedRuns(c: FsCore, vol: number): { start: number; len: number }[] {
  const runs: { start: number; len: number }[] = []
  for (const n of c.inodes.values()) {
    for (const e of n.ext) if (e.vol === vol) runs.push({ start: e.pb, len: e.len })
    for (const p of n.pending) for (const e of p.replaced) if (e.vol === vol) runs.push({ start: e.pb, len: e.len })
  }
  return RefMap.fromRuns(runs).union
}

/** Blocks a data write may take from volume v (what the metadata keeps back excepted): what statfs calls free. */
export function spare(c: FsCore, v: number): number {
  return c.free[v].free - metaReserve(c, v)
}

/** The error for a write that needs `blocks` more than the volume has; reported, but a guest retrying must not flood the log. */
export function noSpace(c: FsCore, ino: number, vol: number, blocks: number): VsmError {
  const volume = c.sb.volumes[vol].name
  const now = Date.now()
  if (now - c.noSpaceAt >= NOSPACE_EVENT_MS) {
    c.events.publish('fs.enospc', { ino, volume, neededBytes: blocks * BS, freeBytes: Math.max(0, spare(c, vol)) * BS, unreportedRefusals: c.noSpaceHeld, reason: 'a write needs more blocks than the volume has free' }, 'warn')
    c.noSpaceAt = now
    c.noSpaceHeld = 0
  } else {
    c.noSpaceHeld++
  }
  return err('ENOSPC', `no space left on volume ${volume}`)
}

export function statfs(c: FsCore): StatFs {
  c.live()
  let blocks = 0, bfree = 0
  c.free.forEach((_, v) => { blocks += capacity(c, v); bfree += Math.max(0, spare(c, v)) })
  // an inode takes ~120 bytes of the checkpoint's state, which the room kept for states
  // counts four times: the held state and the next, each at twice its bytes (stateBlocks)
  const ffree = Math.max(0, Math.floor((c.free[0].free - metaReserve(c, 0)) * BS / 480))
  return { bsize: BS, blocks, bfree, bavail: bfree, files: c.inodes.size + ffree, ffree, namemax: NAME_MAX }
}

/** Per volume the fs spans: data bytes and free bytes (the HSM's tier capacity and use). */
export function volumeSpace(c: FsCore): { name: string; size: number; free: number }[] {
  c.live()
  return c.sb.volumes.flatMap((v, i) => v.removed ? [] : [{ name: v.name, size: capacity(c, i) * BS, free: Math.max(0, spare(c, i)) * BS }])
}

/** Blocks of volume v for data: volume 0's metadata budget left out. */
function capacity(c: FsCore, v: number): number {
  return c.free[v].hi - c.free[v].lo - (v === 0 ? metaBudget(c) : 0)
}
