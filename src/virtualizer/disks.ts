// Virtual disks: every regular file of the fs can serve as a raw disk; `disk create`
// makes a sparse one and records its policies (placement now, replication and
// tiering for the later components) in an xattr of the file, so they travel with it.
// Snapshots, revert, clones and flatten are the fs's shared extents (src/fs/README.md);
// this layer names them (DISK@SNAP, .snapshots/DISK/SNAP), guards them and runs flatten as a job.
import { VsmError } from '../block/blockdev'
import type { Jobs } from '../control/jobs'
import type { EventSink } from '../control/events'
import type { FileSystem } from '../fs'
import type { SnapshotInfo } from '../fs/inode'
import type { WriteGate } from './gate'
import type { Change } from './fuse-view'
import { parseMode, resolveOwner } from './owner'
import { SNAPDIR, diskPath, splitSnapshotRef } from './paths'

/** The xattr holding a disk's record; the FUSE view hides the 'vsm.' namespace. */
export const DISK_XATTR = 'vsm.disk'
const DEFAULT_FREEZE_MS = 60_000
const MAX_DISK = 2 ** 46 // 64 TiB: thin, but past this a typo is likelier than intent
const S_IFMT = 0o170000, S_IFREG = 0o100000, S_IFDIR = 0o040000

export interface DiskPolicies {
  volume: string
  replication: null | { group: string }
  tiering: null | { policy: string }
}

export interface DiskRecord {
  created: number
  policies: DiskPolicies
  /** DISK@SNAP a clone was made from, until it is flattened. */
  origin?: string | null
}

export interface SnapshotView { disk: string; name: string; size: number; created: number; stamp: string; uniqueBytes: number }

/** A 64-bit ordering stamp (generation << 32 | counter) as exact decimal text. */
export const stampText = (st: number) => BigInt(st).toString()

function snapshotView(path: string, x: SnapshotInfo): SnapshotView {
  return { disk: path.slice(1), name: x.name, size: x.size, created: x.created, stamp: stampText(x.stamp), uniqueBytes: x.uniqueBytes }
}

/** Extents in a disk.map reply unless the caller asks for fewer (or more, up to MAP_PAGE). */
const MAP_DEFAULT_PAGE = 8192
const FLATTEN_CHUNK = 256 // blocks: 1 MiB per step, so a guest's I/O waits at most one step

export interface DiskInfo {
  path: string
  size: number
  allocated: number
  managed: boolean
  policies: DiskPolicies | null
  created: number | null
  mtime: number
  uid: number
  gid: number
  /** Permission bits (07777). */
  mode: number
  open: number
  /** Epoch ms at which a frozen disk thaws itself; null when not frozen. */
  frozenUntil: number | null
  origin: string | null
  snapshots: number
  /** Ordering stamp of the latest change to the disk's data. */
  stamp: string
}

/** What the disk manager needs from its surroundings, kept explicit for tests. */
export interface DiskEnv {
  fs: FileSystem
  /** Index of a volume in the fs (adding it to the fs if needed); throws ENOENT for an unknown volume. */
  volumeIndex(name: string): Promise<number>
  /** The volume placement policy gives a new disk at this path. */
  defaultVolume(path: string): string
  /** How many handles the FUSE view holds open on a path. */
  openCount(path: string): number
  /** How many of them may write. */
  writerCount(path: string): number
  /** A disk changed here, outside the view: the view drops what the kernel cached of it (its size, pages, name). */
  changed(path: string, how: Change): Promise<void>
  gate: WriteGate
  jobs: Jobs
  /** Where each change to a disk is reported (logged and streamed). */
  events: EventSink
}

/** The logical sector of every disk: sizes, and O_DIRECT I/O through the view, are whole sectors. */
export const SECTOR = 512

export function checkSize(size: unknown, what = 'size'): number {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) throw new VsmError('EINVAL', `${what} must be a positive whole number of bytes`)
  if (size % SECTOR) throw new VsmError('EINVAL', `${what} must be a multiple of ${SECTOR} bytes (got ${size})`)
  if (size > MAX_DISK) throw new VsmError('EFBIG', `${what} ${size} exceeds the 64 TiB disk limit`)
  return size
}

export class DiskManager {
  constructor(private readonly env: DiskEnv) {}

  /** owner: USER[:GROUP] (names or ids), root:root when absent; mode: permission bits, 0644 when absent. */
  async create(name: unknown, size: unknown, volume?: unknown, access: { owner?: unknown; mode?: unknown } = {}): Promise<DiskInfo> {
    const path = diskPath(name)
    const bytes = checkSize(size)
    if (volume !== undefined && typeof volume !== 'string') throw new VsmError('EINVAL', 'volume must be a name')
    const mode = access.mode === undefined ? 0o644 : parseMode(access.mode)
    const { uid, gid } = access.owner === undefined ? { uid: 0, gid: 0 } : await resolveOwner(access.owner)
    const { fs } = this.env
    if (this.exists(path)) throw new VsmError('EEXIST', `disk already exists: ${name}`)
    const parent = path.slice(0, path.lastIndexOf('/')) || '/'
    if (!this.exists(parent) || (fs.getattr(parent).mode & S_IFMT) !== S_IFDIR) throw new VsmError('ENOENT', `parent directory does not exist: ${parent.slice(1) || '/'}`)
    const vol = volume ?? this.env.defaultVolume(path)
    const index = await this.env.volumeIndex(vol)
    const record: DiskRecord = { created: Date.now(), policies: { volume: vol, replication: null, tiering: null } }
    await fs.create(path, mode, uid, gid, { volume: index })
    try {
      await fs.truncate(path, bytes)
      await fs.setxattr(path, DISK_XATTR, Buffer.from(JSON.stringify(record)))
      await fs.sync()
    } catch (err) {
      await fs.unlink(path).catch(() => undefined)
      throw err
    }
    this.env.events.publish('disk.created', { path: path.slice(1), size: bytes, volume: vol })
    return this.show(name)
  }

  show(name: unknown): DiskInfo {
    const path = diskPath(name)
    const st = this.stat(path)
    if ((st.mode & S_IFMT) !== S_IFREG) throw new VsmError('EISDIR', `not a disk (a directory): ${name}`)
    const raw = this.env.fs.getxattr(path, DISK_XATTR)
    const rec: DiskRecord | null = raw ? JSON.parse(raw.toString()) : null
    return {
      path: path.slice(1), size: st.size, allocated: st.blocks * 512, managed: !!rec,
      policies: rec?.policies ?? null, created: rec?.created ?? null, mtime: st.mtime,
      uid: st.uid, gid: st.gid, mode: st.mode & 0o7777,
      open: this.env.openCount(path),
      frozenUntil: this.env.gate.isFrozen(st.ino)?.until ?? null,
      origin: rec?.origin ?? null,
      snapshots: this.env.fs.snapshots(path).length,
      stamp: stampText(this.env.fs.statIno(st.ino).stamp),
    }
  }

  // ---------------------------------------------------------------- snapshots

  // Snapshot names arrive checked against the command's schema (control/args.ts: snapshotName).
  async snapshotCreate(name: unknown, snap: string): Promise<SnapshotView> {
    const path = this.diskOnly(name)
    // the fs's figures for this snapshot only: the list's walk every snapshot's map
    const x = await this.env.fs.snapshot(path, snap)
    this.env.events.publish('snapshot.created', { disk: path.slice(1), snapshot: snap })
    return snapshotView(path, x)
  }

  snapshotList(name: unknown): SnapshotView[] {
    const path = this.diskOnly(name)
    return this.env.fs.snapshots(path).map((x) => snapshotView(path, x))
  }

  async snapshotDelete(name: unknown, snap: string): Promise<{ disk: string; deleted: string; freedBytes: number }> {
    const path = this.diskOnly(name)
    const s = this.snapshotList(name).find((x) => x.name === snap)
    if (!s) throw new VsmError('ENOENT', `no snapshot ${snap} of ${name}`)
    await this.env.fs.deleteSnapshot(path, s.name)
    await this.env.changed(`/${SNAPDIR}${path}/${s.name}`, 'gone')
    this.env.events.publish('snapshot.deleted', { disk: path.slice(1), snapshot: s.name, freedBytes: s.uniqueBytes })
    return { disk: path.slice(1), deleted: s.name, freedBytes: s.uniqueBytes }
  }

  async snapshotRevert(name: unknown, snap: string, force = false): Promise<DiskInfo> {
    const path = this.diskOnly(name)
    this.env.fs.snapshotIno(path, snap)
    const writers = this.env.writerCount(path)
    if (writers && !force) throw new VsmError('EBUSY', `disk is open for writing (${writers} handle(s)): ${name}; stop the guest first or pass --force`)
    await this.env.fs.revert(path, snap)
    await this.env.changed(path, 'data')
    this.env.events.publish('disk.reverted', { path: path.slice(1), snapshot: snap, writers, forced: force }, writers ? 'warn' : 'info')
    return this.show(name)
  }

  /** DISK@SNAP → a new writable disk sharing every block of the snapshot. */
  /** The clone is root's unless access.owner names another owner; it keeps the source's mode. */
  async clone(ref: unknown, newName: unknown, access: { owner?: unknown } = {}): Promise<DiskInfo> {
    const { disk, snap } = splitSnapshotRef(ref)
    const src = this.diskOnly(disk)
    const dst = diskPath(newName)
    if (this.exists(dst)) throw new VsmError('EEXIST', `disk already exists: ${newName}`)
    const { fs } = this.env
    fs.snapshotIno(src, snap)
    const raw = fs.getxattr(src, DISK_XATTR)
    const parent: DiskRecord | null = raw ? JSON.parse(raw.toString()) : null
    const owner = access.owner === undefined ? { uid: 0, gid: 0 } : await resolveOwner(access.owner)
    await fs.clone(src, snap, dst, { ...owner, mode: fs.getattr(src).mode & 0o7777 })
    const record: DiskRecord = {
      created: Date.now(),
      policies: parent?.policies ?? { volume: fs.volumes()[0].name, replication: null, tiering: null },
      origin: `${src.slice(1)}@${snap}`,
    }
    await fs.setxattr(dst, DISK_XATTR, Buffer.from(JSON.stringify(record)))
    await fs.sync()
    this.env.events.publish('disk.cloned', { path: dst.slice(1), origin: record.origin })
    return this.show(newName)
  }

  /**
   * A job that gives a disk its own copy of every block it shares (with its origin's
   * snapshot, its own snapshots or other clones), 1 MiB at a time while the disk stays
   * in use. Returns the job id at once.
   */
  flatten(name: unknown): { job: number; path: string } {
    const path = this.diskOnly(name)
    const { fs, jobs } = this.env
    const ino = fs.lookup(path)
    const span = fs.blockSpan(ino)
    const job = jobs.start('disk.flatten', async (signal, progress) => {
      let copied = 0
      for (let b = 0; b < span; b += FLATTEN_CHUNK) {
        await progress.checkpoint()
        if (signal.aborted) throw new VsmError('ECANCELED', 'flatten cancelled')
        if (fs.lookup(path) !== ino) throw new VsmError('ENOENT', `disk ${name} went away during flatten`)
        copied += await fs.unshare(ino, b, Math.min(span, b + FLATTEN_CHUNK))
        progress(Math.min(span, b + FLATTEN_CHUNK), span)
      }
      const raw = fs.getxattr(path, DISK_XATTR)
      if (raw) {
        const rec: DiskRecord = JSON.parse(raw.toString())
        rec.origin = null
        await fs.setxattr(path, DISK_XATTR, Buffer.from(JSON.stringify(rec)))
      }
      await fs.sync()
      return { path: path.slice(1), copiedBytes: copied * 4096 }
    }, { description: `flatten ${path.slice(1)}`, total: span, pausable: true })
    return { job, path: path.slice(1) }
  }

  // ---------------------------------------------------------------- tools

  /** fsck of the fs the disk lives in, as qemu-img check reports: consistent, corrupted or leaked. */
  async check(name: unknown): Promise<{ path: string; status: 'consistent' | 'corrupted' | 'leaked'; errors: string[]; leakedBytes: number }> {
    const ino = this.target(name)
    const c = await this.env.fs.check()
    this.env.fs.statIno(ino) // the disk must still be there
    const status = c.errors.length ? 'corrupted' : c.leakedBytes ? 'leaked' : 'consistent'
    return { path: name as string, status, errors: c.errors, leakedBytes: c.leakedBytes }
  }

  /**
   * Allocated extents and the layer holding each (the disk alone, or shared with a
   * snapshot/clone), a page at a time: up to `limit` extents starting at byte `from` or
   * later; `next` is where the following page starts (null after the last), so a
   * fragmented disk's map never outgrows a reply (or an ioctl's 4 KiB struct).
   */
  map(name: unknown, from = 0, limit = MAP_DEFAULT_PAGE) {
    const ino = this.target(name)
    const st = this.env.fs.statIno(ino)
    // one more than the page: where the next one starts
    const got = this.env.fs.extentMap(ino, from, limit + 1)
    const extents = got.slice(0, limit).map((e) => ({
      offset: e.offset, length: e.length, layer: e.shared ? 'shared' : 'live', volume: e.volume, physical: e.physical,
    }))
    const next = got.length > limit ? got[limit].offset : null
    return { path: name as string, size: st.size, allocated: st.blocks * 512, extents, next }
  }

  async compare(a: unknown, b: unknown): Promise<{ a: string; b: string; identical: boolean; firstDifference: number | null }> {
    const d = await this.env.fs.compare(this.target(a), this.target(b))
    return { a: a as string, b: b as string, identical: d < 0, firstDifference: d < 0 ? null : d }
  }

  /** Inode of a disk, of DISK@SNAP, or of .snapshots/DISK/SNAP. */
  private target(name: unknown): number {
    if (typeof name === 'string' && (name.includes('@') || name.startsWith('.snapshots/'))) {
      const { disk, snap } = splitSnapshotRef(name)
      return this.env.fs.snapshotIno(this.diskOnly(disk), snap)
    }
    return this.env.fs.lookup(this.diskOnly(name))
  }

  private diskOnly(name: unknown): string {
    const path = diskPath(name)
    if ((this.stat(path).mode & S_IFMT) !== S_IFREG) throw new VsmError('EISDIR', `not a disk (a directory): ${name}`)
    return path
  }

  list(): DiskInfo[] {
    const out: DiskInfo[] = []
    const walk = (dir: string) => {
      for (const entry of this.env.fs.readdir(dir)) {
        const p = dir === '/' ? `/${entry}` : `${dir}/${entry}`
        const mode = this.env.fs.getattr(p).mode & S_IFMT
        if (mode === S_IFDIR) walk(p)
        else if (mode === S_IFREG) out.push(this.show(p.slice(1)))
      }
    }
    walk('/')
    return out
  }

  /** Shrinking discards the tail: it takes `shrink`, and on an open disk also `force` (its user may be using that tail). */
  async resize(name: unknown, size: unknown, opts: { shrink?: boolean; force?: boolean } = {}): Promise<DiskInfo> {
    const path = diskPath(name)
    const bytes = checkSize(size)
    const cur = this.show(name)
    if (bytes < cur.size) {
      if (!opts.shrink) throw new VsmError('EINVAL', `shrinking ${name} from ${cur.size} to ${bytes} bytes discards data: pass --shrink to do it`)
      if (cur.open && !opts.force) throw new VsmError('EBUSY', `disk is open (${cur.open} handle(s)): ${name}; shrinking it cuts off data its user may be using: stop the user first or pass --force`)
    }
    await this.env.fs.truncate(path, bytes)
    await this.env.fs.sync()
    await this.env.changed(path, 'data')
    this.env.events.publish('disk.resized', { path: path.slice(1), from: cur.size, size: bytes, open: cur.open }, bytes < cur.size ? 'warn' : 'info')
    return this.show(name)
  }

  /** A disk with snapshots is deleted only with `recursive` (they go with it); an open one only with `force`. Returns the snapshots deleted. */
  async delete(name: unknown, opts: { force?: boolean; recursive?: boolean } = {}): Promise<{ snapshots: string[] }> {
    const path = diskPath(name)
    const info = this.show(name)
    const snapshots = this.env.fs.snapshots(path).map((x) => x.name)
    if (snapshots.length && !opts.recursive) {
      throw new VsmError('ENOTEMPTY', `disk ${name} has ${snapshots.length} snapshot(s) (${snapshots.join(', ')}): pass --recursive to delete them with it`)
    }
    if (info.open && !opts.force) throw new VsmError('EBUSY', `disk is open (${info.open} handle(s)): ${name}; pass --force to delete anyway`)
    await this.env.fs.unlink(path)
    await this.env.fs.sync()
    await this.env.changed(path, 'gone')
    this.env.events.publish('disk.deleted', { path: path.slice(1), open: info.open, forced: !!opts.force, snapshots }, info.open ? 'warn' : 'info')
    return { snapshots }
  }

  async freeze(name: unknown, timeoutMs: unknown = DEFAULT_FREEZE_MS): Promise<DiskInfo> {
    this.show(name) // refuses a missing disk or a directory with the usual message
    const ino = this.env.fs.lookup(diskPath(name))
    await this.env.gate.freeze(ino, timeoutMs as number, () => this.env.fs.fsync(ino))
    const info = this.show(name)
    this.env.events.publish('disk.frozen', { path: info.path, until: info.frozenUntil })
    return info
  }

  thaw(name: unknown): DiskInfo {
    const info = this.show(name)
    if (!this.env.gate.thaw(this.env.fs.lookup(diskPath(name)))) throw new VsmError('EINVAL', `disk is not frozen: ${name}`)
    this.env.events.publish('disk.thawed', { path: info.path, reason: 'thaw command' })
    return { ...info, frozenUntil: null }
  }

  private exists(path: string): boolean {
    try { this.env.fs.getattr(path); return true } catch (e) { if ((e as VsmError).code === 'ENOENT') return false; throw e }
  }

  private stat(path: string) {
    try { return this.env.fs.getattr(path) } catch (e) {
      if ((e as VsmError).code === 'ENOENT') throw new VsmError('ENOENT', `no such disk: ${path.slice(1)}`)
      throw e
    }
  }
}
