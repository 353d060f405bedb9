// One daemon per home: <home>/vsm.lock, flock'ed exclusively for the daemon's whole
// life and taken before anything touches the devices, the fs or the mount. The kernel
// drops the lock when the process dies (kill -9 included), so a stale lock cannot
// exist; the file holds the holder's pid for the one line a second `vsm up` prints.
import { closeSync, constants as C, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'fs'
import { join } from 'path'
import { VsmError } from '../block/blockdev'
import { tryLock, unlock } from '../native/sys'

export const lockPath = (home: string) => join(home, 'vsm.lock')

/** Another process holds the home: its pid as written in the lock file (0 if not yet written). */
export class HomeLocked extends VsmError {
  constructor(readonly home: string, readonly pid: number) {
    super('EBUSY', `another vsm (pid ${pid || 'unknown'}) is running on home ${home}; not starting a second one`)
  }
}

function openLockFile(home: string, create: boolean): number {
  // O_NOFOLLOW: a symlink planted at the lock path must not make us open (and, on
  // acquire, truncate) whatever it points to.
  const fd = openSync(lockPath(home), C.O_RDWR | C.O_NOFOLLOW | (create ? C.O_CREAT : 0), 0o600)
  const st = fstatSync(fd)
  if (!st.isFile() || st.uid !== process.geteuid!()) {
    closeSync(fd)
    throw new VsmError('EPERM', `${lockPath(home)} is not a regular file owned by uid ${process.geteuid!()}; refusing to use it`)
  }
  return fd
}

function readPid(fd: number): number {
  const buf = Buffer.alloc(32)
  const n = readSync(fd, buf, 0, buf.length, 0)
  const pid = Number(buf.subarray(0, n).toString().trim())
  return Number.isSafeInteger(pid) && pid > 0 ? pid : 0
}

/**
 * Takes the home's lock or throws HomeLocked. The lock is never released by hand: it
 * lives as long as the process (the fd is close-on-exec, so no child inherits it). A
 * short wait covers a `vsm up` that is only looking (lockHolder holds a shared lock
 * for a moment).
 */
export async function acquireHomeLock(home: string, waitMs = 1000): Promise<void> {
  const fd = openLockFile(home, true)
  const deadline = Date.now() + waitMs
  while (!tryLock(fd, true)) {
    if (Date.now() >= deadline) {
      const pid = readPid(fd)
      closeSync(fd)
      throw new HomeLocked(home, pid)
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  ftruncateSync(fd, 0)
  writeSync(fd, `${process.pid}\n`, 0)
}

/** The pid of the daemon holding the home (0 if unknown), or null when nobody does. Takes nothing. */
export function lockHolder(home: string): number | null {
  let fd: number
  try { fd = openLockFile(home, false) } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw e
  }
  try {
    if (tryLock(fd, false)) { unlock(fd); return null }
    return readPid(fd)
  } finally {
    closeSync(fd)
  }
}
