// The fs's volumes: mkfs and mount (the superblock on volume 0 names them; labels order
// the rest), adding one online, removing one (after remove-volume's job emptied it),
// placement of new files, and per-volume views of space and of a file's extents.
import { randomBytes, randomUUID } from 'crypto'
import { BlockDev } from '../block/blockdev'
import { ArchiveLocation, FsCore } from './core'
import { locationName } from './data'
import { Dir } from './dir'
import { FreeMap, RefMap } from './extents'
import { Inode, ROOT, S_IFDIR, err } from './inode'
import { BtStore } from './btree/store'
import { captureInodes, load, serialize } from './journal'
import {
  ARCHIVE_BASE, BS, SB_VERSION, Superblock, clearLabel, encodeCheckpoint, planLayout, probeVolume, readLabel, readSuperblock,
  superblockFits, writeLabel, writeSuperblock,
} from './layout'
import { PLACEMENT_XATTR, parseRules, pick } from './placement'

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

/** journalBytes overrides the journal size (tests use a small one to exercise wrap and checkpoints). */
export async function mkfs(volumes: BlockDev[], opts: { volumeNames?: string[]; journalBytes?: number } = {}): Promise<void> {
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
    ...plan, store: [plan.dataStart, plan.dataStart + 1], created: Date.now(),
  }
  const fs = new FsCore(volumes, sb)
  const now = Date.now()
  const root = new Inode(ROOT, S_IFDIR | 0o755, 0, 0, 0, 2, now, now, now, 0, ROOT)
  root.entries = new Dir()
  fs.inodes.set(ROOT, root)
  // invalidate anything a previous fs left in the second checkpoint slot and the journal
  await volumes[0].write(Buffer.alloc(BS), sb.ckpt[1])
  await volumes[0].write(Buffer.alloc(BS), sb.journal)
  fs.seq = 1
  fs.nonce = randomBytes(4).readUInt32LE(0)
  await BtStore.format(volumes[0], sb.store!)
  const ck = encodeCheckpoint({ seq: fs.seq++, nonce: fs.nonce, jstart: 0, len: 0 }, serialize(captureInodes(fs), new Map(), 1))
  if (ck.length > sb.ckptLen) throw err('ENOSPC', 'checkpoint area too small')
  await volumes[0].write(ck, sb.ckpt[0])
  for (let i = 1; i < volumes.length; i++) await writeLabel(volumes[i], sb.uuid, i)
  for (const v of volumes) await v.flush()
  // the superblock last: a torn mkfs leaves no mountable fs
  await writeSuperblock(volumes[0], sb)
}

export async function mount(volumes: BlockDev[], opts: { volumeNames?: string[] } = {}): Promise<FsCore> {
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
  const fs = new FsCore(ordered, sb)
  await load(fs)
  return fs
}

/** Names and sizes of the volumes, index = placement number for create(); a removed one keeps its slot. */
export function volumes(c: FsCore): { name: string; size: number; removed?: true }[] {
  return c.sb.volumes.map((v) => ({ ...v }))
}

/** Names of the volumes the fs spans now, in fs order. */
export function volumeNames(c: FsCore): string[] {
  return c.sb.volumes.filter((v) => !v.removed).map((v) => v.name)
}

/** Placement number of a volume of the fs by name. */
export function volumeIndex(c: FsCore, name: string): number {
  const i = c.sb.volumes.findIndex((v) => v.name === name && !v.removed)
  if (i < 0) throw err('ENOENT', `volume ${name} is not part of the file system (it spans ${volumeNames(c).join(', ')})`)
  return i
}

export function serialVolumes<T>(c: FsCore, f: () => Promise<T>): Promise<T> {
  const run = c.volChange.then(f, f)
  c.volChange = run.catch(() => undefined)
  return run
}

/** The next superblock: same layout, one more seq. */
export function nextSuperblock(c: FsCore, volumes: Superblock['volumes']): Superblock {
  const sb: Superblock = { ...c.sb, version: SB_VERSION, seq: (c.sb.seq ?? 0) + 1, volumes }
  if (!superblockFits(sb)) throw err('ENOSPC', 'the superblock has no room for another volume')
  return sb
}

/**
 * Add a volume to the mounted fs: its label first, then a superblock listing it. A
 * crash between leaves the old fs (the label alone makes nothing part of it, and a
 * label of this fs on a volume it does not list may be taken again); after, the new.
 */
export function addVolume(c: FsCore, dev: BlockDev, name: string): Promise<{ name: string; size: number; index: number }> {
  return serialVolumes(c, async () => {
    c.live()
    if (typeof name !== 'string' || !name) throw err('EINVAL', 'volume name expected')
    if (volumeNames(c).includes(name)) throw err('EEXIST', `volume ${name} is already part of the file system`)
    if (dev.size < 2 * BS) throw err('ENOSPC', `volume ${name} too small (${dev.size} bytes)`)
    const p = await probeVolume(dev)
    if (!(p.kind === 'blank' || (p.kind === 'member' && p.uuid === c.sb.uuid))) await refuseFormatted(dev, name)
    const index = c.sb.volumes.length
    const size = Math.floor(dev.size / BS) * BS
    const sb = nextSuperblock(c, [...c.sb.volumes, { size, name }])
    await writeLabel(dev, sb.uuid, index)
    await dev.flush()
    await writeSuperblock(c.vols[0], sb)
    c.vols.push(dev)
    c.free.push(FreeMap.fromAllocated(1, size / BS, [], []))
    c.refs.push(new RefMap())
    c.sb = sb
    c.events.publish('fs.volume-added', { volume: name, size, index })
    return { name, size, index }
  })
}

/** A volume files can be placed on: in the fs and not removed. */
export function placeable(c: FsCore, v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0 || v >= c.vols.length || c.sb.volumes[v].removed) throw err('EINVAL', `${what}: no volume ${v} in the fs`)
  if (c.draining.has(v)) throw err('EBUSY', `${what}: volume ${c.sb.volumes[v].name} is being removed from the fs`)
}

/**
 * Start removing a volume: from now on nothing is placed on it, and every file and
 * snapshot placed there is placed on `to` instead. The caller then relocates what
 * `inodesOn()` lists and calls finishRemove(). Volume 0 holds the metadata: never.
 */
export function beginRemove(c: FsCore, name: string, to: number): number {
  c.live()
  const v = volumeIndex(c, name)
  if (v === 0) throw err('EBUSY', `volume ${name} holds the fs metadata and cannot be removed`)
  if (c.draining.has(v)) throw err('EBUSY', `volume ${name} is already being removed`)
  placeable(c, to, 'remove-volume')
  if (to === v) throw err('EINVAL', 'remove-volume: the target is the volume being removed')
  c.draining.add(v)
  for (const n of c.inodes.values()) if (!n.isDir && n.vol === v) c.exec({ o: 'pv', i: n.ino, v: to })
  return v
}

/** Files and snapshots with blocks on volume v. */
export function inodesOn(c: FsCore, v: number): number[] {
  const out: number[] = []
  for (const n of c.inodes.values()) for (const e of n.ext) if (e.vol === v) { out.push(n.ino); break }
  return out
}

/** A remove-volume that stopped (cancelled, failed): the volume takes new files again. */
export function cancelRemove(c: FsCore, v: number): void {
  c.draining.delete(v)
}

/**
 * Drop an emptied volume: the relocations are made durable first, then a superblock
 * marks its slot removed (its number is never reused, so no extent changes meaning),
 * then its label is cleared so the pool can reuse or delete it. A crash before the
 * superblock leaves it in the fs (empty); after, out of it, maybe with a stale label
 * that add-volume accepts again.
 */
export function finishRemove(c: FsCore, v: number): Promise<{ name: string }> {
  return serialVolumes(c, async () => {
    c.live()
    if (!c.draining.has(v)) throw err('EINVAL', `volume ${v} is not being removed`)
    const left = inodesOn(c, v)
    if (left.length) throw err('EBUSY', `volume ${c.sb.volumes[v].name} still holds blocks of ${left.length} file(s)`)
    await c.commit()
    const name = c.sb.volumes[v].name
    const sb = nextSuperblock(c, c.sb.volumes.map((x, i) => (i === v ? { ...x, removed: true as const } : x)))
    await writeSuperblock(c.vols[0], sb)
    const dev = c.vols[v]
    c.sb = sb
    c.vols[v] = REMOVED
    c.free[v] = FreeMap.fromAllocated(1, 1, [], [])
    c.refs[v] = new RefMap()
    c.draining.delete(v)
    await clearLabel(dev)
    await dev.flush()
    return { name }
  })
}

/** The volume placement policy gives a new file at `path`: the nearest directory's rules that say something (src/fs/placement.ts). */
export function placementFor(c: FsCore, path: string): number {
  c.live()
  const { dir, name } = c.resolveParent(path)
  const live = volumeNames(c)
  for (let d = dir; ; d = c.inodes.get(d.parent)!) {
    const v = pick(parseRules(d.xattr.get(PLACEMENT_XATTR)), name, (x) => live.includes(x))
    if (v !== null) return volumeIndex(c, v)
    if (d.ino === ROOT) return 0
  }
}

/** New blocks of file `ino` go to volume `vol` from now on (fs move sets it before relocating). */
export function setPlacement(c: FsCore, ino: number, vol: number): void {
  c.live()
  placeable(c, vol, 'placement')
  const n = c.fileNode(ino)
  if (n.vol !== vol) c.exec({ o: 'pv', i: ino, v: vol })
}

/** The volume new blocks of file `ino` go to (its placement). */
export function placementVolume(c: FsCore, ino: number): string {
  c.live()
  return c.sb.volumes[c.fileNode(ino).vol].name
}

/** Makes archive slot `slot` reachable as location ARCHIVE_BASE + slot (returned): the HSM attaches each archive tier at start. */
export function attachArchive(c: FsCore, slot: number, dev: ArchiveLocation): number {
  if (!Number.isSafeInteger(slot) || slot < 0 || slot >= ARCHIVE_BASE) throw err('EINVAL', `bad archive slot ${slot}`)
  c.archives.set(ARCHIVE_BASE + slot, dev)
  return ARCHIVE_BASE + slot
}

/** Per volume (or archive tier), the bytes a file's (or snapshot's) extents occupy there. */
export function placementOf(c: FsCore, ino: number): Record<string, number> {
  c.live()
  const out: Record<string, number> = {}
  for (const e of c.node(ino).ext) {
    const name = locationName(c, e.vol)
    out[name] = (out[name] ?? 0) + e.len * BS
  }
  return out
}
