// The daemon finds its fs on the pool's volumes: no side file in the home can make
// `vsm up` format the pool or mount the wrong volumes.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { createHash } from 'crypto'
import { closeSync, existsSync, mkdirSync, fsyncSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { SLOT, startWriter, verifyAcknowledged } from './helpers/crash-writer'

const vsm = makeVsm({ deviceSize: '256M' })
test.after(() => vsm.cleanup())

const sum = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex')
const disks: Record<string, string> = {}

async function verifyAll() {
  const list = (await vsm.json('disk', 'list')).map((d: any) => d.path).sort()
  assert.equal(list, Object.keys(disks).sort())
  for (const [name, h] of Object.entries(disks)) assert.is(sum(join(vsm.mount, name)), h, `${name} changed`)
  const fsck = await vsm.json('fs', 'check')
  assert.ok(fsck.ok, fsck.errors.join('; '))
}

test('deleting <home>/vsm.json and restarting keeps every disk and its bytes', async () => {
  await vsm.up()
  for (const [name, fill] of [['a.img', 1], ['b.img', 2]] as const) {
    await vsm.run('disk', 'create', name, '--size', '8M')
    const data = Buffer.alloc(8 << 20, fill)
    data.write(`disk ${name}`, 4096)
    writeFileSync(join(vsm.mount, name), data)
    disks[name] = sum(join(vsm.mount, name))
  }
  await vsm.down()
  rmSync(join(vsm.home, 'vsm.json'), { force: true })
  await vsm.up()
  await verifyAll()
})

test('a stale vsm.json naming other volumes is not trusted: the superblock decides', async () => {
  await vsm.down()
  writeFileSync(join(vsm.home, 'vsm.json'), JSON.stringify({ version: 1, fsVolumes: ['nosuch', 'vol0'], defaultVolume: 'nosuch' }))
  await vsm.up()
  await verifyAll()
  assert.equal((await vsm.json('status')).fs.volumes, ['vol0'])
  await vsm.run('disk', 'create', 'c.img', '--size', '1M')
  disks['c.img'] = sum(join(vsm.mount, 'c.img'))
  await verifyAll()
})

test('after kill -9 with vsm.json gone, up recovers the same fs', async () => {
  const data = Buffer.alloc(1 << 20, 0x5a)
  const fd = openSync(join(vsm.mount, 'c.img'), 'r+')
  writeSync(fd, data, 0, data.length, 0)
  fsyncSync(fd)
  closeSync(fd)
  disks['c.img'] = sum(join(vsm.mount, 'c.img'))
  vsm.kill9()
  rmSync(join(vsm.home, 'vsm.json'), { force: true })
  await vsm.up()
  await verifyAll()
})

test('fs add-volume on the running daemon: a disk created on it is written through the FUSE view and stays after a restart', async () => {
  await vsm.run('device', 'add', 'd2', join(vsm.home, 'd2.img'), '--size', '64M')
  await vsm.run('volume', 'create', 'v1', '--layout', 'concat', '--devices', 'd2', '--size', '60M')
  const before = await vsm.run('disk', 'create', 'early.img', '--size', '1M', '--volume', 'v1').catch((e) => e.stderr)
  assert.match(before, /not part of the file system.*vsm fs add-volume v1/)
  assert.match(await vsm.run('fs', 'add-volume', 'v1'), /added volume v1/)
  assert.match(await vsm.run('fs', 'add-volume', 'v1').catch((e) => e.stderr), /already part of the file system/)
  assert.match(await vsm.run('fs', 'add-volume', 'nosuch').catch((e) => e.stderr), /nosuch/)
  await vsm.run('disk', 'create', 'onv1.img', '--size', '8M', '--volume', 'v1')
  const data = Buffer.alloc(8 << 20)
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i)
  writeFileSync(join(vsm.mount, 'onv1.img'), data)
  disks['onv1.img'] = sum(join(vsm.mount, 'onv1.img'))
  const map = await vsm.json('disk', 'map', 'onv1.img')
  assert.ok(map.extents.length > 0 && map.extents.every((e: any) => e.volume === 'v1'), JSON.stringify(map.extents.slice(0, 3)))
  assert.equal((await vsm.json('status')).fs.volumes, ['vol0', 'v1'])
  await vsm.down()
  rmSync(join(vsm.home, 'vsm.json'), { force: true })
  await vsm.up()
  assert.equal((await vsm.json('status')).fs.volumes, ['vol0', 'v1'])
  await verifyAll()
})

const MOVE_SLOTS = 250 // not a power of two: the writer's generator cycles through few slots of a power of two
const acks = (journal: string) => !existsSync(journal) ? 0 : readFileSync(journal, 'utf8').split('\n').filter((l) => l.startsWith('ack')).length
async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 30_000) {
  const deadline = Date.now() + ms
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
const volumesOf = async (disk: string) => [...new Set((await vsm.json('disk', 'map', disk)).extents.map((e: any) => e.volume))].sort()

test('fs policy: disks created under a directory land by pattern and by directory, through the CLI', async () => {
  mkdirSync(join(vsm.mount, 'vms'))
  await vsm.run('fs', 'policy', 'set', 'vms', '--volume', 'v1', '--match', '*.iso')
  assert.match(await vsm.run('fs', 'policy', 'list'), /vms\s+\*\.iso\s+v1/)
  assert.match(await vsm.run('fs', 'policy', 'set', 'vms', '--volume', 'nosuch').catch((e) => e.stderr), /nosuch/)
  await vsm.run('disk', 'create', 'vms/cd.iso', '--size', '1M')
  await vsm.run('disk', 'create', 'vms/root.img', '--size', '1M')
  assert.is((await vsm.json('disk', 'show', 'vms/cd.iso')).policies.volume, 'v1')
  assert.is((await vsm.json('disk', 'show', 'vms/root.img')).policies.volume, 'vol0')
  writeFileSync(join(vsm.mount, 'vms', 'cd.iso'), Buffer.alloc(1 << 20, 3))
  assert.equal(await volumesOf('vms/cd.iso'), ['v1'])
  for (const d of ['vms/cd.iso', 'vms/root.img']) disks[d] = sum(join(vsm.mount, d))
})

test('fs move under a writer process, paused and resumed from the CLI: the job moves every extent, every acknowledged byte is there', async () => {
  await vsm.run('disk', 'create', 'mv.img', '--size', `${MOVE_SLOTS * SLOT / 1024}K`)
  const img = join(vsm.mount, 'mv.img'), journal = join(vsm.home, 'mv.journal')
  writeFileSync(img, Buffer.alloc(MOVE_SLOTS * SLOT, 0x11))
  assert.equal(await volumesOf('mv.img'), ['vol0'])
  const stop = new AbortController()
  const exited = startWriter(img, journal, MOVE_SLOTS, 1, stop.signal)
  try {
    await until('the writer to start', () => acks(journal) > 5)
    // 16 MiB at 2 MiB/s: 8 s, so the pause (a CLI start under load can take a second or
    // more) reaches it running; at 8 MiB/s it had concluded first in a loaded CI run
    const out = await vsm.run('fs', 'move', 'mv.img', '--volume', 'v1', '--rate', '2M')
    const job = /job (\d+)/.exec(out)![1]
    // paused, it holds its place while the writer goes on; resumed, it finishes
    assert.match(await vsm.run('job', 'pause', job), /: paused,/)
    const progress = async () => (await vsm.json('job', 'list')).find((j: any) => String(j.id) === job).progress.done
    const acksAtPause = acks(journal)
    await new Promise((r) => setTimeout(r, 500)) // a chunk in flight at the pause may still land
    const held = await progress()
    await until('the writer to go on while the move is paused', () => acks(journal) > acksAtPause + 5)
    assert.is(await progress(), held, 'a paused move made progress')
    assert.is((await vsm.json('job', 'list')).find((j: any) => String(j.id) === job).state, 'paused')
    assert.match(await vsm.run('job', 'resume', job), /: running,/)
    const done = await vsm.json('job', 'wait', job)
    assert.not.ok(done.error, done.error)
    assert.is(done.result.placement.v1, MOVE_SLOTS * SLOT)
    assert.ok(acks(journal) > 20, 'the writer made no progress during the move')
  } finally {
    stop.abort()
    await exited
  }
  const checked = verifyAcknowledged(img, journal)
  assert.ok(checked > 10, `${checked} slots checked, ${acks(journal)} acks`)
  assert.equal(await volumesOf('mv.img'), ['v1'])
  const fsck = await vsm.json('fs', 'check')
  assert.ok(fsck.ok, fsck.errors.join('; '))
  assert.match(await vsm.run('fs', 'move', 'mv.img', '--volume', 'nosuch').catch((e) => e.stderr), /nosuch/)
})

/** The job of `kind` the daemon started at up to finish what kill -9 interrupted (one started after job `before`). */
async function resumedJob(kind: string, before: string): Promise<any> {
  const j = (await vsm.json('job', 'list')).filter((x: any) => x.kind === kind && x.id > Number(before)).pop()
  assert.ok(j, `no ${kind} job resumed at up`)
  return vsm.json('job', 'wait', String(j.id))
}

test('kill -9 during fs move under a writer: up resumes the move and it finishes; fs check clean, every acknowledged write there', async () => {
  const img = join(vsm.mount, 'mv.img'), journal = join(vsm.home, 'mv.journal')
  const exited = startWriter(img, journal, MOVE_SLOTS, 2)
  await until('the writer to start', () => acks(journal) > 5)
  const out = await vsm.run('fs', 'move', 'mv.img', '--volume', 'vol0', '--rate', '4M')
  const job = /job (\d+)/.exec(out)![1]
  await until('the move to be under way', async () => (await vsm.json('job', 'list')).find((j: any) => String(j.id) === job).progress.done > 512)
  vsm.kill9()
  await exited
  await vsm.up()
  const fsck = await vsm.json('fs', 'check')
  assert.ok(fsck.ok, fsck.errors.join('; '))
  assert.ok(verifyAcknowledged(img, journal) > 10)
  const done = await resumedJob('fs.move', job)
  assert.not.ok(done.error, done.error)
  assert.is(done.result.volume, 'vol0')
  assert.equal(await volumesOf('mv.img'), ['vol0'])
  assert.ok(verifyAcknowledged(img, journal) > 10)
  disks['mv.img'] = sum(img)
  await verifyAll()
  const moves = async () => (await vsm.json('job', 'list')).filter((j: any) => j.kind === 'fs.move').length
  const before = await moves()
  await vsm.down()
  await vsm.up()
  assert.is(await moves(), before, 'a finished move ran again at up')
})

test('fs remove-volume: refused while a policy names it; then every disk moves off online and the volume leaves the fs for good', async () => {
  assert.match(await vsm.run('fs', 'remove-volume', 'v1').catch((e) => e.stderr), /policy on \/vms/)
  assert.match(await vsm.run('fs', 'remove-volume', 'vol0').catch((e) => e.stderr), /metadata/)
  await vsm.run('fs', 'policy', 'set', 'vms', '--volume', 'vol0', '--match', '*.iso')
  const img = join(vsm.mount, 'mv.img'), journal = join(vsm.home, 'mv.journal')
  await vsm.run('fs', 'move', 'mv.img', '--volume', 'v1').then((o) => vsm.json('job', 'wait', /job (\d+)/.exec(o)![1]))
  assert.ok(verifyAcknowledged(img, journal) > 10)
  const on = async () => (await Promise.all(Object.keys(disks).map(volumesOf))).flat()
  assert.ok((await on()).includes('v1'))
  // kill -9 as soon as the job is under way, with a writer on a disk it moves
  const exited = startWriter(img, journal, MOVE_SLOTS, 3)
  await until('the writer to start', () => acks(journal) > 5)
  assert.match(await vsm.run('fs', 'remove-volume', 'v1', '--to', 'nope').catch((e) => e.stderr), /volume nope is not part of the file system/)
  const started = await vsm.run('fs', 'remove-volume', 'v1', '--to', 'vol0')
  assert.match(started, /onto vol0/)
  const job = /job (\d+)/.exec(started)![1]
  vsm.kill9()
  await exited
  await vsm.up()
  assert.ok(verifyAcknowledged(img, journal) > 10)
  disks['mv.img'] = sum(img)
  const done = await resumedJob('fs.remove-volume', job)
  assert.not.ok(done.error, done.error)
  assert.equal([...new Set(await on())], ['vol0'])
  assert.equal((await vsm.json('status')).fs.volumes, ['vol0'])
  assert.match(await vsm.run('disk', 'create', 'x.img', '--size', '1M', '--volume', 'v1').catch((e) => e.stderr), /not part of the file system/)
  await verifyAll()
  await vsm.down()
  await vsm.up()
  assert.equal((await vsm.json('status')).fs.volumes, ['vol0'])
  await verifyAll()
  // its fs label is gone: the pool volume is free again (here: taken back)
  await vsm.run('fs', 'add-volume', 'v1')
  assert.equal((await vsm.json('status')).fs.volumes, ['vol0', 'v1'])
})

test.run()
