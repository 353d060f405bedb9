// The volume manager through the real daemon and CLI, with the file system on the
// default mirror mounted through FUSE: a device taken offline and brought back under
// writes, a replacement onto a hot spare, states in `vsm status` and `volume show`.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { openSync, writeSync, fsyncSync, closeSync, readFileSync, readSync, rmSync } from 'fs'
import { join } from 'path'
import { randomBytes, createHash } from 'crypto'
import { execFileSync } from 'child_process'
import { makeVsm, VSM } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '256M' })
test.after(() => vsm.cleanup())

function writeSynced(file: string, data: Buffer) {
  const fd = openSync(file, 'w')
  try { writeSync(fd, data); fsyncSync(fd) } finally { closeSync(fd) }
}

const vol0 = async () => (await vsm.json('status')).volumes.find((v: any) => v.name === 'vol0')

test('offline a mirror device under writes, online it: degraded, then resynced by delta', async () => {
  await vsm.up()
  const a = randomBytes(3 << 20)
  writeSynced(join(vsm.mount, 'a.bin'), a)
  assert.match(await vsm.run('device', 'offline', 'd1'), /d1 is offline/)
  const st = await vsm.json('status')
  // uptime in whole seconds, a number in --json
  assert.ok(Number.isInteger(st.uptimeSeconds) && st.uptimeSeconds >= 0, JSON.stringify(st.uptimeSeconds))
  assert.is(st.devices.find((d: any) => d.name === 'd1').state, 'offline')
  assert.is((await vol0()).state, 'degraded')
  const human = await vsm.run('status')
  assert.match(human, /vol0\s.*degraded/)
  assert.match(human, /needs attention:\n  volume vol0: degraded: d1 failed.*\n    fix: vsm device online d1, or vsm volume replace vol0 d1 NEWDEV/)
  // the pool's lines (a host short of room for the thin device files would add its own)
  const pool = (as: { object: string }[]) => as.filter((a) => !a.object.startsWith('file system of'))
  assert.equal(pool(st.attention).map((a: any) => a.object), ['volume vol0'])
  const b = randomBytes(2 << 20)
  writeSynced(join(vsm.mount, 'b.bin'), b)
  const out = await vsm.run('device', 'online', 'd1')
  const job = Number(/resync job (\d+)/.exec(out)![1])
  const done = await vsm.json('job', 'wait', String(job))
  assert.not.ok(done.error, done.error?.message)
  assert.ok(done.result.copied < 64 << 20, `delta: ${done.result.copied} bytes copied of a 255 MiB volume`)
  assert.is((await vol0()).state, 'healthy')
  assert.equal(pool((await vsm.json('status')).attention), [])
  assert.ok(readFileSync(join(vsm.mount, 'a.bin')).equals(a))
  assert.ok(readFileSync(join(vsm.mount, 'b.bin')).equals(b))
  // the pool's history names each of those changes, with its seq, oldest first
  const hist = await vsm.json('pool', 'history')
  const changes = hist.map((v: any) => v.change)
  const at = (re: RegExp) => changes.findIndex((c: string) => re.test(c))
  assert.ok(at(/^device d1 taken offline/) >= 0 && at(/^device d1 online: resync of vol0$/) > at(/^device d1 taken offline/), changes.join('\n'))
  assert.ok(at(/^volume vol0: member 1 on device d1 resynced$/) > at(/^device d1 online/), changes.join('\n'))
  for (let i = 1; i < hist.length; i++) assert.ok(hist[i].seq > hist[i - 1].seq)
  const humanHist = await vsm.run('pool', 'history')
  assert.match(humanHist, /SEQ\s+TIME\s+CHANGE/)
  assert.match(humanHist, /\d+\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+device d1 taken offline/)
})

test('replace onto a hot spare as a job; volume show has the members', async () => {
  await vsm.run('device', 'add', 's0', join(vsm.home, 's0.img'), '--size', '256M', '--spare')
  assert.match(await vsm.run('device', 'list'), /s0\s.*spare/)
  const out = await vsm.run('volume', 'replace', 'vol0', 'd0', 's0', '--rate', '1G')
  const job = Number(/job (\d+)/.exec(out)![1])
  assert.match(await vsm.run('job', 'list'), new RegExp(`${job}\\s+volume.rebuild`))
  const done = await vsm.json('job', 'wait', String(job))
  assert.not.ok(done.error, done.error?.message)
  const show = await vsm.run('volume', 'show', 'vol0')
  assert.match(show, /s0\s.*ok/)
  assert.match(show, /d1\s.*ok/)
  // human output: sizes in units, lists joined, no raw JSON
  assert.match(show, /^size\s+\d+(\.\d)?M$/m)
  assert.match(show, /^devices\s+s0,d1$/m)
  assert.match(show, /^copies\s+2$/m)
  assert.not.match(show, /[[{"]/)
  assert.is((await vol0()).state, 'healthy')
  await vsm.down()
  await vsm.up()
  assert.is((await vol0()).state, 'healthy')
  assert.equal((await vol0()).devices, ['s0', 'd1'])
})

test('scrub finds a byte flipped in a backing file and reports the repair', async () => {
  // scrub and rebuild take only what was ever written: most of the volume is, from here on
  writeSynced(join(vsm.mount, 'fill.bin'), Buffer.alloc(200 << 20, 0x5a))
  const m = (await vsm.json('volume', 'show', 'vol0')).members[1]
  const at = (1 << 20) + m.offset + (8 << 20) + 77
  const fd = openSync(join(vsm.home, 'devices', 'd1.img'), 'r+')
  try {
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, at)
    b[0] ^= 0xff
    writeSync(fd, b, 0, 1, at)
  } finally { closeSync(fd) }
  const out = await vsm.run('volume', 'scrub', 'vol0')
  assert.match(out, /1 block\(s\) repaired/)
  assert.match(out, new RegExp(`repaired d1 at ${8 << 20}`))
  assert.match(out, /repaired per device: d1 1/)
  // --rate holds the scrub back: over 200 MiB read at 64 MiB/s cannot take less than about 3 s
  const t0 = Date.now()
  const again = await vsm.run('volume', 'scrub', 'vol0', '--rate', '64M')
  assert.match(again, /0 block\(s\) repaired/)
  assert.not.match(again, /per device/)
  assert.ok(Date.now() - t0 >= 3000, `a scrub held to 64 MiB/s took ${Date.now() - t0} ms`)
})

test('kill -9 during a rate-limited rebuild: up resumes it from its checkpoint', async () => {
  // about 200 MiB ever written: some 6 s at 32 MiB/s, so the job is still running when looked at
  const out = await vsm.run('volume', 'replace', 'vol0', 'd1', 'd0', '--rate', '32M')
  const job = Number(/job (\d+)/.exec(out)![1])
  // the first checkpoint is saved about a second in; a loaded machine takes longer to commit it
  let saved = 0
  for (const deadline = Date.now() + 15_000; !(saved > 0) && Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, 100))
    saved = JSON.parse(readFileSync(join(vsm.home, 'pool.json'), 'utf8')).volumes[0].members[1].rebuilt
  }
  assert.ok(saved > 0, 'checkpoint persisted')
  const show = await vsm.run('volume', 'show', 'vol0')
  assert.match(show, /rebuild onto d0: \d+% .*ETA \d+s/)
  assert.ok((await vsm.json('job', 'list')).some((j: any) => j.id === job && j.state === 'running'))
  vsm.kill9()
  await vsm.up()
  // the killed one is in the history (failed: EINTR); the resumed one is new
  const resumed = (await vsm.json('job', 'list')).find((j: any) => j.kind === 'volume.rebuild' && j.id > job)
  assert.ok(resumed, 'rebuild resumed at up')
  const done = await vsm.json('job', 'wait', String(resumed.id))
  assert.not.ok(done.error, done.error?.message)
  assert.ok(done.result.copied < 250 << 20, `resumed from ${saved}: copied ${done.result.copied}`)
  assert.is((await vol0()).state, 'healthy')
  assert.equal((await vol0()).devices, ['s0', 'd0'])
  assert.is(readFileSync(join(vsm.mount, 'b.bin')).length, 2 << 20)
})

test('relayout the mounted volume from mirror to raid5 while files are written', async () => {
  for (const n of ['d2', 'd3']) await vsm.run('device', 'add', n, join(vsm.home, 'devices', `${n}.img`), '--size', '256M')
  const out = await vsm.run('volume', 'relayout', 'vol0', '--layout', 'raid5', '--devices', 'd1,d2,d3')
  const job = Number(/job (\d+)/.exec(out)![1])
  const c = randomBytes(1 << 20)
  writeSynced(join(vsm.mount, 'c.bin'), c)
  const done = await vsm.json('job', 'wait', String(job))
  assert.not.ok(done.error, done.error?.message)
  const v = await vol0()
  assert.is(v.layout, 'raid5')
  assert.equal(v.devices, ['d1', 'd2', 'd3'])
  assert.ok(readFileSync(join(vsm.mount, 'c.bin')).equals(c))
  assert.is(readFileSync(join(vsm.mount, 'b.bin')).length, 2 << 20)
})

test('up with pool.json deleted assembles the pool from the device labels', async () => {
  await vsm.down()
  rmSync(join(vsm.home, 'pool.json'))
  await vsm.up()
  const st = await vsm.json('status')
  assert.equal(st.devices.map((d: any) => `${d.name}:${d.state}`).sort(), ['d0:online', 'd1:online', 'd2:online', 'd3:online', 's0:online'])
  assert.is((await vol0()).state, 'healthy')
  assert.ok(readFileSync(join(vsm.mount, 'b.bin')).length === 2 << 20)
})

test('device add refuses a disk inside the mount and an ext4 image, changing no byte; a relative path is the caller\'s', async () => {
  const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex')
  await vsm.run('disk', 'create', 'guest.img', '--size', '8M')
  const disk = join(vsm.mount, 'guest.img')
  writeSynced(disk, randomBytes(8 << 20))
  const before = sha(disk)
  const seq = JSON.parse(readFileSync(join(vsm.home, 'pool.json'), 'utf8')).seq
  for (const force of [[], ['--force']]) {
    const e = await vsm.run('device', 'add', 'inview', disk, ...force).then(() => null, (err) => err)
    assert.ok(e, `add of a disk in the mount went ahead ${force.join(' ')}`)
    assert.match(e.stderr, /is inside .*, the vsm view/)
  }
  assert.is(sha(disk), before, 'the disk is unchanged')
  const ext4 = join(vsm.home, 'ext4.img')
  execFileSync('truncate', ['-s', '32M', ext4])
  execFileSync('mkfs.ext4', ['-q', '-F', ext4], { stdio: 'ignore' })
  const img = sha(ext4)
  const e = await vsm.run('device', 'add', 'e', ext4).then(() => null, (err) => err)
  assert.match(e?.stderr ?? '', /holds an ext2\/3\/4 file system; add it with --force/)
  assert.is(sha(ext4), img, 'the ext4 image is unchanged')
  assert.is(JSON.parse(readFileSync(join(vsm.home, 'pool.json'), 'utf8')).seq, seq, 'the pool is unchanged')
  // relative to the caller's directory, not the daemon's
  const out = execFileSync(VSM, ['device', 'add', 'rel', 'rel.img', '--size', '16M', '--home', vsm.home], { cwd: vsm.home, encoding: 'utf8' })
  assert.match(out, new RegExp(`at ${join(vsm.home, 'rel.img')}`))
})

test('job cancel of a relayout aborts it; of a finished job says so; ids and history survive a restart', async () => {
  const out = await vsm.run('volume', 'relayout', 'vol0', '--layout', 'mirror', '--devices', 'd0,s0', '--rate', '1M')
  const job = Number(/job (\d+)/.exec(out)![1])
  const c = await vsm.run('job', 'cancel', String(job))
  assert.match(c, new RegExp(`^cancelled job ${job} \\(volume.relayout\\): relayout of vol0 to mirror cancelled: vol0 stays raid5 and the new extents are freed`))
  const v = await vol0()
  assert.is(v.layout, 'raid5')
  assert.not.ok(v.reshape, 'no relayout recorded')
  assert.match(await vsm.run('device', 'offline', 'd3'), /d3 is offline/)
  const on = await vsm.run('device', 'online', 'd3')
  const rs = Number(/resync job (\d+)/.exec(on)![1])
  await vsm.run('job', 'wait', String(rs))
  assert.match(await vsm.run('job', 'cancel', String(rs)), new RegExp(`^job ${rs} \\(volume.rebuild\\) had already finished: done`))
  await vsm.down()
  await vsm.up()
  const after = await vsm.json('job', 'list')
  assert.is(after.find((j: any) => j.id === job)?.outcome, 'cancelled', 'the cancelled relayout is in the history')
  assert.is(after.find((j: any) => j.id === rs)?.outcome, 'done')
  assert.not.ok((await vol0()).reshape, 'no relayout resumed')
  assert.match(await vsm.run('job', 'list'), new RegExp(`${job}\\s+volume.relayout\\s+cancelled`))
  await vsm.run('volume', 'scrub', 'vol0')
  const scrub = (await vsm.json('job', 'list')).find((j: any) => j.kind === 'volume.scrub' && j.id > job)
  assert.ok(scrub?.id > rs, `new ids go on (${scrub?.id} after ${rs})`)
})

test.run()
