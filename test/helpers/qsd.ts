// A qemu-storage-daemon FUSE export of a plain file: a real FUSE-backed file that tests
// use as a stand-in for the vsm view, or as a backing device that can be made to hang
// for real (SIGSTOP the daemon: every request on the file then waits in the kernel).
import { execFileSync, spawn, type ChildProcess } from 'child_process'
import { promises as fsp, readFileSync } from 'fs'
import * as path from 'path'

export interface QsdExport {
  /** The exported file (FUSE-mounted over a regular file). */
  path: string
  proc: ChildProcess
  /** Stops the daemon (resumed first if stopped) and removes its mount. */
  stop(): Promise<void>
}

const mounted = (p: string) => readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === p)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Exports a new sparse file of `size` bytes in dir as dir/export.img. */
export async function startQsdExport(dir: string, size: number): Promise<QsdExport> {
  const backing = path.join(dir, 'backing.img')
  const exp = path.join(dir, 'export.img')
  await fsp.writeFile(backing, '')
  await fsp.truncate(backing, size)
  await fsp.writeFile(exp, '') // the FUSE export mounts over an existing regular file
  const proc = spawn('qemu-storage-daemon', [
    '--blockdev', `driver=file,node-name=f,filename=${backing}`,
    '--export', `type=fuse,id=e,node-name=f,mountpoint=${exp},writable=on`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  proc.stderr!.on('data', (b) => { err += b })
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once('close', r))
      proc.kill('SIGCONT')
      proc.kill('SIGTERM')
      await Promise.race([gone, sleep(5000)])
      if (proc.exitCode === null && proc.signalCode === null) { proc.kill('SIGKILL'); await gone }
    }
    // A dead daemon leaves its mount behind ("Transport endpoint is not connected").
    if (mounted(exp)) try { execFileSync('fusermount3', ['-u', exp], { stdio: 'pipe' }) } catch { execFileSync('umount', ['-l', exp]) }
  }
  for (let i = 0; i < 100 && !mounted(exp) && proc.exitCode === null; i++) await sleep(100)
  if (!mounted(exp)) {
    await stop()
    throw new Error(`qemu-storage-daemon did not mount its export: ${err}`)
  }
  return { path: exp, proc, stop }
}
