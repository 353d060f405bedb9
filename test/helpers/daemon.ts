// Starts and stops a real vsm daemon in a temporary home for integration tests,
// through the real CLI (bin/vsm), and makes sure nothing is left mounted or running.
import { execFile, execFileSync } from 'child_process'
import { mkdtempSync, readFileSync, rmSync } from 'fs'
import { tmpdir } from 'os'
import { join, resolve } from 'path'
import { suite, type Test } from 'uvu'
import { processAlive } from '../../src/cli/up'
import { FUSE_BINDINGS, type FuseBindingName } from '../../src/virtualizer/fuse-view'

export const VSM = resolve(__dirname, '..', '..', '..', 'bin', 'vsm')

export interface Vsm {
  home: string
  mount: string
  /** Runs `vsm ARGS --home HOME`; resolves with stdout, rejects with {code, stderr}. */
  run(...args: string[]): Promise<string>
  json(...args: string[]): Promise<any>
  /** `vsm up` with extra options (e.g. --allow-other). */
  up(...extra: string[]): Promise<void>
  down(): Promise<void>
  /** kill -9 the daemon and clear its mount, as a crash would leave it. */
  kill9(): void
  pid(): number
  /** Stops everything and removes the home. */
  cleanup(): Promise<void>
}

export interface RunError extends Error { code: number; stderr: string; stdout: string }

/**
 * Runs the same tests once per FUSE binding (native addon, fuse-native), each suite
 * with its own daemon, so both bindings pass one set of tests.
 */
export function perBinding(name: string, body: (test: Test, fuse: FuseBindingName) => void): void {
  for (const fuse of FUSE_BINDINGS) {
    const t = suite(`${name} [${fuse}]`)
    body(t, fuse)
    t.run()
  }
}

/** fuse: the binding `vsm up` asks for (its default when absent); env: extra environment for the CLI and daemon. */
export function makeVsm(opts: { deviceSize?: string; home?: string; fuse?: FuseBindingName; env?: Record<string, string> } = {}): Vsm {
  // Tagged with the runner's pid so its leak sweep touches only its own daemons.
  const home = opts.home ?? mkdtempSync(join(tmpdir(), `vsm-test-${process.env.VSM_RUNNER_ID ?? 'solo'}-`))
  const mount = join(home, 'mnt')
  const run = (...args: string[]) => new Promise<string>((res, rej) => {
    execFile(VSM, [...args, '--home', home], { maxBuffer: 64 << 20, env: { ...process.env, ...opts.env } }, (err, stdout, stderr) => {
      if (err) rej(Object.assign(new Error(`vsm ${args.join(' ')}: ${stderr.trim() || err.message}`), { code: (err as any).code, stderr, stdout }))
      else res(stdout)
    })
  })
  const pid = () => Number(readFileSync(join(home, 'vsm.pid'), 'utf8'))
  const vsm: Vsm = {
    home, mount, run,
    json: async (...args) => JSON.parse(await run(...args, '--json')),
    up: async (...extra) => { await run('up', '--device-size', opts.deviceSize ?? '2G', ...(opts.fuse ? ['--fuse', opts.fuse] : []), ...extra) },
    down: async () => { await run('down') },
    pid,
    kill9: () => {
      try { process.kill(pid(), 'SIGKILL') } catch { /* already gone */ }
      const deadline = Date.now() + 10_000
      // SIGKILL lands within milliseconds; sleep between looks instead of spinning a core
      while (Date.now() < deadline && processAlive(pid())) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10)
      unmountQuietly(mount)
    },
    cleanup: async () => {
      try { await run('down') } catch { /* not running */ }
      try { vsm.kill9() } catch { /* no pid file */ }
      unmountQuietly(mount)
      rmSync(home, { recursive: true, force: true })
    },
  }
  // A test process that dies before its after-hooks (an uncaught error, uvu exiting
  // early) must still not leave a daemon and its mount behind for the next run.
  process.on('exit', () => {
    try { process.kill(pid(), 'SIGKILL') } catch { /* not running */ }
    unmountQuietly(mount)
  })
  return vsm
}

export function unmountQuietly(path: string) {
  for (const cmd of [['fusermount', '-uz', path], ['umount', '-l', path]]) {
    try { execFileSync(cmd[0], cmd.slice(1), { stdio: 'ignore' }); return } catch { /* next */ }
  }
}

/** Polls ok every 50 ms until it holds; throws "timed out waiting for <what>" after ms. */
export async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
