// Snapshots, clones, revert, and the sharing views (extent maps with reference
// counts, unique bytes, compare). A snapshot is an inode outside the tree whose
// extent map shares the file's blocks; each change is one op through core.exec.
import type { FsCore } from './core'
import { MapEntry, STAMP_GEN, S_IFREG, SnapshotInfo, Stat, checkId, checkMode, checkName, err } from './inode'
import { ensureMeta, metaNearFull } from './journal'
import { BS, isArchive } from './layout'
import type { Extent } from './extents'
import { locationName, read, sharedPieces } from './data'

/**
 * Snapshot a file: one journal op, whatever the file's size (the snapshot shares
 * every block; the first later write to a shared block copies it). The file's I/O in
 * flight drains first, so the snapshot holds every write acknowledged before the call
 * and none begun after; it is durable when this resolves.
 */
export async function snapshot(c: FsCore, path: string, name: string): Promise<SnapshotInfo> {
  checkName(name)
  for (;;) {
    c.live()
    const n = c.regular(path)
    if (n.snaps?.has(name)) throw err('EEXIST', `snapshot ${name} of ${path} already exists`)
    if (metaNearFull(c, 400)) { await ensureMeta(c, 400); continue }
    if (n.busy) { await c.drain(n); continue }
    c.exec({ o: 'sn', i: n.ino, s: c.nextIno, n: name, z: n.size, t: Date.now(), st: c.stamp() })
    break
  }
  await c.commit()
  // as taken, it holds only blocks its file holds too: no unique bytes, and no walk of a
  // fragmented map to find that out (the walk cost more than taking the snapshot)
  return snapshotInfo(c, name, snapshotIno(c, path, name), false)
}

export function snapshots(c: FsCore, path: string): SnapshotInfo[] {
  c.live()
  const n = c.regular(path)
  return [...n.snaps ?? []].map(([name, i]) => snapshotInfo(c, name, i)).sort((a, b) => a.stamp - b.stamp)
}

function snapshotInfo(c: FsCore, name: string, i: number, walk = true): SnapshotInfo {
  const s = c.inodes.get(i)!
  // pool blocks deleting it would free: archived ones free none
  let unique = 0
  if (walk) {
    // a chunk another map shares holds no block only this one does
    const own: Extent[] = []
    s.ext.forEachChunk((ex, shared) => { if (!shared) for (const e of ex) own.push(e) })
    c.byVolume(own).forEach((b, v) => { unique += c.refs[v].unsharedIn(b) })
  }
  return { name, ino: i, size: s.size, created: s.ctime, stamp: s.stamp, uniqueBytes: unique * BS }
}

/** Inode number of snapshot `name` of a file. */
export function snapshotIno(c: FsCore, path: string, name: string): number {
  c.live()
  const i = c.regular(path).snaps?.get(name)
  if (i === undefined) throw err('ENOENT', `no snapshot ${name} of ${path}`)
  return i
}

/** Delete a snapshot; the blocks no other file, snapshot or clone holds are freed. */
export async function deleteSnapshot(c: FsCore, path: string, name: string): Promise<void> {
  for (;;) {
    const i = snapshotIno(c, path, name)
    const s = c.inodes.get(i)!
    if (s.busy) { await c.drain(s); continue }
    c.exec({ o: 'sd', s: i, t: Date.now() })
    break
  }
  await c.commit()
}

/** The file's contents become its snapshot's (size too); the snapshot stays. */
export async function revert(c: FsCore, path: string, name: string): Promise<void> {
  for (;;) {
    const i = snapshotIno(c, path, name)
    const n = c.regular(path)
    if (n.busy) { await c.drain(n); continue }
    c.exec({ o: 'rv', i: n.ino, s: i, t: Date.now(), st: c.stamp() })
    c.dirtyAttrs.add(n.ino)
    break
  }
  await c.commit()
}

/** A new writable file sharing every block of a snapshot; no data is copied. */
export async function clone(c: FsCore, path: string, name: string, newPath: string, opts: { mode?: number; uid?: number; gid?: number } = {}): Promise<number> {
  const mode = opts.mode ?? 0o644, uid = opts.uid ?? 0, gid = opts.gid ?? 0
  checkMode(mode); checkId(uid, 'uid'); checkId(gid, 'gid')
  for (;;) {
    const si = snapshotIno(c, path, name)
    const s = c.inodes.get(si)!
    const { dir, name: leaf } = c.resolveParent(newPath)
    if (dir.entries!.has(leaf)) throw err('EEXIST', `already exists: ${newPath}`)
    if (metaNearFull(c, 400)) { await ensureMeta(c, 400); continue }
    const ino = c.nextIno
    c.exec({ o: 'cl', s: si, p: dir.ino, n: leaf, i: ino, m: S_IFREG | (mode & 0o7777), u: uid, g: gid, t: Date.now(), v: s.vol, st: c.stamp() })
    await c.commit()
    return ino
  }
}

/**
 * A reflink copy: file dst's whole blocks at dstOff take src's (a file or a snapshot) at
 * srcOff, shared, with no data copied; the first later write to either copies the block.
 * Offsets and length are whole blocks; a file's range onto itself must not overlap.
 * Returns false, changing nothing, when dst already maps one of those blocks elsewhere
 * (a second copy of the same range into one file, or a share within a file): a map holds
 * a block at most once, so the caller copies the data instead.
 */
export async function shareRange(c: FsCore, src: number, srcOff: number, dst: number, dstOff: number, len: number): Promise<boolean> {
  if ([srcOff, dstOff, len].some((x) => !Number.isSafeInteger(x) || x < 0 || x % BS)) throw err('EINVAL', `share of ${srcOff}+${len} to ${dstOff} is not whole ${BS}-byte blocks`)
  if (src === dst && srcOff < dstOff + len && dstOff < srcOff + len) throw err('EINVAL', 'a range shared within one file must not overlap itself')
  if (len === 0) return true
  for (;;) {
    c.live()
    const s = c.fileNode(src), n = c.fileNode(dst)
    if (n.snapOf) throw err('EROFS', 'a snapshot is read-only')
    // one 'sr' op, whatever the source's extent count: the maps live in the trees, not the checkpoint
    if (metaNearFull(c, 400)) { await ensureMeta(c, 400); continue }
    // writes in flight land first, so the copy holds every write acknowledged before the call
    if (s.busy) { await c.drain(s); continue }
    if (n.busy) { await c.drain(n); continue }
    const b0 = srcOff / BS, d = dstOff / BS
    if (mapsAnyOutside(n.ext, s.ext.segments(b0, b0 + len / BS), d, d + len / BS)) return false
    c.exec({ o: 'sr', s: src, b0, b1: b0 + len / BS, i: dst, d, z: dstOff + len, t: Date.now(), st: c.stamp() })
    return true
  }
}

/** Does a map (its extents) hold any block of runs at file blocks outside [d0, d1), which a share there replaces? */
function mapsAnyOutside(map: Iterable<Extent>, runs: { vol: number; pb: number; len: number }[], d0: number, d1: number): boolean {
  const held = runs.filter((r) => r.pb >= 0).sort((a, b) => a.vol - b.vol || a.pb - b.pb)
  if (!held.length) return false
  const hits = (vol: number, pb: number, len: number) => {
    let lo = 0, hi = held.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const r = held[mid]
      if (r.vol < vol || (r.vol === vol && r.pb + r.len <= pb)) lo = mid + 1; else hi = mid
    }
    return lo < held.length && held[lo].vol === vol && held[lo].pb < pb + len
  }
  for (const e of map) {
    if (e.fb < d0 && hits(e.vol, e.pb, Math.min(e.len, d0 - e.fb))) return true
    const after = Math.max(e.fb, d1)
    if (after < e.fb + e.len && hits(e.vol, e.pb + after - e.fb, e.fb + e.len - after)) return true
  }
  return false
}

/** Blocks of a file (or snapshot) that another file, snapshot or clone also holds. */
export function sharedBlocks(c: FsCore, ino: number): number {
  c.live()
  let shared = 0
  const m = c.node(ino).ext
  for (const e of m) if (!isArchive(e.vol)) for (const pc of sharedPieces(c, m, e)) if (pc.shared) shared += pc.len
  return shared
}

/** Size in blocks of the file's block address space ([0, blocks) covers every extent). */
export function blockSpan(c: FsCore, ino: number): number {
  return c.node(ino).ext.end()
}

/**
 * Allocated extents of a file or snapshot, split where the sharing changes, in file
 * order: up to `limit` of them starting at byte `from` or later (a page of a fragmented
 * disk's map costs the page, not the map).
 */
export function extentMap(c: FsCore, ino: number, from = 0, limit = Infinity): MapEntry[] {
  c.live()
  const out: MapEntry[] = []
  const m = c.node(ino).ext
  for (const e of m.from(Math.floor(from / BS))) {
    for (const pc of isArchive(e.vol) ? [{ ...e, shared: false }] : sharedPieces(c, m, e)) {
      const offset = pc.fb * BS
      if (offset < from) continue
      if (out.length >= limit) return out
      out.push({ offset, length: pc.len * BS, volume: locationName(c, e.vol), physical: pc.pb * BS, shared: pc.shared })
    }
  }
  return out
}

/** The allocated byte range (neighbouring extents merged) holding byte `offset`, or the first after it; null past the last (lseek's SEEK_DATA/SEEK_HOLE). */
export function dataRun(c: FsCore, ino: number, offset: number): [number, number] | null {
  c.live()
  let run: [number, number] | null = null
  for (const e of c.node(ino).ext.from(Math.floor(offset / BS))) {
    if (run && e.fb * BS > run[1]) break
    if (run) run[1] = (e.fb + e.len) * BS
    else run = [e.fb * BS, (e.fb + e.len) * BS]
  }
  return run
}

/** Size, mode, stamp of any inode, snapshots included. */
export function statIno(c: FsCore, ino: number): Stat & { stamp: number } {
  c.live()
  const n = c.node(ino)
  return { ...c.stat(n), stamp: n.stamp }
}

/**
 * Byte-compare two files or snapshots; ranges mapped to the same blocks (or both
 * holes) are equal without reading. Returns the first differing offset, or -1.
 */
export async function compare(c: FsCore, a: number, b: number): Promise<number> {
  const na = c.node(a), nb = c.node(b)
  const size = Math.max(na.size, nb.size)
  const CH = 256
  const ba = Buffer.alloc(CH * BS), bb = Buffer.alloc(CH * BS)
  for (let blk = 0; blk * BS < size; blk += CH) {
    const sa = na.ext.segments(blk, blk + CH), sb = nb.ext.segments(blk, blk + CH)
    const same = na.size === nb.size && sa.length === sb.length && sa.every((x, k) => x.vol === sb[k].vol && x.pb === sb[k].pb && x.len === sb[k].len)
    if (same) continue
    const len = Math.min(CH * BS, size - blk * BS)
    ba.fill(0); bb.fill(0)
    await read(c, a, ba.subarray(0, len), blk * BS)
    await read(c, b, bb.subarray(0, len), blk * BS)
    if (!ba.subarray(0, len).equals(bb.subarray(0, len))) {
      for (let k = 0; k < len; k++) if (ba[k] !== bb[k]) return blk * BS + k
    }
  }
  return na.size === nb.size ? -1 : Math.min(na.size, nb.size)
}

/** The newest stamp handed out (generation << 32 | counter). */
export function lastStamp(c: FsCore): number {
  return c.gen * STAMP_GEN + c.ctr
}
