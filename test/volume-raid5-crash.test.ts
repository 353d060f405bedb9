// kill -9 of the daemon during a rate-limited rebuild of a raid5 member while a writer
// streams fsync'd writes into a disk on the volume: after `vsm up` the rebuild goes on
// from its checkpoint (it copies less than the member), every acknowledged write is
// there, the file system checks clean and a scrub finds nothing to repair.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { join } from 'path'
import { readFileSync, promises as fsp } from 'fs'
import { makeVsm } from './helpers/daemon'
import { SLOT, startWriter, verifyAcknowledged } from './helpers/crash-writer'

const vsm = makeVsm({ deviceSize: '128M' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const SLOTS = 128

test('kill -9 during a raid5 rebuild: it resumes from its checkpoint and no acknowledged write is lost', async () => {
  await vsm.up()
  for (const n of ['r0', 'r1', 'r2', 'r3']) await vsm.run('device', 'add', n, join(vsm.home, `${n}.img`), '--size', '160M')
  const relayout = await vsm.run('volume', 'relayout', 'vol0', '--layout', 'raid5', '--devices', 'r0,r1,r2')
  assert.not.ok((await vsm.json('job', 'wait', /job (\d+)/.exec(relayout)![1])).error)
  // a rebuild copies only rows ever written: most of the volume is, so it runs long enough to checkpoint
  await vsm.run('disk', 'create', 'fill.img', '--size', '80M')
  const fh = await fsp.open(join(vsm.mount, 'fill.img'), 'r+')
  try {
    for (let off = 0; off < 80 << 20; off += 1 << 20) await fh.write(Buffer.alloc(1 << 20, off >> 20), 0, 1 << 20, off)
    await fh.sync()
  } finally { await fh.close() }
  await vsm.run('disk', 'create', 'w.img', '--size', `${(SLOTS * SLOT) >> 20}M`)
  const img = join(vsm.mount, 'w.img')
  const journal = join(vsm.home, 'writer.journal')
  const writer = startWriter(img, journal, SLOTS, 1)
  await sleep(300)
  await vsm.run('volume', 'replace', 'vol0', 'r1', 'r3', '--rate', '16M')
  // checkpoints come about once a second; a loaded machine takes longer to commit them
  let vol = JSON.parse(readFileSync(join(vsm.home, 'pool.json'), 'utf8')).volumes[0]
  for (const deadline = Date.now() + 15_000; !(vol.members[1].rebuilt > 4 << 20) && Date.now() < deadline;) {
    await sleep(100)
    vol = JSON.parse(readFileSync(join(vsm.home, 'pool.json'), 'utf8')).volumes[0]
  }
  const member = vol.members[1]
  assert.ok(member.rebuilt > 4 << 20, `checkpoint persisted: ${member.rebuilt}`)
  const rows = member.length - vol.journal - vol.checksums
  vsm.kill9()
  await writer
  await vsm.up()
  // the newest: the history also holds the one the kill interrupted
  const resumed = (await vsm.json('job', 'list')).filter((j: any) => j.kind === 'volume.rebuild').pop()
  assert.ok(resumed, 'rebuild resumed at up')
  const done = await vsm.json('job', 'wait', String(resumed.id))
  assert.not.ok(done.error, done.error?.message)
  // what was left, and the rows the reopen replayed (at most a journal ring of them)
  assert.ok(done.result.copied <= rows - member.rebuilt + (4 << 20), `resumed from ${member.rebuilt}: copied ${done.result.copied} of a member of ${rows} bytes of rows`)
  const v = await vsm.json('volume', 'show', 'vol0')
  assert.is(v.state, 'healthy')
  assert.equal(v.devices, ['r0', 'r3', 'r2'])
  assert.ok(verifyAcknowledged(img, journal) > 0, 'no acknowledged writes to check')
  const fsck = await vsm.json('fs', 'check')
  assert.ok(fsck.ok, fsck.errors.join('; '))
  const scrub = await vsm.json('volume', 'scrub', 'vol0')
  assert.equal([scrub.repaired.length, scrub.unrecoverable.length, scrub.parityRowsFixed], [0, 0, 0], 'scrub clean')
})

test.run()
