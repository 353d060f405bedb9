// The daemon's life: SIGTERM flushes and unmounts; `up` after kill -9 clears the stale
// mount itself; a pool missing a device its layout cannot run without is refused with
// a clear message, while the mirrored default runs degraded without one copy.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { existsSync, readFileSync, renameSync, writeFileSync } from 'fs'
import { join } from 'path'
import { makeVsm, RunError } from './helpers/daemon'
import { isMounted } from '../src/daemon/mounts'
import { processAlive } from '../src/cli/up'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

test('SIGTERM flushes, unmounts and removes the pid file', async () => {
  await vsm.up()
  writeFileSync(join(vsm.mount, 'note.txt'), 'kept\n')
  const pid = vsm.pid()
  process.kill(pid, 'SIGTERM')
  for (let i = 0; i < 200 && processAlive(pid); i++) await sleep(50)
  assert.not.ok(processAlive(pid), 'daemon still running after SIGTERM')
  assert.not.ok(isMounted(vsm.mount), 'still mounted after SIGTERM')
  assert.not.ok(existsSync(join(vsm.home, 'vsm.pid')))
  await vsm.up()
  assert.is(readFileSync(join(vsm.mount, 'note.txt'), 'utf8'), 'kept\n')
})

test('up after kill -9 clears the stale mount by itself', async () => {
  const pid = vsm.pid()
  process.kill(pid, 'SIGKILL')
  for (let i = 0; i < 200 && processAlive(pid); i++) await sleep(50)
  assert.ok(isMounted(vsm.mount), 'a killed FUSE daemon leaves its mount behind')
  await vsm.up()
  assert.is(readFileSync(join(vsm.mount, 'note.txt'), 'utf8'), 'kept\n')
})

test('a missing concat member is refused at up with the device named; the mirror runs degraded', async () => {
  await vsm.run('device', 'add', 'd2', join(vsm.home, 'd2.img'), '--size', '64M')
  await vsm.run('device', 'add', 'd3', join(vsm.home, 'd3.img'), '--size', '64M')
  await vsm.run('volume', 'create', 'cat', '--layout', 'concat', '--devices', 'd2,d3', '--size', '100M')
  await vsm.down()
  renameSync(join(vsm.home, 'd3.img'), join(vsm.home, 'd3.away'))
  try {
    await vsm.up()
    assert.unreachable('up succeeded with a concat member missing')
  } catch (e) {
    const msg = (e as RunError).stderr.trim()
    assert.is(msg.split('\n').length, 1, msg)
    assert.match(msg, /d3/)
  }
  assert.not.ok(isMounted(vsm.mount))
  renameSync(join(vsm.home, 'd3.away'), join(vsm.home, 'd3.img'))
  renameSync(join(vsm.home, 'devices', 'd1.img'), join(vsm.home, 'devices', 'd1.away'))
  await vsm.up()
  const st = await vsm.json('status')
  assert.is(st.volumes.find((v: any) => v.name === 'vol0').state, 'degraded')
  assert.is(readFileSync(join(vsm.mount, 'note.txt'), 'utf8'), 'kept\n')
})

test.run()
