// Two vsm homes replicating over a real sshd, as the replicator's end-to-end tests use
// them: a suite's pair of homes and its sshd, bringing both sites up and creating a group
// between them, stopping them, polling a status with a deadline (the failure names both sites' recent
// replication log lines), and reading a stopped home's pool offline (a volume's bytes,
// a disk of the replicated fs as a takeover would mount it).
import * as assert from 'uvu/assert'
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { FileSystem } from '../../src/fs'
import { Pool } from '../../src/volume/pool'
import { MemDev } from './fs-memdev'
import { makeVsm, VSM, type Vsm } from './daemon'
import { startSshd, type Sshd } from './sshd'

/**
 * A suite's sites: its directory (tagged `tag`), a primary and a secondary home, and an
 * sshd started before the suite's tests; after them both homes, the sshd and the directory go.
 */
export function sitePair(suite: { before(fn: () => unknown): void; after(fn: () => unknown): void }, tag: string, secondarySize = '256M') {
  const dir = mkdtempSync(join(tmpdir(), `vsm-test-${process.env.VSM_RUNNER_ID ?? 'solo'}-${tag}-`))
  const primary = makeVsm({ deviceSize: '192M' })
  const secondary = makeVsm({ deviceSize: secondarySize })
  let sshd: Sshd | null = null
  suite.before(async () => { sshd = await startSshd(dir) })
  suite.after(() => stopSites([primary, secondary], sshd, dir))
  return {
    dir, primary, secondary,
    sshd: () => sshd!,
    /** until() naming both homes' logs. */
    until: <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, ms?: number) => until([secondary.home, primary.home], what, get, ok, ms),
  }
}

/** The secondary up, then the primary with a 64 MiB device e0 (room for a group's log) and a disk `disk` of `size`. */
export async function upWithDisk(primary: Vsm, secondary: Vsm, disk: string, size: string): Promise<void> {
  await secondary.up('--secondary')
  await primary.up()
  await primary.run('device', 'add', 'e0', join(primary.home, 'e0.img'), '--size', '64M')
  await primary.run('disk', 'create', disk, '--size', size)
}

/** `vsm repl create GROUP` on the primary, to the secondary's home over sshd; options: --mode, --log-size and the like. */
export const replCreate = (primary: Vsm, secondary: Vsm, sshd: Sshd, group: string, ...options: string[]) =>
  primary.run('repl', 'create', group, '--target', `ssh://root@${sshd.host}:${sshd.port}${secondary.home}`,
    '--identity', sshd.identity, '--known-hosts', sshd.knownHosts, '--remote-vsm', VSM, ...options)

/** Test cleanup: both homes stopped, then sshd, then its directory. */
export async function stopSites(homes: Array<{ cleanup(): Promise<void> }>, sshd: { stop(): void } | null, dir: string): Promise<void> {
  try {
    for (const h of homes) await h.cleanup()
  } finally {
    sshd?.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function logTail(home: string): string {
  try { return readFileSync(join(home, 'log', 'vsm.log'), 'utf8').split('\n').filter((l) => /repl|error|warn/i.test(l)).slice(-8).join('\n') } catch { return '(none)' }
}

/** Polls get() until ok(); on timeout the error holds the last value and each home's recent replication log lines. */
export async function until<T>(homes: string[], what: string, get: () => Promise<T>, ok: (v: T) => boolean, ms = 120_000): Promise<T> {
  const deadline = Date.now() + ms
  let last: T | undefined
  for (;;) {
    try { last = await get(); if (ok(last)) return last } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}; ${homes.map((h) => `log of ${h}: ${logTail(h)}`).join('; ')}`)
    await sleep(200)
  }
}

/** Opens a stopped home's pool for fn. */
export async function withPool<T>(home: string, fn: (pool: Pool) => Promise<T>): Promise<T> {
  const pool = await Pool.open(home)
  try { return await fn(pool) } finally { await pool.close() }
}

/** The whole of a volume of a stopped home. */
export function volumeBytes(home: string, name: string): Promise<Buffer> {
  return withPool(home, async (pool) => {
    const vol = await pool.openVolume(name)
    const buf = Buffer.alloc(vol.size)
    await vol.read(buf, 0)
    return buf
  })
}

/**
 * The bytes of a disk in the fs on a stopped home's vol0, mounted here (a takeover's
 * view of the replicas); the fs must check clean. It mounts a copy: a mount recovers and
 * checkpoints, and a secondary that goes on following must hold only what it was sent.
 */
export async function diskFrom(home: string, disk: string): Promise<Buffer> {
  const bytes = await volumeBytes(home, 'vol0')
  const vol = new MemDev(bytes.length)
  await vol.write(bytes, 0)
  await vol.flush()
  const fs = await FileSystem.mount([vol], { volumeNames: ['vol0'] })
  try {
    const ino = fs.lookup(`/${disk}`)
    const buf = Buffer.alloc(fs.sizeOf(ino))
    await fs.read(ino, buf, 0)
    assert.ok((await fs.check()).ok, 'the replicated fs checks clean')
    return buf
  } finally { await fs.close() }
}

/** Writes each [offset, bytes] into the file at path, then fsyncs it: writes a site has acknowledged. */
export function writeSynced(path: string, writes: Array<[number, Buffer]>): void {
  const fd = openSync(path, 'r+')
  try {
    for (const [off, data] of writes) writeSync(fd, data, 0, data.length, off)
    fsyncSync(fd)
  } finally { closeSync(fd) }
}

/** The first `size` bytes of the file at path (a disk as a site serves it). */
export function readAll(path: string, size: number): Buffer {
  const fd = openSync(path, 'r')
  try {
    const b = Buffer.alloc(size)
    readSync(fd, b, 0, size, 0)
    return b
  } finally { closeSync(fd) }
}
