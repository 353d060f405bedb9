// The fs's vocabulary: inode types and limits, the Inode record (attributes, directory
// entries, extent map, snapshot links, I/O accounting), the public result types, and
// the argument checks every operation shares.
import { VsmError } from '../block/blockdev'
import { Extent, ExtentMap } from './extents'

export const S_IFMT = 0o170000
export const S_IFDIR = 0o040000
export const S_IFREG = 0o100000
export const S_IFLNK = 0o120000
export const S_IFCHR = 0o020000, S_IFBLK = 0o060000, S_IFIFO = 0o010000, S_IFSOCK = 0o140000
/** The types mknod makes: plain inodes the kernel serves itself (fifos, sockets) or hands to a driver (devices). */
export const NODE_TYPES = new Set([S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK])
/** rename(2) flags (renameat2). */
export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
/** utimensat(2)'s UTIME_NOW and UTIME_OMIT as utimens() takes them. */
export type TimeSpec = number | 'now' | 'omit'
/** A file by path, or by inode number (core.resolve). */
export type FileRef = string | number
export const NAME_MAX = 255
export const PATH_MAX = 4096
export const LINK_MAX = 65000
export const NO_ID = 0xffffffff
/** relatime: a read moves atime when it is older than the last change or than a day. */
export const ATIME_MAX_AGE_MS = 86_400_000
export const XATTR_MAX = 65536
export const MAX_FILE_SIZE = 2 ** 50
export const ROOT = 1
export const LAZY_COMMIT_MS = 5000

export interface Stat {
  ino: number; mode: number; uid: number; gid: number; size: number; blocks: number; nlink: number
  atime: number; mtime: number; ctime: number
  /** Device number of a character or block special file (0 otherwise). */
  rdev: number
}

export interface StatFs { bsize: number; blocks: number; bfree: number; bavail: number; files: number; ffree: number; namemax: number }

/**
 * An I/O that maps blocks and has not logged them yet. `replaced` are the shared
 * extents a copy-on-write took out of the file's map: their reference stays counted
 * until the new mapping is logged, so no commit can free them while the durable
 * state still points at them.
 */
export interface Pending { b0: number; b1: number; done: Promise<void>; resolve: () => void; allocs: Extent[]; replaced: Extent[] }

export interface SnapshotInfo { name: string; ino: number; size: number; created: number; stamp: number; uniqueBytes: number }
export interface MapEntry { offset: number; length: number; volume: string; physical: number; shared: boolean }

export const STAMP_GEN = 2 ** 32

export class Inode {
  entries?: Map<string, number>
  ext = new ExtentMap()
  xattr = new Map<string, Buffer>()
  inflight = 0
  pending: Pending[] = []
  waiters: (() => void)[] = []
  /** Set while truncate/unlink/rename waits for I/O to drain: new I/O waits here, so it cannot starve them. */
  gate: Promise<void> | null = null
  gateOpen: () => void = () => undefined
  /** A file's snapshots by name (snapshot inodes live outside the directory tree). */
  snaps?: Map<string, number>
  /** For a snapshot inode: the file it belongs to, and its name. */
  snapOf = 0
  snapName = ''
  /** Ordering stamp of the latest change to the data (generation << 32 | counter). */
  stamp = 0
  /** Root of the extent tree the last checkpoint committed for this map (0: none, or empty). */
  root = 0
  /**
   * Since that checkpoint the map became a copy of another's (snapshot, clone, revert):
   * the next checkpoint starts this tree as a clone of that one's committed tree (its
   * own `rebase` followed, so a chain resolves to a committed root) before `dirty`, or,
   * when `rebaseAt` >= 0, of that one's tree after its first `rebaseAt` changed ranges.
   */
  rebase: Inode | null = null
  rebaseAt = -1
  /** File block ranges [b0, b1) changed since that checkpoint (relative to `root`, or to `rebase`'s). */
  dirty: [number, number][] = []
  /** A symlink's target. */
  target = ''
  /** A device's number. */
  rdev = 0
  constructor(
    public ino: number, public mode: number, public uid: number, public gid: number, public size: number,
    public nlink: number, public atime: number, public mtime: number, public ctime: number,
    public vol: number, public parent: number,
  ) {}
  get isDir() { return (this.mode & S_IFMT) === S_IFDIR }
  get isReg() { return (this.mode & S_IFMT) === S_IFREG }
  /** Unlinked while open: out of the tree, its data kept until the last close (or the next mount). */
  get isOrphan() { return this.nlink === 0 && !this.snapOf && !this.isDir }
  get busy() { return this.inflight > 0 || this.pending.length > 0 }
}

export function err(code: string, msg: string): VsmError { return new VsmError(code, msg) }

export function checkName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw err('EINVAL', 'empty file name')
  if (name === '.' || name === '..') throw err('EINVAL', `bad file name '${name}'`)
  if (name.includes('/') || name.includes('\0')) throw err('EINVAL', `file name may not contain '/' or NUL: ${JSON.stringify(name)}`)
  if (Buffer.byteLength(name) > NAME_MAX) throw err('ENAMETOOLONG', `file name longer than ${NAME_MAX} bytes`)
}

export function parsePath(path: string): string[] {
  if (typeof path !== 'string' || !path.startsWith('/')) throw err('EINVAL', `path must be absolute: ${JSON.stringify(path)}`)
  // no limit on the whole path: the kernel bounds each call's path (PATH_MAX), not how
  // deep a file lies below the mount; names are checked one by one
  const parts = path.split('/').filter((p) => p !== '')
  for (const p of parts) checkName(p)
  return parts
}

export function checkId(v: number, what: string) {
  if (!Number.isSafeInteger(v) || v < 0 || v > 0xffffffff) throw err('EINVAL', `bad ${what}: ${v}`)
}

export function checkMode(m: number) {
  if (!Number.isSafeInteger(m) || m < 0) throw err('EINVAL', `bad mode: ${m}`)
}

export function checkTime(t: number, what: string) {
  if (typeof t !== 'number' || !Number.isFinite(t)) throw err('EINVAL', `bad ${what}: ${t}`)
}

export function checkXattrName(name: string) {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 255 || name.includes('\0')) {
    throw err('EINVAL', `bad xattr name: ${JSON.stringify(name)}`)
  }
}

