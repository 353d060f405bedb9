// Loads native/vsm_sys (built by scripts/setup with node-gyp) and gives its system
// calls typed wrappers: a non-blocking flock on an fd, the peer credentials of a
// connected unix socket, the discard of a range of a backing device, a read the page
// cache answers at once, and many writes (and fdatasyncs) in one job of its write threads
// (and taking back those of a job that have not begun).
import { join } from 'path'
import type { Socket } from 'net'

interface SysAddon {
  flock(fd: number, op: number): void
  peercred(fd: number): PeerCred
  discard(fd: number, offset: number, length: number, blockDevice: boolean): Promise<void>
  readNowait(fd: number, buf: Buffer, offset: number): number
  pwriteBatch(fds: number[], bufs: (Buffer | null)[], offsets: number[], cb: (errors: (string | undefined)[]) => void, acks?: unknown[]): PwriteJob
  takeBack(job: PwriteJob): (string | undefined)[]
  LOCK_SH: number
  LOCK_EX: number
  LOCK_NB: number
  LOCK_UN: number
}

/** A job of pwriteBatch in the thread pool (an opaque native handle). */
export interface PwriteJob { readonly __pwriteJob: unique symbol }

export interface PeerCred { pid: number; uid: number; gid: number }

let addon: SysAddon | undefined
function sys(): SysAddon {
  // dist/src/native/ is three levels below the repo root, where native/build is
  addon ??= require(join(__dirname, '..', '..', '..', 'native', 'build', 'Release', 'vsm_sys.node')) as SysAddon
  return addon
}

/** Takes a lock (exclusive or shared) without waiting: false when another open file holds a conflicting one. */
export function tryLock(fd: number, exclusive: boolean): boolean {
  const s = sys()
  try {
    s.flock(fd, (exclusive ? s.LOCK_EX : s.LOCK_SH) | s.LOCK_NB)
    return true
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EAGAIN' || (e as NodeJS.ErrnoException).code === 'EWOULDBLOCK') return false
    throw e
  }
}

export function unlock(fd: number): void {
  const s = sys()
  s.flock(fd, s.LOCK_UN)
}

/** The credentials of the process that connected this unix socket. */
export function peerCredentials(socket: Socket): PeerCred {
  // net.Socket keeps its descriptor on the libuv handle; there is no public accessor.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor')
  return sys().peercred(fd)
}

/** Gives [offset, offset+length) of an open file or block device back, reading as zeros after, off the main thread. */
export function discardRange(fd: number, offset: number, length: number, blockDevice: boolean): Promise<void> {
  return sys().discard(fd, offset, length, blockDevice)
}

/** What readNowait answers when the read would wait on the device, or failed: read the usual way. */
export const WOULD_WAIT = -1
/** What readNowait answers for a file that never reads this way (FUSE). */
export const NEVER_NOWAIT = -2

/**
 * Fills buf from offset if the page cache holds all of it, on this thread and without
 * waiting on the device: bytes read, WOULD_WAIT or NEVER_NOWAIT.
 */
export function readNowait(fd: number, buf: Buffer, offset: number): number {
  return sys().readNowait(fd, buf, offset)
}

/**
 * Writes each bufs[i] whole at offsets[i] of fds[i], in order, in one job of the write
 * threads (bufs[i] null: fdatasync(fds[i]) at that place in the order); cb
 * gets each write's errno name (undefined: written, or taken back). The caller must keep
 * the descriptors open and the buffers unchanged until cb runs. acks[i]: the handle of
 * the early answer (WriteAck) write i is a piece of, told once it is written.
 */
export function pwriteBatch(fds: number[], bufs: (Buffer | null)[], offsets: number[], cb: (errors: (string | undefined)[]) => void, acks?: unknown[]): PwriteJob {
  return sys().pwriteBatch(fds, bufs, offsets, cb, acks)
}

/**
 * Takes the writes of job not begun back out of it (it will never write them) and tells
 * how each went: 'taken' (taken back, now or before), 'busy' (being written), undefined
 * (written) or its errno's name. Only before the job's cb ran.
 */
export function takeBack(job: PwriteJob): (string | undefined)[] {
  return sys().takeBack(job)
}
