// The fs's vocabulary: inode types and limits, the Inode record (attributes, directory
// entries, extent map, snapshot links, I/O accounting), the public result types, and
// the argument checks every operation shares.
import { VsmError } from '../block/blockdev'
import { Extent, ExtentMap } from './extents'
import type { Dir } from './dir'

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
/** A time as the kernel gives it: seconds and nanoseconds since the epoch. */
export interface Timespec { sec: number; nsec: number }
/** utimens()'s times: epoch ms, a Timespec (exact to the nanosecond), or utimensat(2)'s UTIME_NOW and UTIME_OMIT. */
export type TimeSpec = number | Timespec | 'now' | 'omit'
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
  /** Epoch ms; atimeNs and mtimeNs add the nanoseconds within that ms (0..999999). */
  atime: number; mtime: number; ctime: number; atimeNs: number; mtimeNs: number
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
  entries?: Dir
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
  /**
   * atime and mtime in epoch ms, and the nanoseconds within that ms a utimensat gave
   * (the fs's own stamps are whole ms). Setting a time in ms clears its nanoseconds, so
   * no stamp keeps the fraction of the time it replaced.
   */
  private at: number
  private mt: number
  atimeNs = 0
  mtimeNs = 0
  constructor(
    public ino: number, public mode: number, public uid: number, public gid: number, public size: number,
    public nlink: number, atime: number, mtime: number, public ctime: number,
    public vol: number, public parent: number,
  ) {
    this.at = atime
    this.mt = mtime
  }
  get atime() { return this.at }
  set atime(ms: number) { this.at = ms; this.atimeNs = 0 }
  get mtime() { return this.mt }
  set mtime(ms: number) { this.mt = ms; this.mtimeNs = 0 }
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

/** Seconds beyond which a time in ms is no longer an exact integer. */
const MAX_SEC = Math.floor(Number.MAX_SAFE_INTEGER / 1000)

export function checkTime(t: number | Timespec, what: string) {
  const ok = typeof t === 'number'
    ? Number.isFinite(t) && Math.abs(t) <= MAX_SEC * 1000
    : typeof t === 'object' && t !== null && Number.isSafeInteger(t.sec) && Math.abs(t.sec) < MAX_SEC &&
      Number.isInteger(t.nsec) && t.nsec >= 0 && t.nsec < 1e9
  if (!ok) throw err('EINVAL', `bad ${what}: ${JSON.stringify(t)}`)
}

/** A checked time as [epoch ms, nanoseconds within that ms]. */
export function msAndNs(t: number | Timespec): [number, number] {
  if (typeof t === 'object') return [t.sec * 1000 + Math.floor(t.nsec / 1e6), t.nsec % 1e6]
  const ms = Math.floor(t)
  return [ms, Math.min(999_999, Math.round((t - ms) * 1e6))]
}

export function checkXattrName(name: string) {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 255 || name.includes('\0')) {
    throw err('EINVAL', `bad xattr name: ${JSON.stringify(name)}`)
  }
}

