// Pool lifecycle, assembly, validation and degraded operation.
import * as path from 'path'
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { poolFixture, MiB } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import { openDevice } from '../src/volume/device'
import { readLabel } from '../src/volume/label'
import { FaultDev } from '../src/block/fault'
import type { BlockDev } from '../src/block/blockdev'

async function rejects(p: Promise<unknown> | (() => unknown), code: string, re?: RegExp): Promise<Error> {
  try {
    await (typeof p === 'function' ? p() : p)
  } catch (e) {
    const err = e as Error & { code?: string }
    assert.is(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`)
    if (re) assert.match(err.message, re)
    assert.not.match(err.message, /\n/, 'one line')
    return err
  }
  throw new assert.Assertion({ message: `expected ${code} rejection`, operator: 'rejects' } as never)
}

async function labelSeq(file: string): Promise<number | undefined> {
  const d = await openDevice(file)
  try { return (await readLabel(d)).label?.seq } finally { await d.close() }
}

const t = suite('volume pool')
const { track, f, home } = poolFixture(t)

t('create, add devices, make volumes, write, close, open: all round-trips', async () => {
  assert.not.ok(await Pool.exists(home()))
  const pool = track(await Pool.create(home()))
  assert.ok(await Pool.exists(home()))
  await rejects(Pool.create(home()), 'EEXIST')
  const a = await pool.addDevice('a', f('a.img'), 100 * MiB)
  assert.equal({ name: a.name, size: a.size, free: a.free, used: a.used, state: a.state, blockDevice: a.blockDevice },
    { name: 'a', size: 100 * MiB, free: 99 * MiB, used: 0, state: 'online', blockDevice: false })
  assert.ok((await fsp.stat(f('a.img'))).blocks * 512 < 4 * MiB, 'sparse')
  await pool.addDevice('b', f('b.img'), 100 * MiB)
  await pool.addDevice('c', f('c.img'), 100 * MiB)
  const cv = await pool.createVolume('cat', { layout: 'concat', devices: ['a', 'b'], size: 120 * MiB + 1 })
  assert.is(cv.size, 121 * MiB)
  assert.is(cv.state, 'healthy')
  const sv = await pool.createVolume('str', { layout: 'stripe', devices: ['b', 'c'], size: 20 * MiB, stripeUnit: 32768 })
  assert.is(sv.stripeUnit, 32768)
  assert.is(sv.size, 20 * MiB)
  const mv = await pool.createVolume('mir', { layout: 'mirror', devices: ['c', 'b'], size: 10 * MiB })
  assert.is(mv.copies, 2)
  assert.equal(mv.devices, ['c', 'b'])
  assert.equal(pool.listVolumes().map((v) => v.name), ['cat', 'str', 'mir'])
  const used = Object.fromEntries(pool.listDevices().map((d) => [d.name, d.used]))
  assert.is(used.a + used.b + used.c, 121 * MiB + 20 * MiB + 20 * MiB)

  const vols = ['cat', 'str', 'mir']
  const data = new Map<string, Buffer>()
  for (const name of vols) {
    const v = await pool.openVolume(name)
    assert.is(await pool.openVolume(name), v, 'same instance while open')
    const b = randomBytes(3 * MiB + 17)
    await v.write(b, v.size - b.length)
    data.set(name, b)
  }
  const seq = pool.seq
  await pool.close()

  const cfg = JSON.parse(await fsp.readFile(path.join(home(), 'pool.json'), 'utf8'))
  assert.is(cfg.seq, seq)
  for (const n of ['a.img', 'b.img', 'c.img']) assert.is(await labelSeq(f(n)), seq, `label of ${n}`)
  const text = (await fsp.readFile(f('c.img'))).subarray(0, 512 * 1024).toString('latin1')
  assert.match(text, /"layout": "mirror"/, 'label holds human-readable config')

  const again = track(await Pool.open(home()))
  assert.is(again.seq, seq)
  assert.equal(again.listVolumes().map((v) => [v.name, v.state]), [['cat', 'healthy'], ['str', 'healthy'], ['mir', 'healthy']])
  for (const name of vols) {
    const v = await again.openVolume(name)
    const want = data.get(name)!
    const got = Buffer.alloc(want.length)
    await v.read(got, v.size - want.length)
    assert.ok(got.equals(want), name)
  }
})

t('bad input is refused with one clear line and changes nothing', async () => {
  const pool = track(await Pool.create(home()))
  await pool.addDevice('a', f('a.img'), 40 * MiB)
  await pool.addDevice('b', f('b.img'), 40 * MiB)
  await pool.createVolume('v', { layout: 'concat', devices: ['a'], size: 10 * MiB })
  const seq = pool.seq
  const before = await fsp.readFile(path.join(home(), 'pool.json'), 'utf8')
  const devs = JSON.stringify(pool.listDevices())
  const cases: [() => Promise<unknown>, string][] = [
    [() => pool.addDevice('bad name', f('x.img'), 10 * MiB), 'EINVAL'],
    [() => pool.addDevice('-x', f('x.img'), 10 * MiB), 'EINVAL'],
    [() => pool.addDevice('x'.repeat(65), f('x.img'), 10 * MiB), 'EINVAL'],
    [() => pool.addDevice('a', f('x.img'), 10 * MiB), 'EEXIST'],
    [() => pool.addDevice('x', f('a.img')), 'EEXIST'],
    [() => pool.addDevice('x', f('x.img'), -1), 'EINVAL'],
    [() => pool.addDevice('x', f('x.img'), 1.5), 'EINVAL'],
    [() => pool.addDevice('x', f('x.img'), 1024), 'EINVAL'],
    [() => pool.addDevice('x', f('x.img')), 'ENOENT'],
    [() => pool.addDevice('x', f('nodir/x.img'), 10 * MiB), 'ENOENT'],
    [() => pool.createVolume('v', { layout: 'concat', devices: ['a'], size: MiB }), 'EEXIST'],
    [() => pool.createVolume('w/x', { layout: 'concat', devices: ['a'], size: MiB }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'concat', devices: ['zz'], size: MiB }), 'ENOENT'],
    [() => pool.createVolume('w', { layout: 'concat', devices: [], size: MiB }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'mirror', devices: ['a', 'a'], size: MiB }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'mirror', devices: ['a'], size: MiB }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'mirror', devices: ['a', 'b'], size: MiB, copies: 3 }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'stripe', devices: ['a', 'b'], size: MiB, stripeUnit: 1000 }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'stripe', devices: ['a'], size: MiB }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'raid5' as never, devices: ['a', 'b'], size: MiB }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'nope' as never, devices: ['a', 'b'], size: MiB }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'concat', devices: ['a'], size: 0 }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'concat', devices: ['a'], size: NaN }), 'EINVAL'],
    [() => pool.createVolume('w', { layout: 'concat', devices: ['a', 'b'], size: 100 * MiB }), 'ENOSPC'],
    [() => pool.createVolume('w', { layout: 'mirror', devices: ['a', 'b'], size: 35 * MiB }), 'ENOSPC'],
    [() => pool.removeDevice('zz'), 'ENOENT'],
    [() => pool.removeDevice('a'), 'EBUSY'],
    [async () => pool.volumeInfo('zz'), 'ENOENT'],
    [() => pool.openVolume('zz'), 'ENOENT'],
  ]
  for (const [fn, code] of cases) await rejects(fn, code)
  assert.is(pool.seq, seq)
  assert.is(await fsp.readFile(path.join(home(), 'pool.json'), 'utf8'), before)
  assert.is(JSON.stringify(pool.listDevices()), devs)
  assert.equal(pool.listVolumes().map((v) => v.name), ['v'])
  await rejects(fsp.stat(f('x.img')), 'ENOENT')
  // and good input still works afterwards, bumping seq once per change
  await pool.createVolume('w', { layout: 'mirror', devices: ['a', 'b'], size: 20 * MiB })
  assert.is(pool.seq, seq + 1)
})

t('device removal: refused while used, allowed when free; a device of another pool is refused', async () => {
  const pool = track(await Pool.create(home()))
  await pool.addDevice('a', f('a.img'), 20 * MiB)
  await pool.addDevice('b', f('b.img'), 20 * MiB)
  await pool.createVolume('v', { layout: 'concat', devices: ['a'], size: MiB })
  await rejects(pool.removeDevice('a'), 'EBUSY', /volume v/)
  const seq = pool.seq
  await pool.removeDevice('b')
  assert.is(pool.seq, seq + 1)
  assert.equal(pool.listDevices().map((d) => d.name), ['a'])
  // the wiped device can join again
  await pool.addDevice('b2', f('b.img'))
  const other = track(await Pool.create(f('home2')))
  await rejects(other.addDevice('a', f('a.img')), 'EBUSY', /another vsm pool/)
  assert.is(other.seq, 1)
})

t('assembly refuses a concat or stripe missing a member, naming the device', async () => {
  const pool = track(await Pool.create(home()))
  for (const n of ['a', 'b', 'c']) await pool.addDevice(n, f(`${n}.img`), 20 * MiB)
  await pool.createVolume('cat', { layout: 'concat', devices: ['a', 'b'], size: 30 * MiB })
  assert.is(pool.volumeInfo('cat').members.length, 2)
  await pool.close()
  await fsp.rename(f('b.img'), f('b.moved'))
  const err = await rejects(Pool.open(home()), 'ENODEV', /volume cat \(concat\).*device b/)
  assert.match(err.message, /b\.img/)
  await fsp.rename(f('b.moved'), f('b.img'))
  const p2 = track(await Pool.open(home()))
  await p2.createVolume('s', { layout: 'stripe', devices: ['b', 'c'], size: 4 * MiB })
  await p2.close()
  await fsp.rename(f('c.img'), f('c.moved'))
  await rejects(Pool.open(home()), 'ENODEV', /volume s \(stripe\).*device c/)
  await fsp.rename(f('c.moved'), f('c.img'))
  // a device that now carries another pool's label is not ours: refused the same way
  await fsp.rm(f('b.img'))
  const foreign = track(await Pool.create(f('home2')))
  await foreign.addDevice('z', f('b.img'), 20 * MiB)
  await foreign.close()
  await rejects(Pool.open(home()), 'ENODEV', /another pool/)
})

t('a mirror missing one copy opens degraded and serves; the missing copy stays out after it returns', async () => {
  const pool = track(await Pool.create(home()))
  for (const n of ['a', 'b']) await pool.addDevice(n, f(`${n}.img`), 20 * MiB)
  await pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b'], size: 8 * MiB })
  const v = await pool.openVolume('m')
  const one = randomBytes(MiB)
  await v.write(one, 0)
  await pool.close()
  await fsp.rename(f('b.img'), f('b.moved'))
  const p2 = track(await Pool.open(home()))
  const info = p2.volumeInfo('m')
  assert.is(info.state, 'degraded')
  assert.is(info.members[1].state, 'failed')
  assert.is(p2.listDevices().find((d) => d.name === 'b')!.state, 'missing')
  const v2 = await p2.openVolume('m')
  const got = Buffer.alloc(MiB)
  await v2.read(got, 0)
  assert.ok(got.equals(one))
  const two = randomBytes(MiB)
  await v2.write(two, 0)
  await p2.close()
  await fsp.rename(f('b.moved'), f('b.img'))
  const p3 = track(await Pool.open(home()))
  assert.is(p3.volumeInfo('m').state, 'degraded', 'stale copy is not trusted')
  const v3 = await p3.openVolume('m')
  for (let i = 0; i < 4; i++) { // alternating reads would hit b if it were trusted
    await v3.read(got, 0)
    assert.ok(got.equals(two))
  }
})

t('a mirror copy failing writes mid-stream: the volume keeps serving correct data, failure is recorded', async () => {
  const faults = new Map<string, FaultDev>()
  const wrapDevice = (name: string, dev: BlockDev) => { const fd = new FaultDev(dev); faults.set(name, fd); return fd }
  const pool = track(await Pool.create(home(), { wrapDevice }))
  for (const n of ['a', 'b']) await pool.addDevice(n, f(`${n}.img`), 40 * MiB)
  await pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b'], size: 32 * MiB })
  const v = await pool.openVolume('m')
  const model = Buffer.alloc(v.size)
  const seqBefore = pool.seq
  for (let i = 0; i < 40; i++) {
    if (i === 15) faults.get('b')!.setRules([{ op: 'write' }])
    const len = 4096 + (i * 7919) % (300 * 1024)
    const off = (i * 1_234_567) % (v.size - len)
    const b = randomBytes(len)
    await Promise.all([v.write(b, off), v.read(Buffer.alloc(4096), 0)])
    b.copy(model, off)
  }
  await v.flush()
  const got = Buffer.alloc(v.size)
  await v.read(got, 0)
  assert.ok(got.equals(model))
  const info = pool.volumeInfo('m')
  assert.is(info.state, 'degraded')
  assert.is(info.members[1].state, 'failed')
  assert.match(info.members[1].reason!, /injected/)
  assert.is(pool.listDevices().find((d) => d.name === 'b')!.state, 'failed')
  assert.is(pool.seq, seqBefore + 1)
  await pool.close()
  const p2 = track(await Pool.open(home()))
  assert.is(p2.volumeInfo('m').state, 'degraded')
  const v2 = await p2.openVolume('m')
  for (let i = 0; i < 2; i++) {
    got.fill(0)
    await v2.read(got, 0)
    assert.ok(got.equals(model), 'after reopen')
  }
})

t('a config newer than pool.json on the labels wins at assembly (crash between the two)', async () => {
  const pool = track(await Pool.create(home()))
  for (const n of ['a', 'b']) await pool.addDevice(n, f(`${n}.img`), 20 * MiB)
  const old = await fsp.readFile(path.join(home(), 'pool.json'))
  await pool.createVolume('late', { layout: 'mirror', devices: ['a', 'b'], size: MiB })
  const seq = pool.seq
  await pool.close()
  await fsp.writeFile(path.join(home(), 'pool.json'), old)
  const p2 = track(await Pool.open(home()))
  assert.is(p2.seq, seq)
  assert.equal(p2.listVolumes().map((v) => v.name), ['late'])
  assert.is(JSON.parse(await fsp.readFile(path.join(home(), 'pool.json'), 'utf8')).seq, seq, 'pool.json caught up')
})

t('a corrupt newest label slot falls back to the other slot and is rewritten', async () => {
  const pool = track(await Pool.create(home()))
  for (const n of ['a', 'b']) await pool.addDevice(n, f(`${n}.img`), 20 * MiB)
  await pool.createVolume('v', { layout: 'mirror', devices: ['a', 'b'], size: MiB })
  const seq = pool.seq
  await pool.close()
  const fh = await fsp.open(f('a.img'), 'r+')
  await fh.write(Buffer.from('garbage'), 0, 7, (seq % 2) * 256 * 1024 + 700)
  await fh.close()
  assert.is(await labelSeq(f('a.img')), seq - 1)
  const p2 = track(await Pool.open(home()))
  assert.is(p2.seq, seq)
  assert.is(p2.volumeInfo('v').state, 'healthy')
  assert.is(await labelSeq(f('a.img')), seq)
})

t('createVolume exact: a volume holds exactly the size asked, whatever its layout carves for tables', async () => {
  // a replica is made to its primary's size; a mirror's checksum tables come out of its extents
  const pool = track(await Pool.create(home()))
  await pool.addDevice('a', f('a.img'), 100 * MiB)
  await pool.addDevice('b', f('b.img'), 100 * MiB)
  const size = 32 * MiB
  const plain = await pool.createVolume('plain', { layout: 'mirror', devices: ['a', 'b'], size })
  assert.ok(plain.size < size, `a plain create gives the tables' room back (${plain.size})`)
  for (const [name, layout] of [['m', 'mirror'], ['c', 'concat']] as const) {
    const v = await pool.createVolume(name, { layout, devices: layout === 'mirror' ? ['a', 'b'] : ['a'], size }, { exact: true })
    assert.is(v.size, size, name)
    assert.is((await pool.openVolume(name)).size, size, `${name} opened`)
  }
})

t.run()
