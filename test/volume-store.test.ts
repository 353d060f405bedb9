// The pool config store: every change is one new version (seq + 1) with a record of
// what it was, written to every label and pool.json; the archive in <home>/archive keeps
// the recent versions; a kill -9 between the label writes of one change still
// assembles the newest whole version.
import * as path from 'path'
import { promises as fsp } from 'fs'
import { spawnSync } from 'child_process'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { MiB, poolFixture } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import { openDevice } from '../src/volume/device'
import { readLabel } from '../src/volume/label'
import { ARCHIVE_DIR, ARCHIVE_KEEP, ConfigStore } from '../src/volume/store'

const t = suite('volume config store')
const { track, f, home } = poolFixture(t)
const CHILD = path.join(__dirname, 'helpers', 'store-child.js')

t('each change bumps seq by one and records what it was; the archive keeps the last versions', async () => {
  const pool = track(await Pool.create(home()))
  // each change and the records of the versions it makes: an offline of an open volume
  // makes two (the layout records its member's loss, then the device's state), so does
  // an online with the resync it starts
  const steps: [() => Promise<unknown>, RegExp[]][] = [
    [() => pool.addDevice('a', f('a.img'), 16 * MiB), [/^device a added \(.*a\.img, 16777216 bytes\)$/]],
    [() => pool.addDevice('b', f('b.img'), 16 * MiB), [/^device b added/]],
    [() => pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b'], size: 4 * MiB }).then(() => pool.openVolume('m')), [/^volume m created: mirror, \d+ bytes on a,b$/]],
    [() => pool.offlineDevice('b'), [/^member 1 of volume m on device b failed: I\/O error: taken offline by the operator$/, /^device b taken offline: volumes m degraded$/]],
    [async () => {
      const { jobs } = await pool.onlineDevice('b')
      assert.is(jobs.length, 1)
      await pool.jobs.wait(jobs[0])
    }, [/^device b online: resync of m$/, /^volume m: member 1 on device b resynced$/]],
    // last: a spare would take over from the offline copy above, a change of its own
    [() => pool.addDevice('s', f('s.img'), 16 * MiB, true), [/^device s added as a spare/]],
  ]
  let history = await pool.history()
  assert.equal(history.map((v) => [v.seq, v.change]), [[1, 'pool created']])
  for (const [step, res] of steps) {
    const seq = pool.seq
    await step()
    history = await pool.history()
    const mine = history.filter((v) => v.seq > seq)
    assert.equal(mine.map((v) => v.seq), res.map((_, i) => seq + 1 + i), `versions of ${res}: ${mine.map((v) => v.change).join(' | ')}`)
    assert.is(pool.seq, seq + res.length)
    res.forEach((re, i) => assert.match(mine[i].change, re))
    for (const v of mine) assert.ok(Math.abs(Date.parse(v.at) - Date.now()) < 60_000, 'time of the change')
  }

  // add and remove a device until more than ARCHIVE_KEEP versions have gone by
  for (let i = 0; i < ARCHIVE_KEEP / 2 + 1; i++) {
    await pool.addDevice('x', f('x.img'), 8 * MiB)
    await pool.removeDevice('x')
  }
  history = await pool.history()
  assert.is(history.length, ARCHIVE_KEEP)
  assert.equal(history.map((v) => v.seq), Array.from({ length: ARCHIVE_KEEP }, (_, i) => pool.seq - ARCHIVE_KEEP + 1 + i))
  assert.match(history[history.length - 1].change, /^device x removed$/)
  const files = (await fsp.readdir(path.join(home(), ARCHIVE_DIR))).sort()
  assert.is(files.length, ARCHIVE_KEEP, files.join(' '))
  // an archived version is the whole config as it was then
  const store = new ConfigStore(home(), pool.config, () => null)
  const older = await store.archived(pool.seq - 1)
  assert.ok(older.devices.some((d) => d.name === 'x'), 'x was still there one version ago')
  assert.not.ok(pool.config.devices.some((d) => d.name === 'x'))
})

t('a refused change writes no version', async () => {
  const pool = track(await Pool.create(home()))
  await pool.addDevice('a', f('a.img'), 16 * MiB)
  const seq = pool.seq
  await pool.createVolume('bad', { layout: 'raid5', devices: ['a'], size: MiB }).then(() => assert.unreachable(), () => {})
  await pool.removeDevice('nope').then(() => assert.unreachable(), () => {})
  assert.is(pool.seq, seq)
  assert.is((await pool.history()).length, seq)
})

for (const after of [1, 2, 3]) {
  t(`kill -9 after ${after} of 3 label writes of a change: the newest whole version is assembled`, async () => {
    const pool = await Pool.create(home())
    for (const n of ['a', 'b', 'c']) await pool.addDevice(n, f(`${n}.img`), 24 * MiB)
    await pool.createVolume('v1', { layout: 'mirror', devices: ['a', 'b'], size: 4 * MiB })
    const data = Buffer.alloc(MiB, 0x5a)
    const v1 = await pool.openVolume('v1')
    await v1.write(data, MiB)
    await v1.flush()
    const before = pool.seq
    await pool.close()

    const r = spawnSync(process.execPath, [CHILD, home(), String(after)], { encoding: 'utf8', timeout: 60_000 })
    assert.is(r.signal, 'SIGKILL', `child was to die by kill -9: ${r.status} ${r.stdout} ${r.stderr}`)

    const again = track(await Pool.open(home()))
    // one label of seq+1 is enough: it names the new volume whole, and assembly follows it
    assert.is(again.seq, before + 1)
    const v2 = again.volumeInfo('v2')
    assert.is(v2.layout, 'raid5')
    assert.is(v2.state, 'healthy')
    const cfg = again.config
    for (const d of cfg.devices) assert.ok(d.extents.some((e) => e.volume === 'v2'), `v2 has its extent on ${d.name}`)
    // every label and pool.json caught up, and the version is in the history
    for (const n of ['a', 'b', 'c']) {
      const dev = await openDevice(f(`${n}.img`))
      try { assert.is((await readLabel(dev)).label!.seq, before + 1, `label of ${n}`) } finally { await dev.close() }
    }
    assert.is((await ConfigStore.readFile(home()))!.seq, before + 1)
    assert.match((await again.history()).pop()!.change, /^volume v2 created: raid5/)
    const back = Buffer.alloc(MiB)
    await (await again.openVolume('v1')).read(back, MiB)
    assert.ok(back.equals(data), 'v1 kept its data')
    const w = await again.openVolume('v2')
    await w.write(data, 0)
    await w.flush()
  })
}

t.run()
