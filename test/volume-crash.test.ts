// kill -9 of the daemon during a relayout or move job while a writer streams fsync'd
// writes into a disk on the volume: at a random point, or once the copy has saved a
// checkpoint; one relayout goes back onto the devices the default mirror filled to
// the last byte. After `vsm up` the job runs to its end (from the checkpoint when there
// was one, copying less than the whole volume), the volume has its new shape, every
// acknowledged write is there and the fs checks clean.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { join } from 'path'
import { promises as fsp } from 'fs'
import { makeVsm } from './helpers/daemon'
import { SLOT, startWriter, verifyAcknowledged } from './helpers/crash-writer'

const vsm = makeVsm({ deviceSize: '512M' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const SLOTS = 256
const MiB = 1 << 20

const steps: Array<{ args: string[]; check: (v: any) => boolean; afterCheckpoint: boolean }> = [
  { args: ['volume', 'relayout', 'vol0', '--layout', 'concat', '--devices', 'e0'], check: (v) => v.layout === 'concat' && v.devices.join() === 'e0', afterCheckpoint: true },
  { args: ['volume', 'move', 'vol0', '--from', 'e0', '--to', 'e1'], check: (v) => v.layout === 'concat' && v.devices.join() === 'e1', afterCheckpoint: true },
  // back onto the devices the default mirror filled to the last byte
  { args: ['volume', 'relayout', 'vol0', '--layout', 'mirror', '--devices', 'd0,d1'], check: (v) => v.layout === 'mirror' && v.devices.join() === 'd0,d1', afterCheckpoint: false },
]

/** Polls until the running reshape has saved a checkpoint of at least `min` bytes; returns it. */
async function checkpointAtLeast(min: number): Promise<number> {
  for (let i = 0; i < 600; i++) {
    const { reshape } = await vsm.json('volume', 'show', 'vol0')
    // ended already: polling on would only spin out the time allowed
    if (!reshape) throw new Error(`the reshape ended before a checkpoint of ${min} bytes`)
    if ((reshape.copied ?? 0) >= min) return reshape.copied
    await sleep(20)
  }
  throw new Error(`no checkpoint of ${min} bytes within the time allowed`)
}

test('kill -9 during relayout and move: the job finishes after up and no acknowledged write is lost', async () => {
  await vsm.up()
  await vsm.run('device', 'add', 'e0', join(vsm.home, 'e0.img'), '--size', '2G')
  await vsm.run('device', 'add', 'e1', join(vsm.home, 'e1.img'), '--size', '2G')
  // a copy takes only what was ever written: most of the volume is, so it runs long enough to checkpoint
  await vsm.run('disk', 'create', 'fill.img', '--size', '320M')
  const fh = await fsp.open(join(vsm.mount, 'fill.img'), 'r+')
  try {
    for (let off = 0; off < 320 * MiB; off += 4 * MiB) await fh.write(Buffer.alloc(4 * MiB, off / MiB), 0, 4 * MiB, off)
    await fh.sync()
  } finally { await fh.close() }
  await vsm.run('disk', 'create', 'w.img', '--size', `${(SLOTS * SLOT) >> 20}M`)
  const img = join(vsm.mount, 'w.img')
  const journal = join(vsm.home, 'writer.journal')
  for (const [round, step] of steps.entries()) {
    const writer = startWriter(img, journal, SLOTS, round + 1)
    await sleep(300)
    const size = (await vsm.json('volume', 'show', 'vol0')).size
    // held to a rate on the rounds that wait for a checkpoint, so the copy is still running when one is seen
    await vsm.run(...step.args, ...(step.afterCheckpoint ? ['--rate', '64M'] : []))
    const checkpoint = step.afterCheckpoint ? await checkpointAtLeast(64 * MiB) : 0
    if (!step.afterCheckpoint) await sleep(100 + Math.random() * 1500)
    vsm.kill9()
    await writer
    await vsm.up()
    const jobs = await vsm.json('job', 'list')
    for (const j of jobs) if (j.state !== 'concluded') await vsm.json('job', 'wait', String(j.id))
    const v = await vsm.json('volume', 'show', 'vol0')
    assert.ok(step.check(v), `after ${step.args.join(' ')}: ${JSON.stringify({ layout: v.layout, devices: v.devices, state: v.state })}`)
    assert.is(v.state, 'healthy')
    assert.is(v.size, size, 'the volume keeps its size')
    if (checkpoint) {
      // the newest of its kind: the history also holds the one the kill interrupted
      const done = (await vsm.json('job', 'list')).filter((j: any) => j.kind === `volume.${step.args[1]}`).pop()
      assert.ok(done?.result, `the resumed ${step.args[1]} job is listed with its result`)
      assert.ok(done.result.resumedAt >= checkpoint, `resumed at ${done.result.resumedAt}, checkpoint was ${checkpoint}`)
      assert.ok(done.result.copied < size, `copied ${done.result.copied} of ${size} after resuming`)
      assert.is(done.progress.total, done.result.copied, 'progress total is what the resumed job copies')
    }
    assert.ok(verifyAcknowledged(img, journal) > 0, 'no acknowledged writes to check')
    const fsck = await vsm.json('fs', 'check')
    assert.ok(fsck.ok, fsck.errors.join('; '))
  }
})

test.run()
