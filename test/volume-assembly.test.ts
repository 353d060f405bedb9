// Assembly from the devices alone: with pool.json deleted the pool is rebuilt from the
// newest configuration in the device labels (devices found wherever they now are under
// the home); a device of another pool is refused with the reason, and a device whose
// label is older than the pool (it missed changes) is not trusted until resynced.
import * as path from 'path'
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import { Raid5Dev } from '../src/volume/raid5'

const t = suite('volume assembly from labels')
let tmp: { dir: string; cleanup: () => Promise<void> }
const pools: Pool[] = []
t.before.each(async () => { tmp = await tmpDir() })
t.after.each(async () => {
  for (const p of pools.splice(0)) await p.close().catch(() => {})
  await tmp.cleanup()
})
const home = () => path.join(tmp.dir, 'home')
const dev = (n: string) => path.join(home(), 'devices', `${n}.img`)
const track = (p: Pool) => { pools.push(p); return p }

async function build() {
  const pool = track(await Pool.create(home()))
  await fsp.mkdir(path.join(home(), 'devices'))
  for (const n of ['a', 'b', 'c']) await pool.addDevice(n, dev(n), 40 * MiB)
  await pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b'], size: 8 * MiB })
  await pool.createVolume('r', { layout: 'raid5', devices: ['a', 'b', 'c'], size: 8 * MiB })
  const data = new Map<string, Buffer>()
  for (const name of ['m', 'r']) {
    const v = await pool.openVolume(name)
    const b = randomBytes(v.size)
    await v.write(b, 0)
    data.set(name, b)
  }
  return { pool, data }
}

async function check(pool: Pool, data: Map<string, Buffer>) {
  for (const [name, want] of data) {
    const v = await pool.openVolume(name)
    const got = Buffer.alloc(want.length)
    await v.read(got, 0)
    assert.ok(got.equals(want), `volume ${name}`)
  }
}

t('pool.json deleted: assembled from labels, devices found where they moved, a foreign device refused', async () => {
  const { pool, data } = await build()
  const seq = pool.seq
  await pool.close()
  // a device of another pool dropped into the same directory
  const other = track(await Pool.create(path.join(tmp.dir, 'other')))
  await other.addDevice('x', path.join(home(), 'devices', 'x.img'), 8 * MiB)
  await other.close()
  await fsp.rm(path.join(home(), 'pool.json'))
  await fsp.rename(dev('c'), dev('c-moved'))
  assert.ok(await Pool.exists(home()))
  const again = track(await Pool.open(home()))
  assert.is(again.seq, seq)
  assert.equal(again.listVolumes().map((v) => [v.name, v.state]), [['m', 'healthy'], ['r', 'healthy']])
  assert.is(again.listDevices().find((d) => d.name === 'c')!.path, dev('c-moved'))
  assert.is(again.refused.length, 1)
  assert.match(again.refused[0].reason, /x\.img belongs to another vsm pool .* not used/)
  await check(again, data)
  assert.ok(await fsp.stat(path.join(home(), 'pool.json')), 'pool.json written back')
})

t('a device with an older label is not trusted: its copy stays out until online resyncs it', async () => {
  const { pool, data } = await build()
  await pool.close()
  await fsp.rename(dev('b'), dev('b.away'))
  let p = track(await Pool.open(home()))
  assert.is(p.volumeInfo('m').state, 'degraded')
  // written while b is away: b's copy is now stale
  const v = await p.openVolume('m')
  const more = randomBytes(MiB)
  await v.write(more, 2 * MiB)
  more.copy(data.get('m')!, 2 * MiB)
  await p.close()
  await fsp.rename(dev('b.away'), dev('b'))
  p = track(await Pool.open(home()))
  const b = p.listDevices().find((d) => d.name === 'b')!
  assert.match(b.reason!, /label is at seq \d+, the pool at \d+: it missed changes/)
  assert.is(p.volumeInfo('m').state, 'degraded')
  await check(p, data)
  const { jobs } = await p.onlineDevice('b')
  for (const j of jobs) assert.not.ok((await p.jobs.wait(j)).error)
  assert.equal(p.listVolumes().map((x) => x.state), ['healthy', 'healthy'])
  await check(p, data)
})

t('no pool.json and no labelled device: a clear error', async () => {
  await fsp.mkdir(home(), { recursive: true })
  assert.not.ok(await Pool.exists(home()))
  await Pool.open(home()).then(() => assert.unreachable(), (e) => {
    assert.is(e.code, 'ENOENT')
    assert.match(e.message, /pool\.json not found, and no device .* carries a vsm label/)
  })
})

t('a raid5 volume from before checksums (no `checksums` in its config) still opens, reads and writes', async () => {
  const { pool, data } = await build()
  await pool.close()
  // a config of the same seq as the labels wins; the extent keeps its old length
  const cfg = JSON.parse(await fsp.readFile(path.join(home(), 'pool.json'), 'utf8'))
  delete cfg.volumes.find((v: { name: string }) => v.name === 'r').checksums
  await fsp.writeFile(path.join(home(), 'pool.json'), JSON.stringify(cfg))
  const again = track(await Pool.open(home()))
  assert.is(again.config.volumes.find((v) => v.name === 'r')!.checksums, undefined)
  await check(again, data)
  const v = await again.openVolume('r')
  const b = randomBytes(300_000)
  await v.write(b, 1234)
  b.copy(data.get('r')!, 1234)
  await check(again, data)
  // it kept no write-intent bits before: a member back from offline is rebuilt in full
  await again.offlineDevice('c')
  const { jobs } = await again.onlineDevice('c')
  const copied = await Promise.all(jobs.map(async (j) => (await again.jobs.wait(j)).result as { volume: string; copied: number }))
  const r = copied.find((x) => x.volume === 'r')!
  const r5 = again.layoutOf('r') as Raid5Dev
  assert.is(r.copied, r5.rows * again.config.volumes.find((v) => v.name === 'r')!.stripeUnit!)
  await check(again, data)
})

t.run()
