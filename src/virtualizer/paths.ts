// Turns a disk name given by a user (relative to the mount) into an fs path, and
// refuses anything that could name something outside the mount.
import { VsmError } from '../block/blockdev'

const MAX_PATH = 1024

/** 'vm/disk0.img' -> '/vm/disk0.img'. Absolute paths, '..', '.', empty parts and NULs are refused. */
export function diskPath(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new VsmError('EINVAL', 'a disk path is required')
  if (name.length > MAX_PATH) throw new VsmError('ENAMETOOLONG', `disk path longer than ${MAX_PATH} characters`)
  if (name.startsWith('/')) throw new VsmError('EINVAL', `disk path must be relative to the mount: ${name}`)
  if (name.includes('\0')) throw new VsmError('EINVAL', 'disk path contains a NUL byte')
  const parts = name.split('/')
  for (const p of parts) {
    if (p === '' || p === '.' || p === '..') throw new VsmError('EINVAL', `bad disk path (empty, '.' or '..' component): ${name}`)
    if (Buffer.byteLength(p) > 255) throw new VsmError('ENAMETOOLONG', `path component longer than 255 bytes: ${p.slice(0, 40)}…`)
  }
  return '/' + parts.join('/')
}
