// Data I/O and remapping: reads, writes (overwrite in place, allocate, copy-on-write of
// shared blocks), unshare (flatten's step), truncate and punch hole. Every byte of file
// data reaches a device through locate(): the one place a mapped run becomes a device
// and offset; an archive tier outside the pool is one more case there. A live file's
// archived range is recalled into the pool when read (with a little read-ahead) and
// counts as shared when written: a write lands in the pool, and a block it changes only
// in part is recalled first (unshare), so a write recalls only what it does not cover.
import { BlockDev, WriteAck } from '../block/blockdev'
import type { FsCore } from './core'
import { Extent, ExtentMap, Segment } from './extents'
import { FileRef, Inode, MAX_FILE_SIZE, err } from './inode'
import { ensureMeta, metaNearFull } from './journal'
import { ARCHIVE_BASE, BS, isArchive } from './layout'
import { relocate } from './remap'
import { noSpace, spare } from './space'
import { markDirty } from './trees'

/** Blocks recalled past the end of a read of an archived range: 256 KiB. */
const READAHEAD_BLOCKS = 64

/** Where a byte of an fs volume lives: a device and the offset there. */
export interface Location { dev: BlockDev; offset: number }

/**
 * The one function that resolves a mapped run's position (volume `vol`, byte `pos` =
 * physical block * BS + offset in it) to the device that holds it. Every read and
 * write of file data goes through here (readAt/writeAt): a volume of the fs, or an
 * archive tier the HSM attached (EIO while it is not).
 */
export function locate(c: FsCore, vol: number, pos: number): Location {
  if (!isArchive(vol)) return { dev: c.vols[vol], offset: pos }
  const a = c.archives.get(vol)
  if (!a) throw err('EIO', `archived data in archive slot ${vol - ARCHIVE_BASE} is not reachable: its tier is not attached`)
  return { dev: a, offset: pos }
}

/** The name of where a mapped run lives: its volume's, or its archive tier's. */
export function locationName(c: FsCore, vol: number): string {
  return isArchive(vol) ? c.archives.get(vol)?.name ?? `archive-slot-${vol - ARCHIVE_BASE}` : c.sb.volumes[vol].name
}

/** A piece of a mapped run and whether another map holds it too. */
export interface SharedPiece extends Extent { shared: boolean }

/**
 * The pieces of a mapped run of map `m` (an extent or part of one), each with whether
 * another map holds it too: all of it when m shares the run's chunk (a snapshot or
 * clone not yet diverged there), else as the block counts say. An archived run counts
 * as shared: it is never written in place, a write gets fresh pool blocks instead.
 */
export function sharedPieces(c: FsCore, m: ExtentMap, r: Extent): SharedPiece[] {
  const whole = (shared: boolean) => [{ fb: r.fb, vol: r.vol, pb: r.pb, len: r.len, shared }]
  if (isArchive(r.vol) || m.sharedAt(r.fb)) return whole(true)
  if (!c.refs[r.vol].anyShared(r.pb, r.len)) return whole(false)
  return c.refs[r.vol].pieces(r.pb, r.len).map((pc) => ({ fb: r.fb + pc.start - r.pb, vol: r.vol, pb: pc.start, len: pc.len, shared: pc.n > 1 }))
}

/** Whether another map holds any block of run r of map m (see sharedPieces). */
export function anyShared(c: FsCore, m: ExtentMap, r: Extent): boolean {
  return isArchive(r.vol) || m.sharedAt(r.fb) || c.refs[r.vol].anyShared(r.pb, r.len)
}

export function readAt(c: FsCore, vol: number, buf: Buffer, pos: number): Promise<number> {
  const l = locate(c, vol, pos)
  return l.dev.read(buf, l.offset)
}

export function writeAt(c: FsCore, vol: number, buf: Buffer, pos: number, ack?: WriteAck): Promise<void> {
  const l = locate(c, vol, pos)
  return l.dev.write(buf, l.offset, ack)
}

/** `atime` false: a read on the fs's own behalf (the HSM checking a copy), not an access. */
export async function read(c: FsCore, ino: number, buf: Buffer, offset: number, atime = true): Promise<number> {
  c.live()
  let n = c.fileNode(ino)
  c.checkIo(buf, offset)
  let len: number
  let segs: Segment[]
  for (;;) {
    while (n.gate) { await n.gate; c.live(); n = c.fileNode(ino) }
    if (offset >= n.size || buf.length === 0) return 0
    len = Math.min(buf.length, n.size - offset)
    const b0 = Math.floor(offset / BS), b1 = Math.ceil((offset + len) / BS)
    const p = n.pending.length ? c.pendingOver(n, b0, b1) : null
    if (p) { await p; c.live(); n = c.fileNode(ino); continue }
    segs = n.ext.segments(b0, b1)
    // a snapshot is read from the archive where it lies; a live file brings the range home
    if (n.snapOf || !segs.some((s) => s.pb >= 0 && isArchive(s.vol))) break
    await relocate(c, ino, b0, Math.max(b1, b0 + READAHEAD_BLOCKS), n.vol, true)
    c.live()
    n = c.fileNode(ino)
  }
  const end = offset + len
  if (atime) {
    c.touchAtime(n)
    if (!n.snapOf) c.onAccess?.(ino, Math.floor(offset / BS), Math.ceil(end / BS))
  }
  const ios: Promise<number>[] = []
  for (const s of segs) {
    const ss = s.fb * BS
    const ds = Math.max(ss, offset), de = Math.min(ss + s.len * BS, end)
    if (s.pb < 0) buf.fill(0, ds - offset, de - offset)
    else ios.push(readAt(c, s.vol, buf.subarray(ds - offset, de - offset), s.pb * BS + (ds - ss)))
  }
  if (ios.length) {
    n.inflight++; c.inflight++
    try { await Promise.all(ios) } finally { c.endIo(n, null) }
  }
  return len
}

/**
 * `ack` (the caller's early answer, WriteAck) goes down with an overwrite in place only: a
 * write that maps blocks is over when its `ex` is logged, after its I/O.
 */
export async function write(c: FsCore, ino: number, buf: Buffer, offset: number, ack?: WriteAck): Promise<number> {
  c.live()
  let n = c.fileNode(ino)
  c.checkIo(buf, offset)
  if (n.snapOf) throw err('EROFS', 'a snapshot is read-only')
  const len = buf.length
  if (len === 0) return 0
  const end = offset + len
  const b0 = Math.floor(offset / BS), b1 = Math.ceil(end / BS)
  c.onAccess?.(ino, b0, b1)
  for (;;) {
    while (n.gate) { await n.gate; c.live(); n = c.fileNode(ino) }
    if (metaNearFull(c, 1000)) { await ensureMeta(c, 1000); c.live(); n = c.fileNode(ino); continue }
    // wait for allocating writes in flight on the blocks this one touches
    const p = n.pending.length ? c.pendingOver(n, Math.floor(Math.min(offset, n.size) / BS), b1) : null
    if (p) { await p; c.live(); n = c.fileNode(ino); continue }
    // a block this write changes only in part must be private first (read, copy, remap)
    const partial: number[] = []
    if (offset % BS) partial.push(b0)
    if (end % BS) partial.push(b1 - 1)
    if (offset > n.size && n.size % BS) partial.push(Math.floor(n.size / BS))
    const sh = partial.find((b) => sharedBlock(c, n, b))
    if (sh === undefined) break
    await unshare(c, ino, sh, sh + 1)
    c.live()
    n = c.fileNode(ino)
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
  const segs: SharedPiece[] = []
  let fresh = 0
  for (const sg of n.ext.segments(b0, b1)) {
    if (sg.pb < 0) { segs.push({ ...sg, shared: false }); fresh += sg.len; continue }
    for (const pc of sharedPieces(c, n.ext, sg)) {
      segs.push(pc)
      if (pc.shared) fresh += pc.len
    }
  }
  const allocs: Extent[] = []
  const replaced: Extent[] = []
  if (fresh) {
    if (fresh > spare(c, vol)) throw noSpace(c, ino, vol, fresh)
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
    const got = c.free[vol].alloc(s.len, prev && prev.vol === vol ? prev.pb + 1 : -1)!
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
  n.stamp = c.stamp()
  if (allocs.length || newSize !== oldSize) { c.dirtyAttrs.add(ino); c.armTimer() } else c.lazyAttrs.add(ino)
  const p = allocs.length || pb0 < b0 ? c.addPending(n, pb0, b1, allocs, replaced) : null
  // answered early, the write is durable by the next commit only if that commit flushes its volumes
  const early = p || !io.length ? undefined : ack
  if (early) { for (const [v] of io) c.dirtyVols.add(v); early.split(io.length) }
  n.inflight++; c.inflight++
  let ok = false
  try {
    if (io.length === 1) await writeAt(c, io[0][0], io[0][1], io[0][2], early)
    else await Promise.all(io.map(([v, b, o]) => writeAt(c, v, b, o, early)))
    ok = true
  } finally {
    for (const [v] of io) c.dirtyVols.add(v)
    settle(c, n, allocs, replaced, ok)
    c.endIo(n, p)
  }
  return len
}

export function sharedBlock(c: FsCore, n: Inode, fb: number): boolean {
  const m = n.ext.lookup(fb)
  return !!m && anyShared(c, n.ext, { fb, vol: m.vol, pb: m.pb, len: 1 })
}

/**
 * End of an I/O that mapped `allocs` in place of `replaced`: on success log the new
 * mapping and drop the references the old one held; on failure nothing was logged or
 * made durable, so the blocks go straight back and the old mapping returns.
 */
export function settle(c: FsCore, n: Inode, allocs: Extent[], replaced: Extent[], ok: boolean) {
  if (!ok) {
    for (const a of allocs) { n.ext.punch(a.fb, a.fb + a.len); c.free[a.vol].release(a.pb, a.len) }
    for (const r of replaced) n.ext.insert(r.fb, r.vol, r.pb, r.len)
    return
  }
  if (!allocs.length) return
  const e: number[] = []
  for (const a of allocs) { e.push(a.fb, a.vol, a.pb, a.len); markDirty(c, n, a.fb, a.fb + a.len) }
  // the map already holds them (mapped when the I/O began): logged, not applied
  c.log({ o: 'ex', i: n.ino, e, st: n.stamp })
  c.unref(replaced)
}

/**
 * Give file `ino` private copies of the shared blocks in [b0, b1): copy-on-write ahead
 * of a write that changes a shared block in part, and the step of flatten. Shared
 * blocks are never written in place, so reading them while remapping is safe; the
 * range is pending meanwhile, so the file's own reads and writes there wait.
 * Returns the number of blocks copied.
 */
export async function unshare(c: FsCore, ino: number, b0: number, b1: number): Promise<number> {
  let n = c.fileNode(ino)
  for (;;) {
    c.live()
    while (n.gate) { await n.gate; c.live(); n = c.fileNode(ino) }
    const p = c.pendingOver(n, b0, b1)
    if (!p) break
    await p
    n = c.fileNode(ino)
  }
  if (n.snapOf) throw err('EROFS', 'a snapshot is read-only')
  const shared: Extent[] = []
  for (const sg of n.ext.segments(b0, b1)) {
    if (sg.pb < 0) continue
    for (const pc of sharedPieces(c, n.ext, sg)) if (pc.shared) shared.push({ fb: pc.fb, vol: pc.vol, pb: pc.pb, len: pc.len })
  }
  if (!shared.length) return 0
  const vol = n.vol
  const count = shared.reduce((a, x) => a + x.len, 0)
  if (count > spare(c, vol)) throw noSpace(c, ino, vol, count)
  const allocs: Extent[] = [], replaced: Extent[] = []
  const io: { from: Extent; to: Extent }[] = []
  for (const s of shared) {
    replaced.push(...n.ext.punch(s.fb, s.fb + s.len))
    const prev = n.ext.lookup(s.fb - 1)
    let fb = s.fb
    for (const r of c.free[vol].alloc(s.len, prev && prev.vol === vol ? prev.pb + 1 : -1)!) {
      const to = { fb, vol, pb: r.start, len: r.len }
      n.ext.insert(fb, vol, r.start, r.len)
      allocs.push(to)
      io.push({ from: { fb, vol: s.vol, pb: s.pb + (fb - s.fb), len: r.len }, to })
      fb += r.len
    }
  }
  n.stamp = c.stamp()
  c.stateChanged.add(n.ino)
  const p = c.addPending(n, b0, b1, allocs, replaced)
  n.inflight++; c.inflight++
  let ok = false
  try {
    for (const { from, to } of io) {
      const b = Buffer.allocUnsafe(from.len * BS)
      await readAt(c, from.vol, b, from.pb * BS)
      await writeAt(c, to.vol, b, to.pb * BS)
      c.dirtyVols.add(to.vol)
    }
    ok = true
  } finally {
    settle(c, n, allocs, replaced, ok)
    c.endIo(n, p)
  }
  return count
}

export async function truncate(c: FsCore, path: FileRef, size: number): Promise<void> {
  if (!Number.isSafeInteger(size) || size < 0) throw err('EINVAL', `bad size ${size}`)
  if (size > MAX_FILE_SIZE) throw err('EFBIG', `size ${size} beyond the maximum file size`)
  let zeroed: [Inode, number] | null = null
  for (;;) {
    c.live()
    const n = c.regular(path)
    if (n.busy) { await c.drain(n); continue }
    if (size > n.size && n.size % BS && !(zeroed && zeroed[0] === n && zeroed[1] === n.size)) {
      // bytes past EOF in the last block may be stale: zero them before they become visible
      const m = n.ext.lookup(Math.floor(n.size / BS))
      if (m && sharedBlock(c, n, Math.floor(n.size / BS))) { await unshare(c, n.ino, Math.floor(n.size / BS), Math.floor(n.size / BS) + 1); continue }
      if (m) {
        const old: number = n.size, gb = Math.floor(old / BS)
        const zlen = Math.min((gb + 1) * BS, size) - old
        const p = c.addPending(n, gb, gb + 1, [], [])
        n.inflight++; c.inflight++
        try { await writeAt(c, m.vol, Buffer.alloc(zlen), m.pb * BS + (old % BS)) }
        finally { c.dirtyVols.add(m.vol); c.endIo(n, p) }
        zeroed = [n, old]
        continue
      }
    }
    c.exec({ o: 'tr', i: n.ino, s: size, t: Date.now(), st: c.stamp() })
    return
  }
}

/** Deallocate the whole blocks inside [offset, offset+length) and zero the partial edges. */
export async function punchHole(c: FsCore, ino: number, offset: number, length: number): Promise<void> {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) throw err('EINVAL', `bad range ${offset}+${length}`)
  for (;;) {
    c.live()
    const n = c.fileNode(ino)
    const end = Math.min(offset + length, n.size)
    if (end <= offset) return
    if (n.busy) { await c.drain(n); continue }
    const b0 = Math.ceil(offset / BS), b1 = Math.floor(end / BS)
    // partial edges: plain zero writes (through the normal write path)
    const edges: [number, number][] = []
    if (b0 > b1) edges.push([offset, end])
    else {
      if (offset < b0 * BS) edges.push([offset, b0 * BS])
      if (end > b1 * BS && b1 * BS >= offset) edges.push([b1 * BS, end])
    }
    for (const [s, e] of edges) {
      if (n.ext.lookup(Math.floor(s / BS))) await write(c, ino, Buffer.alloc(e - s), s)
    }
    if (n.busy) { await c.drain(n) }
    c.live()
    if (c.inodes.get(ino) !== n) throw err('ENOENT', `no inode ${ino}`)
    if (b1 > b0) c.exec({ o: 'ph', i: ino, b0, b1, t: Date.now(), st: c.stamp() })
    return
  }
}
