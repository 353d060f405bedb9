// Log overflow between two real homes over a real sshd on 127.0.0.1: with the
// secondary down, a writer fsyncing 40 MiB into a disk in the FUSE view overflows the
// primary's 8 MiB log; it never stalls and the group says logging-to-bitmap. The
// secondary comes back, opens its resync snapshot and is killed with -9 mid-resync: its
// snapshot (read offline) is byte for byte the replica it held before the link went.
// Back up, the primary is killed with -9 mid-resync and restarted: the resync resumes
// from the bitmap, `vsm repl verify` finds no difference online, both sites' volumes
// end byte-identical and the replicated fs holds everything the writer wrote.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { closeSync, fsyncSync, mkdtempSync, openSync, writeSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { makeVsm, VSM } from './helpers/daemon'
import { startSshd, type Sshd } from './helpers/sshd'
import { diskFrom, until as untilAt, volumeBytes, withPool, stopSites } from './helpers/repl-sites'
import { loadReplicaState } from '../src/replicator/applier'
import { ResyncSnapshot } from '../src/replicator/snapshot'

const MiB = 1 << 20
const DISK = 48 * MiB
const dir = mkdtempSync(join(tmpdir(), `vsm-test-${process.env.VSM_RUNNER_ID ?? 'solo'}-sshovf-`))
const primary = makeVsm({ deviceSize: '128M' })
const secondary = makeVsm({ deviceSize: '384M' })
let sshd: Sshd | null = null

const until = <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, ms?: number) => untilAt([secondary.home, primary.home], what, get, ok, ms)
const status = async (v: typeof primary) => (await v.json('repl', 'status', 'g'))[0]

/** Writes pattern bytes over [from, to) of the disk file, fsyncing every 4 MiB; returns the expected disk image updated. */
function writeRange(file: string, expect: Buffer, from: number, to: number, fill: number) {
  const fd = openSync(file, 'r+')
  try {
    for (let at = from; at < to; at += 4 * MiB) {
      const chunk = Buffer.alloc(Math.min(4 * MiB, to - at), fill)
      chunk.writeUInt32LE(at / MiB, 0)
      writeSync(fd, chunk, 0, chunk.length, at)
      fsyncSync(fd)
      chunk.copy(expect, at)
    }
  } finally { closeSync(fd) }
}

test.before(async () => { sshd = await startSshd(dir) })

test.after(() => stopSites([primary, secondary], sshd, dir))

test('overflow over ssh: writers never stall, the secondary keeps its pre-resync image through kill -9 mid-resync, the resync resumes after a primary kill -9, both sites equal', async () => {
  await secondary.run('up', '--secondary', '--device-size', '384M')
  await primary.up()
  await primary.run('device', 'add', 'e0', join(primary.home, 'e0.img'), '--size', '64M')
  await primary.run('disk', 'create', 'w.img', '--size', `${DISK / MiB}M`)
  const img = join(primary.mount, 'w.img')
  const expect = Buffer.alloc(DISK)
  writeRange(img, expect, 0, 8 * MiB, 0x41)
  await primary.run('repl', 'create', 'g', '--target', `ssh://root@127.0.0.1:${sshd!.port}${secondary.home}`, '--mode', 'async',
    '--identity', sshd!.identity, '--known-hosts', sshd!.knownHosts, '--remote-vsm', VSM, '--log-size', '8M')
  await until('the initial sync', () => status(primary), (s) => s.state === 'replicating' && s.lagBytes === 0)

  // the link goes: the secondary stops; what it holds now is the image a resync must never lose
  await secondary.down()
  const before = await volumeBytes(secondary.home, 'vol0')
  writeRange(img, expect, 4 * MiB, 44 * MiB, 0x42)
  const st = await until('logging to the bitmap', () => status(primary), (s) => s.state === 'logging-to-bitmap')
  assert.ok(st.bitmapDirtyBytes >= 32 * MiB, `marked ${st.bitmapDirtyBytes} bytes`)

  // the secondary returns and the resync opens its snapshot; kill -9 in the middle
  await secondary.run('up', '--secondary')
  const mid = await until('the resync to open on the secondary', () => status(secondary), (s) => s.resyncPoint !== null && s.appliedRecords > 1, 180_000)
  secondary.kill9()
  await withPool(secondary.home, async (pool) => {
    const state = await loadReplicaState(await pool.openVolume('repl.g'))
    assert.ok(state?.resync, `the resync is open in the replica state after the kill (status said point ${mid.resyncPoint})`)
    const vol = await pool.openVolume('vol0')
    const snap = await ResyncSnapshot.open(await pool.openVolume('repl-snap.g'), [vol])
    const view = Buffer.alloc(vol.size)
    await snap.read(0, view, 0)
    assert.ok(view.equals(before), 'the snapshot is byte for byte the replica as it was before the link went')
  })

  // the secondary returns again; the primary dies mid-resync and comes back
  await secondary.run('up', '--secondary')
  await until('the resync to go on', () => status(secondary), (s) => s.appliedRecords > 1, 180_000)
  primary.kill9()
  await primary.up()
  const done = await until('the resync to finish', () => status(primary), (s) => s.state === 'replicating' && s.lagBytes === 0 && s.secondaryDurableSeq === s.headSeq, 180_000)
  assert.is(done.bitmapDirtyBytes, 0)
  assert.is((await status(secondary)).resyncPoint, null, 'the snapshot is closed')
  // online verify over the link: every block of vol0 compared, none differs
  const verified = await primary.json('repl', 'verify', 'g')
  assert.ok(verified.comparedBytes >= DISK, `compared ${verified.comparedBytes}`)
  assert.equal(verified.differences, [])

  await primary.down()
  await secondary.down()
  const [p, q] = [await volumeBytes(primary.home, 'vol0'), await volumeBytes(secondary.home, 'vol0')]
  assert.ok(p.equals(q), 'the secondary\'s vol0 is byte-identical to the primary\'s')
  assert.ok((await diskFrom(secondary.home, 'w.img')).equals(expect), 'the replicated disk holds everything written')
})

test.run()
