// The daemon's home directory: made 0700 when missing, and refused (one line) when it
// is not ours or others may write into it, since everything in it (lock, pid file,
// configs, logs, the socket, default devices) is trusted by a daemon that runs as root.
import { chmodSync, chownSync, lstatSync, mkdirSync, statSync } from 'fs'
import { join } from 'path'
import { VsmError } from '../block/blockdev'

const euid = () => process.geteuid?.() ?? 0

export function prepareHome(home: string): void {
  mkdirSync(home, { recursive: true, mode: 0o700 })
  // the home itself may be a symlink to where the operator keeps it: its target is checked
  const st = statSync(home)
  if (!st.isDirectory()) throw new VsmError('ENOTDIR', `home ${home} is not a directory`)
  if (st.uid !== euid()) throw new VsmError('EPERM', `home ${home} is owned by uid ${st.uid}, not ${euid()}; refusing it`)
  if (st.mode & 0o022) {
    throw new VsmError('EPERM', `home ${home} is writable by ${st.mode & 0o020 ? 'its group' : 'others'} (mode ${(st.mode & 0o7777).toString(8)}); run chmod go-w ${home}`)
  }
}

/**
 * With --socket-group the group must reach the socket (and the mount) inside the
 * home: the home becomes ours:group 0710, traversable but not listable or writable.
 */
export function openHomeToGroup(home: string, gid: number): void {
  chownSync(home, euid(), gid)
  chmodSync(home, 0o710)
}

/** A directory inside the home (log/), made 0700; a symlink or someone else's directory there is refused. */
export function homeSubdir(home: string, name: string): string {
  const dir = join(home, name)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const st = lstatSync(dir)
  if (!st.isDirectory() || st.uid !== euid() || st.mode & 0o022) {
    throw new VsmError('EPERM', `${dir} is not a directory of ours that only we can write; refusing it`)
  }
  return dir
}
