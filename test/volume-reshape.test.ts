// Online grow, move and relayout: the volume's handle stays the same while the layout
// underneath is copied and switched, writes running all along; a change interrupted
// by kill -9 resumes at the next open (from its checkpoint, retaking the regions its
// log marks) and finishes, and one can be reversed.
import * as path from 'path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { rng } from './helpers/conformance'
import { Pool, PoolOptions } from '../src/volume/pool'
import { FaultDev } from '../src/block/fault'
import type { BlockDev } from '../src/block/blockdev'
import type { LayoutKind } from '../src/volume/config'

const t = suite('volume reshape')
let tmp: { dir: string; cleanup: () => Promise<void> }
let pool: Pool
t.before.each(async () => { tmp = await tmpDir() })
t.after.each(async () => { await pool?.close().catch(() => {}); await tmp.cleanup() })
const home = () => path.join(tmp.dir, 'home')

async function make(layout: LayoutKind, devices: string[], size: number, opts: PoolOptions = {}) {
  pool = await Pool.create(home(), opts)
  for (const n of ['a', 'b', 'c', 'd']) await pool.addDevice(n, path.join(tmp.dir, `${n}.img`), 100 * MiB)
  await pool.createVolume('v', { layout, devices, size })
  const v = await pool.openVolume('v')
  const model = randomBytes(v.size)
  await v.write(model, 0)
  return { v, model }
}

/** Random writes until stop() is called; the model follows every acknowledged one. */
function writer(v: BlockDev, model: Buffer, seed: number) {
  const r = rng(seed)
  let running = true
  const done = (async () => {
    while (running) {
      const len = 1 + r(100_000), off = r(model.length - len)
      const b = randomBytes(len)
      await v.write(b, off)
      b.copy(model, off)
    }
  })()
  return async () => { running = false; await done }
}

async function same(v: BlockDev, model: Buffer, what: string) {
  const got = Buffer.alloc(model.length)
  await v.read(got, 0)
  assert.ok(got.equals(model), what)
}

/** Hold a job at its next chunk (it is created now and starts on a later tick). */
async function pause(job: number) {
  await new Promise((r) => setImmediate(r))
  pool.jobs.pause(job)
}

/** Write MiB of random bytes at off (flushed if asked), follow it in the model, then kill -9 and reopen. */
async function writeThenCrash(v: BlockDev, model: Buffer, off: number, flush = false): Promise<BlockDev> {
  const b = randomBytes(MiB)
  await v.write(b, off)
  if (flush) await v.flush()
  b.copy(model, off)
  await pool.abandon()
  pool = await Pool.open(home())
  return pool.openVolume('v')
}

async function run(job: number) {
  const info = await pool.jobs.wait(job)
  assert.not.ok(info.error, info.error?.message)
  return info
}

t('relayout concat → mirror → raid5 → raid10 → stripe → concat under writes', async () => {
  const { v, model } = await make('concat', ['a'], 12 * MiB)
  const steps: [LayoutKind, string[]][] = [['mirror', ['b', 'c']], ['raid5', ['a', 'b', 'c']], ['raid10', ['a', 'b', 'c', 'd']], ['stripe', ['c', 'd']], ['concat', ['b']]]
  let seed = 1
  for (const [layout, devices] of steps) {
    const stop = writer(v, model, seed++)
    const { job } = await pool.reshapeVolume('v', 'relayout', { layout, devices })
    assert.ok(pool.volumeInfo('v').reshape, 'reshape shown while it runs')
    await run(job)
    await stop()
    const info = pool.volumeInfo('v')
    assert.is(info.layout, layout)
    assert.ok(info.size >= model.length)
    assert.not.ok(info.reshape)
    await same(v, model, `after relayout to ${layout}`)
  }
  // every extent of the old layouts was given back
  const used = pool.listDevices().reduce((s, d) => s + d.used, 0)
  assert.is(used, pool.config.volumes[0].members.reduce((s, m) => s + m.length, 0))
  await pool.close()
  pool = await Pool.open(home())
  await same(await pool.openVolume('v'), model, 'after reopen')
})

t('grow a mirror and move a stripe column, online', async () => {
  const { v, model } = await make('mirror', ['a', 'b'], 16 * MiB)
  const old = v.size
  await run((await pool.reshapeVolume('v', 'grow', { size: 24 * MiB })).job)
  assert.ok(v.size > old && v.size >= 24 * MiB - 64 * 1024, `grown to ${v.size}`)
  await same(v, Buffer.concat([model, Buffer.alloc(v.size - old)]), 'grown: old data, zeros after')
  const tail = randomBytes(4096)
  await v.write(tail, v.size - 4096)
  await pool.reshapeVolume('v', 'grow', { size: 8 * MiB }).then(() => assert.unreachable(), (e) => assert.match(e.message, /larger size/))
  await pool.close()
  await tmp.cleanup()
  tmp = await tmpDir()
  const s = await make('stripe', ['a', 'b'], 16 * MiB)
  const stop = writer(s.v, s.model, 9)
  await run((await pool.reshapeVolume('v', 'move', { from: 'b', to: 'c' })).job)
  await stop()
  assert.equal(pool.volumeInfo('v').devices, ['a', 'c'])
  assert.is(pool.listDevices().find((d) => d.name === 'b')!.used, 0)
  await same(s.v, s.model, 'moved')
})

t('kill -9 during a relayout: the next open finishes it; a relayout can be reversed', async () => {
  const { v, model } = await make('concat', ['a'], 16 * MiB)
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'mirror', devices: ['b', 'c'] })
  await pause(job)
  const v2 = await writeThenCrash(v, model, 3 * MiB)
  const again = pool.volumeInfo('v').reshape!
  assert.ok(again.job, 'relayout resumed at open')
  await run(again.job!)
  assert.is(pool.volumeInfo('v').layout, 'mirror')
  await same(v2, model, 'after resumed relayout')

  const r = await pool.reshapeVolume('v', 'relayout', { layout: 'raid5', devices: ['a', 'b', 'd'] })
  await pause(r.job)
  const info = await pool.abortReshape('v')
  assert.is(info.layout, 'mirror')
  assert.not.ok(info.reshape)
  assert.is(pool.listDevices().find((d) => d.name === 'd')!.used, 0)
  await same(v2, model, 'after reversed relayout')
})

t('relayout back onto the exactly-filled devices it came from, and ENOSPC when the new layout cannot fit', async () => {
  pool = await Pool.create(home())
  for (const n of ['a', 'b', 'c', 'd']) await pool.addDevice(n, path.join(tmp.dir, `${n}.img`), 100 * MiB)
  const free = pool.listDevices()[0].free
  // a mirror filling a and b to the last byte, as the embedded default pool makes
  await pool.createVolume('v', { layout: 'mirror', devices: ['a', 'b'], size: free })
  const v = await pool.openVolume('v')
  const model = randomBytes(v.size)
  await v.write(model, 0)
  const steps: [LayoutKind, string[]][] = [['concat', ['c']], ['mirror', ['a', 'b']], ['concat', ['c']], ['mirror', ['a', 'b']]]
  let seed = 20
  for (const [layout, devices] of steps) {
    const stop = writer(v, model, seed++)
    try {
      await run((await pool.reshapeVolume('v', 'relayout', { layout, devices })).job)
    } finally {
      await stop()
    }
    const info = pool.volumeInfo('v')
    assert.is(info.layout, layout)
    assert.equal(info.devices, devices)
    assert.is(info.size, model.length, `relayout to ${layout} keeps the size`)
    await same(v, model, `after relayout to ${layout}`)
  }
  for (const d of pool.listDevices()) assert.is(d.used, ['a', 'b'].includes(d.name) ? free : 0, `${d.name}: only the mirror's extents stay taken`)

  // a concat filling c holds more than a mirror on a and b can beside its checksums
  await pool.createVolume('full', { layout: 'concat', devices: ['c'], size: free })
  await pool.reshapeVolume('v', 'relayout', { layout: 'concat', devices: ['d'] }).then((r) => run(r.job))
  const seq = pool.seq
  await pool.reshapeVolume('full', 'relayout', { layout: 'mirror', devices: ['a', 'b'] }).then(
    () => assert.unreachable('a mirror that cannot fit was planned'),
    (e) => {
      assert.is(e.code, 'ENOSPC')
      assert.match(e.message, /^cannot relayout volume full \(\d+ bytes\) as mirror on a,b: device a has no free extent of \d+ MiB for a mirror copy$/)
    })
  assert.is(pool.seq, seq, 'nothing was written')
  assert.not.ok(pool.volumeInfo('full').reshape)
  await same(v, model, 'after the refused relayout')
})

/** Every device behind a FaultDev the test can steer by name. */
function faulty() {
  const faults = new Map<string, FaultDev>()
  return { faults, opts: { wrapDevice: (n: string, d: BlockDev) => { const f = new FaultDev(d); faults.set(n, f); return f } } }
}

/** Let the copy run (each write to device b slowed) until it has saved a checkpoint, then hold it. */
async function untilCheckpoint(faults: Map<string, FaultDev>, job: number): Promise<number> {
  faults.get('b')!.setRules([{ op: 'write', delayMs: 150, delayOnly: true }])
  for (let i = 0; i < 100 && pool.volumeInfo('v').reshape?.copied === undefined; i++) await new Promise((r) => setTimeout(r, 50))
  pool.jobs.pause(job)
  faults.get('b')!.setRules([])
  const copied = pool.volumeInfo('v').reshape?.copied
  assert.ok(copied !== undefined && copied > 0, 'a checkpoint was saved')
  return copied!
}

t('kill -9 after a checkpoint: the copy resumes there and retakes a region below it that the new layout missed', async () => {
  const f = faulty()
  const { v, model } = await make('concat', ['a'], 48 * MiB, f.opts)
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'concat', devices: ['b'] })
  const checkpoint = await untilCheckpoint(f.faults, job)
  assert.ok(checkpoint < model.length, `checkpoint ${checkpoint} inside the volume`)
  // a write below the checkpoint lands on the old layout and not on the new one (as one in flight at a crash can)
  const target = pool.config.volumes[0].reshape!.target.members[0]
  const at = 2 * MiB
  f.faults.get('b')!.setRules([{ op: 'write', offset: pool.config.devices[1].dataOffset + target.offset + at, length: 64 * 1024 }])
  const b = randomBytes(64 * 1024)
  await v.write(b, at)
  await v.flush()
  b.copy(model, at)
  await pool.abandon()

  pool = await Pool.open(home())
  const v2 = await pool.openVolume('v')
  const info = await run(pool.volumeInfo('v').reshape!.job!)
  const r = info.result as { copied: number; resumedAt: number }
  assert.is(r.resumedAt, checkpoint)
  assert.ok(r.copied < model.length, `copied ${r.copied} of ${model.length}`)
  assert.is(info.progress.total, r.copied, 'progress counts what this run copies')
  assert.equal(pool.volumeInfo('v').devices, ['b'])
  await same(v2, model, 'the missed write was copied again')
  assert.is(pool.listDevices().find((d) => d.name === 'a')!.used, 0)
  assert.is(pool.listDevices().find((d) => d.name === 'b')!.used, pool.config.volumes[0].members[0].length, 'the log extent was given back')
  await pool.close()
})

t('kill -9 after a checkpoint, then abort: the volume stays as it was and every new extent is freed', async () => {
  const f = faulty()
  const { v, model } = await make('concat', ['a'], 48 * MiB, f.opts)
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'mirror', devices: ['b', 'c'] })
  await untilCheckpoint(f.faults, job)
  const v2 = await writeThenCrash(v, model, 5 * MiB, true)
  await pool.removeDevice('c').then(() => assert.unreachable('a device of the new layout was removed'), (e) => assert.match(e.message, /used by volume v/))
  const info = await pool.abortReshape('v')
  assert.is(info.layout, 'concat')
  assert.not.ok(info.reshape)
  for (const d of ['b', 'c']) assert.is(pool.listDevices().find((x) => x.name === d)!.used, 0, `${d} freed`)
  await same(v2, model, 'after abort')
  await pool.close()
  pool = await Pool.open(home())
  assert.not.ok(pool.volumeInfo('v').reshape)
  await same(await pool.openVolume('v'), model, 'after reopen')
})

t('a copy of the new layout that fails during the relayout is recorded: the volume switches to it degraded', async () => {
  const f = faulty()
  const { v, model } = await make('concat', ['a'], 24 * MiB, f.opts)
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'mirror', devices: ['b', 'c'] })
  f.faults.get('c')!.setRules([{ op: 'write' }])
  await run(job)
  const info = pool.volumeInfo('v')
  assert.is(info.layout, 'mirror')
  assert.is(info.state, 'degraded')
  assert.is(info.members.find((m) => m.device === 'c')!.state, 'failed')
  await same(v, model, 'served by the copy on b')
  await pool.close()
  pool = await Pool.open(home())
  assert.is(pool.volumeInfo('v').state, 'degraded', 'the failed copy stays out after reopen')
  await same(await pool.openVolume('v'), model, 'after reopen')
})

t('a write sent to the old layout alone before the relayout began lands before the copy reads its range', async () => {
  const f = faulty()
  const { v, model } = await make('concat', ['a'], 16 * MiB, f.opts)
  const m = pool.config.volumes[0].members[0]
  f.faults.get('a')!.setRules([{ op: 'write', offset: pool.config.devices[0].dataOffset + m.offset, length: 4096, delayMs: 300, delayOnly: true }])
  const b = randomBytes(4096)
  const w = v.write(b, 0)
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'concat', devices: ['b'] })
  await w
  b.copy(model, 0)
  f.faults.get('a')!.setRules([])
  await run(job)
  assert.equal(pool.volumeInfo('v').devices, ['b'])
  await same(v, model, 'the write is on the new layout')
})

t('with no room anywhere for the reshape log, a relayout still runs, and starts over after kill -9', async () => {
  const f = faulty()
  pool = await Pool.create(home(), f.opts)
  for (const n of ['a', 'b']) await pool.addDevice(n, path.join(tmp.dir, `${n}.img`), 40 * MiB)
  const free = pool.listDevices()[0].free
  await pool.createVolume('v', { layout: 'mirror', devices: ['a', 'b'], size: free })
  const v = await pool.openVolume('v')
  const model = randomBytes(v.size)
  await v.write(model, 0)
  await pool.addDevice('c', path.join(tmp.dir, 'c.img'), 40 * MiB)
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'concat', devices: ['c'] })
  assert.not.ok(pool.config.volumes[0].reshape!.log, 'every device is full')
  f.faults.get('c')!.setRules([{ op: 'write', delayMs: 150, delayOnly: true }])
  await new Promise((r) => setTimeout(r, 1200))
  pool.jobs.pause(job)
  assert.is(pool.volumeInfo('v').reshape!.copied, undefined, 'no checkpoint without a log')
  const v2 = await writeThenCrash(v, model, 7 * MiB)
  const r = (await run(pool.volumeInfo('v').reshape!.job!)).result as { copied: number; resumedAt: number }
  assert.is(r.resumedAt, 0)
  assert.is(r.copied, model.length)
  await same(v2, model, 'after the copy started over')
})

t('while a relayout runs its volume takes no replace, offline or online of its devices: EBUSY, nothing changed', async () => {
  const { v, model } = await make('mirror', ['a', 'b'], 16 * MiB)
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'concat', devices: ['c'] })
  await pause(job)
  const seq = pool.seq
  const busy = (e: { code: string; message: string }) => {
    assert.is(e.code, 'EBUSY')
    assert.is(e.message, 'volume v is being changed (relayout); wait for it or abort it first')
  }
  await pool.replaceMember('v', 'a', 'd').then(() => assert.unreachable('replace went ahead'), busy)
  await pool.offlineDevice('a').then(() => assert.unreachable('offline of an old-layout device went ahead'), busy)
  await pool.offlineDevice('c').then(() => assert.unreachable('offline of a new-layout device went ahead'), busy)
  assert.is(pool.seq, seq, 'config unchanged')
  assert.is(pool.volumeInfo('v').state, 'healthy')
  pool.jobs.resume(job)
  await run(job)
  await same(v, model, 'after the relayout')
  await pool.offlineDevice('c').then(() => assert.unreachable('the only device of a concat went offline'), (e) => assert.is(e.code, 'EBUSY'))
})

t('an offline and a relayout issued together: one is refused (EBUSY), never a degraded volume with a relayout recorded', async () => {
  for (const offlineFirst of [true, false]) {
    const { v, model } = await make('mirror', ['a', 'b'], 8 * MiB)
    const offline = () => pool.offlineDevice('a')
    const relayout = () => pool.reshapeVolume('v', 'relayout', { layout: 'raid5', devices: ['b', 'c', 'd'] })
    const [x, y] = offlineFirst ? [offline(), relayout()] : [relayout(), offline()]
    const res = await Promise.allSettled([x, y])
    const refused = res.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason)
    for (const e of refused) assert.is(e.code, 'EBUSY', `${offlineFirst ? 'offline first' : 'relayout first'}: ${e.message}`)
    assert.is(refused.length, 1, `${offlineFirst ? 'offline first' : 'relayout first'}: exactly one is refused`)
    const info = pool.volumeInfo('v')
    if (offlineFirst) {
      assert.is(info.state, 'degraded', 'the offline went ahead')
      assert.is(info.reshape, undefined, 'no relayout recorded on a degraded volume')
    } else {
      assert.is(info.state, 'healthy', 'the offline was refused')
      await run(info.reshape!.job!)
      assert.is(pool.volumeInfo('v').layout, 'raid5')
    }
    await same(v, model, `${offlineFirst ? 'offline first' : 'relayout first'}: data`)
    await pool.close()
    await tmp.cleanup()
    tmp = await tmpDir()
  }
})

t('two offlines issued together cannot take both copies of a mirror', async () => {
  const { v, model } = await make('mirror', ['a', 'b'], 8 * MiB)
  const res = await Promise.allSettled([pool.offlineDevice('a'), pool.offlineDevice('b')])
  assert.is(res.filter((r) => r.status === 'fulfilled').length, 1, 'one offline went ahead')
  const e = (res.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason
  assert.is(e.code, 'EBUSY')
  assert.is(pool.volumeInfo('v').state, 'degraded')
  await same(v, model, 'data after the offlines')
})

t('cancel of a relayout job aborts it: the old layout stays, nothing is left locked, and no relayout resumes after a restart', async () => {
  const { v, model } = await make('mirror', ['a', 'b'], 16 * MiB)
  const free = pool.listDevices().map((d) => d.free)
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'raid5', devices: ['b', 'c', 'd'], rate: 2 * MiB })
  const stop = writer(v, model, 7)
  // some of the copy done, writes going to both layouts
  for (let i = 0; i < 200 && pool.jobs.get(job).progress.done === 0; i++) await new Promise((r) => setTimeout(r, 10))
  pool.jobs.cancel(job)
  const info = await pool.jobs.wait(job)
  await stop()
  assert.is(info.outcome, 'cancelled')
  assert.is(info.error?.message, 'relayout of v to raid5 cancelled: v stays mirror and the new extents are freed')
  const vi = pool.volumeInfo('v')
  assert.is(vi.layout, 'mirror')
  assert.is(vi.reshape, undefined, 'no relayout recorded')
  assert.equal(pool.listDevices().map((d) => d.free), free, 'the new extents and the log are free again')
  await same(v, model, 'after the cancelled relayout')
  // member changes work at once
  await pool.offlineDevice('a')
  await pool.onlineDevice('a').then((r) => Promise.all(r.jobs.map(run)))
  await pool.close()
  pool = await Pool.open(home())
  const after = pool.volumeInfo('v')
  assert.is(after.reshape, undefined, 'no relayout after the restart')
  assert.is(after.layout, 'mirror')
  const v2 = await pool.openVolume('v')
  assert.equal(pool.jobs.list().filter((j) => j.kind.startsWith('volume.relayout')), [], 'no relayout job resumed')
  await same(v2, model, 'after the restart')
  await pool.replaceMember('v', 'a', 'c').then((r) => run(r.job!))
})

t('a relayout whose new layout fails is undone: the volume keeps its layout and takes member changes', async () => {
  // c's data area refuses writes; its reserved area (labels, bitmap) takes them
  const { v, model } = await make('mirror', ['a', 'b'], 8 * MiB, {
    wrapDevice: (name: string, dev: BlockDev) => (name === 'c' ? new FaultDev(dev, { rules: [{ op: 'write', offset: MiB }] }) : dev),
  })
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'concat', devices: ['c'] })
  const info = await pool.jobs.wait(job)
  assert.is(info.outcome, 'failed')
  assert.match(info.error!.message, /^relayout of v to concat failed \(.*\): v stays mirror and the new extents are freed$/)
  assert.is(pool.volumeInfo('v').reshape, undefined)
  await same(v, model, 'after the failed relayout')
  await pool.offlineDevice('b')
})

t.run()
