// A first `vsm up` (which makes the default pool, its devices, vol0 and the fs) killed
// with -9 at random points: the next `vsm up` comes up with the whole default pool
// (two devices, a healthy mirror, a clean fs that takes a disk), whatever step the
// first one died in.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { existsSync, promises as fsp } from 'fs'
import { join } from 'path'
import { randomBytes } from 'crypto'
import { makeVsm } from './helpers/daemon'

const ROUNDS = Number(process.env.FIRST_START_ROUNDS ?? 5)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls until cond holds (or 30 s pass); true if it did. */
async function until(cond: () => boolean): Promise<boolean> {
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(2)) if (cond()) return true
  return false
}

test(`a first vsm up killed at ${ROUNDS} random points: the next vsm up makes the whole default pool`, async () => {
  // how long an uninterrupted first start spends making the default, to spread the kills over it
  const probe = makeVsm({ deviceSize: '1G' })
  const marker = (home: string) => existsSync(join(home, 'making-default.json'))
  let span: number
  try {
    const up = probe.up()
    assert.ok(await until(() => marker(probe.home)), 'the first start marks the home while it makes the default')
    const t0 = Date.now()
    await until(() => !marker(probe.home))
    span = Date.now() - t0
    await up
  } finally {
    await probe.cleanup()
  }
  const midway: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    const vsm = makeVsm({ deviceSize: '1G' })
    try {
      // the CLI reports the daemon's death; what matters is the next start
      const first = vsm.up().catch(() => {})
      await until(() => marker(vsm.home))
      const at = Math.floor(Math.random() * span * 1.2)
      await sleep(at)
      if (marker(vsm.home)) midway.push(at)
      vsm.kill9()
      await first
      await vsm.up()
      const vols = await vsm.json('volume', 'list')
      assert.equal(vols.map((v: any) => [v.name, v.layout, v.state, v.devices.join()]), [['vol0', 'mirror', 'healthy', 'd0,d1']], `round ${round} (killed ${at} ms into making the default)`)
      assert.ok((await vsm.json('fs', 'check')).ok, `round ${round}: fs check`)
      await vsm.run('disk', 'create', 'a.img', '--size', '8M')
      const data = randomBytes(1 << 20)
      await fsp.writeFile(join(vsm.mount, 'a.img'), data)
      await vsm.down()
      await vsm.up()
      assert.ok((await fsp.readFile(join(vsm.mount, 'a.img'))).subarray(0, data.length).equals(data), `round ${round}: disk data after a restart`)
      assert.not.ok(marker(vsm.home), 'the marker is gone once the default is made')
    } finally {
      await vsm.cleanup()
    }
  }
  console.log(`first start: ${span!} ms making the default; ${midway.length} of ${ROUNDS} kills landed in it (at ${midway.join(', ')} ms)`)
})

test.run()
