// kill -9 of the daemon at a random point of a relayout or move job while a writer
// streams fsync'd writes into a disk on the volume. After `vsm up` the job runs to its
// end, the volume has its new shape, every acknowledged write is there and the fs
// checks clean.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { SLOT, startWriter, verifyAcknowledged } from './helpers/crash-writer'

const vsm = makeVsm({ deviceSize: '512M' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const SLOTS = 256

const steps: Array<{ args: string[]; check: (v: any) => boolean }> = [
  { args: ['volume', 'relayout', 'vol0', '--layout', 'concat', '--devices', 'e0'], check: (v) => v.layout === 'concat' && v.devices.join() === 'e0' },
  { args: ['volume', 'relayout', 'vol0', '--layout', 'mirror', '--devices', 'e0,e1'], check: (v) => v.layout === 'mirror' },
  { args: ['volume', 'move', 'vol0', '--from', 'e1', '--to', 'e2'], check: (v) => v.devices.includes('e2') && !v.devices.includes('e1') },
]

test('kill -9 during relayout and move: the job finishes after up and no acknowledged write is lost', async () => {
  await vsm.up()
  await vsm.run('device', 'add', 'e0', join(vsm.home, 'e0.img'), '--size', '2G')
  await vsm.run('device', 'add', 'e1', join(vsm.home, 'e1.img'), '--size', '2G')
  await vsm.run('device', 'add', 'e2', join(vsm.home, 'e2.img'), '--size', '2G')
  await vsm.run('disk', 'create', 'w.img', '--size', `${(SLOTS * SLOT) >> 20}M`)
  const img = join(vsm.mount, 'w.img')
  const journal = join(vsm.home, 'writer.journal')
  for (const [round, step] of steps.entries()) {
    const writer = startWriter(img, journal, SLOTS, round + 1)
    await sleep(300)
    await vsm.run(...step.args)
    await sleep(100 + Math.random() * 1500)
    vsm.kill9()
    await writer
    await vsm.up()
    for (const j of await vsm.json('job', 'list')) if (j.state !== 'concluded') await vsm.json('job', 'wait', String(j.id))
    const v = await vsm.json('volume', 'show', 'vol0')
    assert.ok(step.check(v), `after ${step.args.join(' ')}: ${JSON.stringify({ layout: v.layout, devices: v.devices, state: v.state })}`)
    assert.is(v.state, 'healthy')
    assert.ok(verifyAcknowledged(img, journal) > 0, 'no acknowledged writes to check')
    const fsck = await vsm.json('fs', 'check')
    assert.ok(fsck.ok, fsck.errors.join('; '))
  }
})

test.run()
