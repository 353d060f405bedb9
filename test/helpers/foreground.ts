// A daemon run in the foreground by a test (as a terminal or systemd would run it):
// its stdout collected, resolved once its socket answers.
import { ChildProcess, spawn } from 'child_process'
import type { Vsm } from './daemon'

export interface Foreground {
  child: ChildProcess
  /** Everything it wrote to stdout so far. */
  out(): string
  /** Its exit code, once it exits. */
  exited: Promise<number | null>
}

export async function startForeground(vsm: Vsm, argv: string[], timeoutMs = 60_000): Promise<Foreground> {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.on('data', (b) => { out += b })
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)))
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try { await vsm.run('status'); break } catch (e) {
      if (Date.now() > deadline || child.exitCode !== null) { child.kill('SIGKILL'); throw e }
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  return { child, out: () => out, exited }
}
