// `vsm up` and `vsm down`: start the daemon detached and return once the stack is
// mounted and the socket answers; ask it to stop and wait until it has.
import { spawn } from 'child_process'
import { closeSync, fstatSync, readFileSync, statfsSync } from 'fs'
import { dirname, join } from 'path'
import { ControlClient } from '../control/client'
import { lockHolder } from '../daemon/lock'
import { homeSubdir, prepareHome } from '../daemon/home'
import { openOwnAppend } from '../block/files'
import { socketPath } from './home'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A detached daemon is reaped by whoever adopted it, maybe never: a zombie counts as gone. */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

async function tryConnect(home: string): Promise<ControlClient | null> {
  try { return await ControlClient.connect(socketPath(home)) } catch { return null }
}

export async function isRunning(home: string): Promise<boolean> {
  const c = await tryConnect(home)
  c?.close()
  return !!c
}

/** Spawns `vsm up --foreground` detached; resolves with its pid once the socket answers. */
export async function startDetached(cliMain: string, argv: string[], home: string, timeoutMs = 180_000): Promise<number> {
  prepareHome(home)
  const errFile = join(homeSubdir(home, 'log'), 'daemon.err')
  // Appended to, never truncated: a daemon that lost the race for the home's lock must
  // not wipe the winner's output. Only what this start added is read back.
  const fd = openOwnAppend(errFile)
  const from = fstatSync(fd).size
  const child = spawn(process.execPath, [cliMain, 'up', '--foreground', ...argv], { detached: true, stdio: ['ignore', fd, fd] })
  closeSync(fd)
  let exited: number | null = null
  child.on('exit', (code) => { exited = code ?? 1 })
  child.unref()
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (exited !== null) {
      const lines = readFileSync(errFile).subarray(from).toString().trim().split('\n').filter(Boolean)
      throw new Error(lines.find((l) => l.startsWith('vsm: '))?.slice(5) ?? lines.pop() ?? `daemon exited with status ${exited}${lostReason(errFile)}`)
    }
    // The socket may be another daemon's that won a race for the home: ours is up
    // only when it holds the home's lock (the loser exits with the reason).
    const c = await tryConnect(home)
    c?.close()
    if (c && lockHolder(home) === child.pid) return child.pid!
    await sleep(100)
  }
  child.kill('SIGKILL')
  throw new Error(`the daemon did not answer within ${timeoutMs / 1000}s; see ${join(home, 'log')}`)
}

/**
 * Asks the daemon to flush, unmount and stop; waits until its process is gone. The
 * daemon refuses (EBUSY, naming them) while disks are open, unless forced.
 */
export async function stopDaemon(home: string, force = false, timeoutMs = 120_000): Promise<boolean> {
  const c = await tryConnect(home)
  if (!c) return false
  let pid = 0
  try { pid = Number(readFileSync(join(home, 'vsm.pid'), 'utf8')) } catch { /* older start: wait on the socket instead */ }
  try { await c.call('shutdown', force ? { force } : undefined) } finally { c.close() }
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const alive = pid ? processAlive(pid) : await isRunning(home)
    if (!alive) return true
    await sleep(100)
  }
  throw new Error(`the daemon did not stop within ${timeoutMs / 1000}s`)
}

/** Why a daemon that failed left no reason: its stderr file's file system is full. */
function lostReason(errFile: string): string {
  try {
    if (statfsSync(dirname(errFile)).bavail > 0) return ''
  } catch {
    return ''
  }
  return `; its reason could not be written to ${errFile}: the file system holding it is full`
}
