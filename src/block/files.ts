// The small files vsm keeps in its home beside the devices (pool.json,
// vsm.pid, logs): written whole or not at all, and never through a symlink or into a
// file someone else owns, so a link planted in the home cannot make root overwrite or
// read another file.
import { closeSync, constants as C, fstatSync, openSync, promises as fsp } from 'fs'
import { dirname } from 'path'
import { VsmError } from './blockdev'

function checkOwned(st: { uid: number; isFile(): boolean }, file: string): void {
  if (!st.isFile()) throw new VsmError('EPERM', `${file} is not a regular file; refusing to use it`)
  const me = process.geteuid?.() ?? st.uid
  if (st.uid !== me) throw new VsmError('EPERM', `${file} is owned by uid ${st.uid}, not ${me}; refusing to use it`)
}

/**
 * Replaces file with data: a fresh temp file (O_EXCL|O_NOFOLLOW, so nothing already
 * there is opened), fsync'd, renamed over the file (the rename replaces a symlink
 * itself, never its target), and the directory fsync'd. A crash leaves the old or the
 * new file whole.
 */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`
  await fsp.rm(tmp, { force: true })
  const fh = await fsp.open(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, mode)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await fsp.rename(tmp, file)
  const dir = await fsp.open(dirname(file), 'r')
  try { await dir.sync() } finally { await dir.close() }
}

/** Reads a file we own, not through a symlink (ELOOP) and not one another user planted (EPERM). */
export async function readOwnFile(file: string): Promise<string> {
  const fh = await fsp.open(file, C.O_RDONLY | C.O_NOFOLLOW)
  try {
    checkOwned(await fh.stat(), file)
    return await fh.readFile('utf8')
  } finally {
    await fh.close()
  }
}

/** Opens a file we own for appending (a log), creating it; never through a symlink. Returns the fd. */
export function openOwnAppend(file: string, mode = 0o600): number {
  const fd = openSync(file, C.O_WRONLY | C.O_APPEND | C.O_CREAT | C.O_NOFOLLOW, mode)
  try {
    checkOwned(fstatSync(fd), file)
  } catch (e) {
    closeSync(fd)
    throw e
  }
  return fd
}
