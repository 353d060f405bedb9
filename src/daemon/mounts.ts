// Finds and clears a stale FUSE mount left by a killed daemon at our mount point.
import { execFileSync } from 'child_process'
import { readFileSync } from 'fs'

/** Mount points are octal-escaped in /proc/mounts (a space is \040). */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)))

export function isMounted(path: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => unescape(l.split(' ')[1] ?? '') === path)
}

export function clearStaleMount(path: string): boolean {
  if (!isMounted(path)) return false
  for (const cmd of [['fusermount3', '-uz', path], ['fusermount', '-uz', path], ['umount', '-l', path]]) {
    try { execFileSync(cmd[0], cmd.slice(1), { stdio: 'ignore' }); return true } catch { /* try the next tool */ }
  }
  throw new Error(`a stale mount at ${path} could not be removed`)
}
