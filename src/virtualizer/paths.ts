// Turns a disk name given by a user (relative to the mount) into an fs path, and
// refuses anything that could name something outside the mount. `.snapshots` at the
// top of the mount is the read-only snapshot view, never a disk.
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
  if (parts[0] === SNAPDIR) throw new VsmError('EINVAL', `${SNAPDIR}/ holds the read-only snapshot views; use DISK@SNAP or .snapshots/DISK/SNAP where a snapshot is meant`)
  return '/' + parts.join('/')
}

export const SNAPDIR = '.snapshots'

/** 'vm/d.img@s1' or '.snapshots/vm/d.img/s1' → { disk: 'vm/d.img', snap: 's1' }. */
export function splitSnapshotRef(ref: unknown): { disk: string; snap: string } {
  if (typeof ref !== 'string') throw new VsmError('EINVAL', 'a snapshot is named DISK@SNAP or .snapshots/DISK/SNAP')
  const view = ref.startsWith(SNAPDIR + '/')
  const body = view ? ref.slice(SNAPDIR.length + 1) : ref
  const i = body.lastIndexOf(view ? '/' : '@')
  if (i <= 0 || i === body.length - 1) throw new VsmError('EINVAL', `bad snapshot reference ${JSON.stringify(ref)}: use DISK@SNAP or .snapshots/DISK/SNAP`)
  return { disk: body.slice(0, i), snap: body.slice(i + 1) }
}
