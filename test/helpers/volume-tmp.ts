// Temp directories and loop devices for the volume tests; everything made here is
// removed by the returned cleanup, which tests call in finally/after hooks.
import { promises as fsp } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { execFileSync } from 'child_process'
import type { Test } from 'uvu'
import type { Pool } from '../../src/volume/pool'

export async function tmpDir(tag = 'vsm-volume-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), tag))
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) }
}

/** Attach file to a free loop device; null if the machine cannot (not root, no loop driver). */
export function attachLoop(file: string): { dev: string; detach: () => void } | null {
  try {
    const dev = execFileSync('losetup', ['-f', '--show', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
    return {
      dev,
      detach: () => {
        try { execFileSync('losetup', ['-d', dev], { stdio: 'ignore' }) } catch { /* already gone */ }
      },
    }
  } catch {
    return null
  }
}

export const MiB = 1 << 20
export const GiB = 1 << 30

/**
 * The data of copy (member) i of a volume, read from its device file (pool closed or
 * not). Its checksum table is left out: tagged with where the copy lies, it differs
 * between copies by design.
 */
export async function copyData(pool: Pool, volume: string, i: number): Promise<Buffer> {
  const m = pool.volumeInfo(volume).members[i]
  const file = pool.listDevices().find((d) => d.name === m.device)!.path
  const fh = await fsp.open(file, 'r')
  try {
    const b = Buffer.alloc(m.length - (pool.config.volumes.find((v) => v.name === volume)!.checksums ?? 0))
    await fh.read(b, 0, b.length, MiB + m.offset)
    return b
  } finally { await fh.close() }
}

/**
 * The pool suites' fixture: a fresh temp dir per test, and every pool the test hands to
 * track() closed before the dir is removed.
 */
export function poolFixture(t: Test) {
  let tmp: { dir: string; cleanup: () => Promise<void> }
  let pools: Pool[] = []
  t.before.each(async () => { tmp = await tmpDir(); pools = [] })
  t.after.each(async () => {
    for (const p of pools) await p.close().catch(() => {})
    await tmp.cleanup()
  })
  const f = (n: string) => path.join(tmp.dir, n)
  return { track: (p: Pool) => { pools.push(p); return p }, f, home: () => f('home') }
}
