// The vsm file system's facade: files as extents on volumes, a directory tree, xattrs,
// snapshots, extent maps on copy-on-write B+trees, and a checkpoint + circular journal
// inside volume 0. Each method hands over to the module that owns it; the state lives
// in FsCore (core.ts):
//   ops.ts        the logical ops and their interpreter apply()
//   journal.ts    commit, checkpoint, journal replay at mount, converting an old fs
//   trees.ts      the extent maps on the B+trees, applied at each checkpoint
//   space.ts      free maps, reference counts, ENOSPC, statfs
//   namespace.ts  paths, directories, links, attributes, xattrs, open handles
//   data.ts       reads, writes, copy-on-write, truncate, punch hole; locate()
//   remap.ts      relocation of extents between volumes (fs move, the HSM)
//   snapshots.ts  snapshots, clones, revert, sharing views
//   volumes.ts    mkfs, mount, volumes online, placement
//   check.ts      fsck of the mounted fs
import { BlockDev, WriteAck, checkRange } from '../block/blockdev'
import { EventSink } from '../control/events'
import * as chk from './check'
import { ArchiveLocation, FsCore } from './core'
import * as data from './data'
import { FileRef, MapEntry, SnapshotInfo, Stat, StatFs, TimeSpec, err } from './inode'
import * as journal from './journal'
import * as ns from './namespace'
import * as remap from './remap'
import * as snaps from './snapshots'
import * as space from './space'
import * as vols from './volumes'

export {
  S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, RENAME_NOREPLACE, RENAME_EXCHANGE, MAX_FILE_SIZE,
} from './inode'
export type { FileRef, Stat, StatFs, TimeSpec, Timespec, SnapshotInfo, MapEntry } from './inode'

export class FileSystem {
  private constructor(private readonly core: FsCore) {}

  /** journalBytes overrides the journal size (tests use a small one to exercise wrap and checkpoints). */
  static mkfs(volumes: BlockDev[], opts: { volumeNames?: string[]; journalBytes?: number } = {}): Promise<void> {
    return vols.mkfs(volumes, opts)
  }

  static async mount(volumes: BlockDev[], opts: { volumeNames?: string[] } = {}): Promise<FileSystem> {
    return new FileSystem(await vols.mount(volumes, opts))
  }

  /** What mount replayed from the journal: non-zero after an unclean stop (crash recovery, for the log). */
  get replayed(): { records: number; ops: number; bytes: number } { return this.core.replayed }

  /** Where the fs reports what an operator must act on (a write refused for lack of space). */
  useEvents(events: EventSink): void { this.core.events = events }

  /** `fn` is told of every read and write of a live file's blocks [b0, b1) (the HSM keeps region heat with it). */
  watchAccess(fn: (ino: number, b0: number, b1: number) => void): void { this.core.onAccess = fn }

  // namespace
  getattr(path: string): Stat { return ns.getattr(this.core, path) }
  lookup(path: string): number { return ns.lookup(this.core, path) }
  readdir(path: string): string[] { return ns.readdir(this.core, path) }
  symlink(target: string, path: string, uid: number, gid: number): Promise<number> { return ns.symlink(this.core, target, path, uid, gid) }
  readlink(path: string): string { return ns.readlink(this.core, path) }
  mknod(path: string, mode: number, rdev: number, uid: number, gid: number): Promise<number> { return ns.mknod(this.core, path, mode, rdev, uid, gid) }
  link(from: string, to: string): Promise<void> { return ns.link(this.core, from, to) }
  hold(ino: number): void { ns.hold(this.core, ino) }
  release(ino: number): Promise<void> { return ns.release(this.core, ino) }
  orphans(): number[] { return ns.orphans(this.core) }
  mkdir(path: string, mode: number, uid: number, gid: number): Promise<void> { return ns.mkdir(this.core, path, mode, uid, gid) }
  create(path: string, mode: number, uid: number, gid: number, opts: { volume?: number } = {}): Promise<number> { return ns.create(this.core, path, mode, uid, gid, opts) }
  unlink(path: string): Promise<void> { return ns.unlink(this.core, path) }
  rmdir(path: string): Promise<void> { return ns.rmdir(this.core, path) }
  rename(from: string, to: string, flags = 0): Promise<void> { return ns.rename(this.core, from, to, flags) }
  chmod(path: FileRef, mode: number): Promise<void> { return ns.chmod(this.core, path, mode) }
  chown(path: FileRef, uid: number, gid: number): Promise<void> { return ns.chown(this.core, path, uid, gid) }
  utimens(path: FileRef, atime: TimeSpec, mtime: TimeSpec): Promise<void> { return ns.utimens(this.core, path, atime, mtime) }
  getxattr(path: string, name: string): Buffer | undefined { return ns.getxattr(this.core, path, name) }
  listxattr(path: string): string[] { return ns.listxattr(this.core, path) }
  setxattr(path: string, name: string, value: Buffer): Promise<void> { return ns.setxattr(this.core, path, name, value) }
  removexattr(path: string, name: string): Promise<void> { return ns.removexattr(this.core, path, name) }

  // data
  /** `opts.atime` false: not an access (last access stays; the HSM checking its copies). */
  read(ino: number, buf: Buffer, offset: number, opts: { atime?: boolean } = {}): Promise<number> { return data.read(this.core, ino, buf, offset, opts.atime ?? true) }
  write(ino: number, buf: Buffer, offset: number, ack?: WriteAck): Promise<number> { return data.write(this.core, ino, buf, offset, ack) }
  unshare(ino: number, b0: number, b1: number): Promise<number> { return data.unshare(this.core, ino, b0, b1) }
  truncate(path: FileRef, size: number): Promise<void> { return data.truncate(this.core, path, size) }
  punchHole(ino: number, offset: number, length: number): Promise<void> { return data.punchHole(this.core, ino, offset, length) }
  /** `opts.unlessHeldBy`: runs that inode maps too stay (a snapshot's blocks the live file no longer holds move). */
  relocate(ino: number, b0: number, b1: number, to: number, opts: { unlessHeldBy?: number } = {}): Promise<number> { return remap.relocate(this.core, ino, b0, b1, to, false, opts.unlessHeldBy) }
  copyOut(ino: number, b0: number, b1: number, to: number, hash?: { update(b: Buffer): unknown }): Promise<{ stamp: number; runs: [number, number, number][] }> { return remap.copyOut(this.core, ino, b0, b1, to, hash) }
  releaseCopies(ino: number, copies: [number, number, number][], to: number, stamp: number): Promise<number> { return remap.release(this.core, ino, copies, to, stamp) }

  async fsync(ino: number): Promise<void> {
    this.core.live()
    if (!this.core.inodes.has(ino)) throw err('ENOENT', `no inode ${ino}`)
    await this.core.commit()
  }

  async sync(): Promise<void> {
    this.core.live()
    await this.core.commit()
  }

  statfs(): StatFs { return space.statfs(this.core) }

  /** Why the fs serves nothing more (a commit failed; a restart brings it back), or null. */
  get brokenBy(): string | null { return this.core.broken?.message ?? null }
  /** Journal activity since mount (commits, records, wraps, checkpoints, data flushes, metadata bytes written). */
  journalStats() { return journal.journalStats(this.core) }

  openFile(path: string): BlockDev {
    this.core.live()
    return new FsFile(this, this.core.regular(path).ino)
  }

  /** @internal for FsFile */
  sizeOf(ino: number): number { return this.core.inodes.get(ino)?.size ?? 0 }

  // snapshots and clones
  snapshot(path: string, name: string): Promise<SnapshotInfo> { return snaps.snapshot(this.core, path, name) }
  snapshots(path: string): SnapshotInfo[] { return snaps.snapshots(this.core, path) }
  snapshotIno(path: string, name: string): number { return snaps.snapshotIno(this.core, path, name) }
  deleteSnapshot(path: string, name: string): Promise<void> { return snaps.deleteSnapshot(this.core, path, name) }
  revert(path: string, name: string): Promise<void> { return snaps.revert(this.core, path, name) }
  clone(path: string, name: string, newPath: string, opts: { mode?: number; uid?: number; gid?: number } = {}): Promise<number> { return snaps.clone(this.core, path, name, newPath, opts) }
  shareRange(src: number, srcOff: number, dst: number, dstOff: number, len: number): Promise<boolean> { return snaps.shareRange(this.core, src, srcOff, dst, dstOff, len) }
  sharedBlocks(ino: number): number { return snaps.sharedBlocks(this.core, ino) }
  blockSpan(ino: number): number { return snaps.blockSpan(this.core, ino) }
  extentMap(ino: number, from?: number, limit?: number): MapEntry[] { return snaps.extentMap(this.core, ino, from, limit) }
  dataRun(ino: number, offset: number): [number, number] | null { return snaps.dataRun(this.core, ino, offset) }
  statIno(ino: number): Stat & { stamp: number } { return snaps.statIno(this.core, ino) }
  compare(a: number, b: number): Promise<number> { return snaps.compare(this.core, a, b) }
  lastStamp(): number { return snaps.lastStamp(this.core) }
  openSnapshot(path: string, name: string): BlockDev { return new SnapFile(this, this.snapshotIno(path, name)) }

  check(): Promise<{ ok: boolean; errors: string[]; leakedBytes: number }> { return chk.check(this.core) }

  // volumes and placement
  volumes(): { name: string; size: number; removed?: true }[] { return vols.volumes(this.core) }
  volumeNames(): string[] { return vols.volumeNames(this.core) }
  volumeIndex(name: string): number { return vols.volumeIndex(this.core, name) }
  addVolume(dev: BlockDev, name: string): Promise<{ name: string; size: number; index: number }> { return vols.addVolume(this.core, dev, name) }
  beginRemove(name: string, to: number): number { return vols.beginRemove(this.core, name, to) }
  inodesOn(v: number): number[] { return vols.inodesOn(this.core, v) }
  cancelRemove(v: number): void { vols.cancelRemove(this.core, v) }
  finishRemove(v: number): Promise<{ name: string }> { return vols.finishRemove(this.core, v) }
  placementFor(path: string): number { return vols.placementFor(this.core, path) }
  setPlacement(ino: number, vol: number): void { vols.setPlacement(this.core, ino, vol) }
  placementVolume(ino: number): string { return vols.placementVolume(this.core, ino) }
  volumeSpace(): { name: string; size: number; free: number }[] { return space.volumeSpace(this.core) }
  placementOf(ino: number): Record<string, number> { return vols.placementOf(this.core, ino) }
  attachArchive(slot: number, dev: ArchiveLocation): number { return vols.attachArchive(this.core, slot, dev) }
  archivedRuns(vol: number): { start: number; len: number }[] { return space.archivedRuns(this.core, vol) }

  close(): Promise<void> { return journal.close(this.core) }
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
