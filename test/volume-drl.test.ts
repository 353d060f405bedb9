// Dirty-region log: intent recorded before writes, cheap hot path, lazy clearing,
// and resync after an unclean stop bounded by the dirty regions.
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { poolFixture, MiB, copyData } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import { MirrorDev } from '../src/volume/mirror'
import { FaultDev } from '../src/block/fault'
import type { BlockDev } from '../src/block/blockdev'
import { openDevice } from '../src/volume/device'
import { SliceDev } from '../src/volume/slice'
import { DeviceBitmap } from '../src/volume/bitmap'
import { DirtyRegionLog } from '../src/volume/drl'
import { BITMAP_OFFSET, BITMAP_BITS_OFFSET } from '../src/volume/label'
import { crc32 } from 'zlib'

const t = suite('volume dirty-region log')
const { track, f, home } = poolFixture(t)
const VOL = 64 * MiB

async function mirrorPool(opts = {}) {
  const pool = track(await Pool.create(home(), opts))
  for (const n of ['a', 'b']) await pool.addDevice(n, f(`${n}.img`), 80 * MiB)
  await pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b'], size: VOL })
  return pool
}

/** Read copy i of volume m straight from its device file. */

t('unclean stop: resync covers only dirty regions and leaves the copies identical', async () => {
  const pool = await mirrorPool()
  await pool.openVolume('m')
  const v = pool.layoutOf('m') as MirrorDev
  assert.is(v.log!.regionSize, MiB)
  // 4 regions: 0, 10, 40 and 41 (a write straddling a boundary)
  await v.write(randomBytes(4096), 100)
  await v.write(randomBytes(65536), 10 * MiB + 5)
  await v.write(randomBytes(8192), 41 * MiB - 4096)
  assert.is(v.log!.dirtyRegions, 4)
  // a write that reached copy a only, as when the host dies between the two copies
  const a = pool.listDevices().find((d) => d.name === 'a')!
  const fh = await fsp.open(a.path, 'r+')
  const lost = randomBytes(3000)
  await fh.write(lost, 0, lost.length, MiB + pool.volumeInfo('m').members[0].offset + 10 * MiB + 70000)
  await fh.close()
  await pool.abandon() // no close: the bitmap stays dirty on disk

  const p2 = track(await Pool.open(home()))
  await p2.openVolume('m')
  const v2 = p2.layoutOf('m') as MirrorDev
  const info = p2.volumeInfo('m')
  assert.ok(info.resyncedBytes! > 0, 'something resynced')
  assert.ok(info.resyncedBytes! <= 4 * MiB, `resynced ${info.resyncedBytes} > 4 dirty regions`)
  assert.is(v2.resyncedBytes, info.resyncedBytes)
  assert.ok((await copyData(p2, 'm', 0)).equals(await copyData(p2, 'm', 1)), 'copies identical after resync')
  // reads agree whichever copy serves them
  const r1 = Buffer.alloc(3000), r2 = Buffer.alloc(3000)
  await v2.read(r1, 10 * MiB + 70000)
  await v2.read(r2, 10 * MiB + 70000)
  assert.ok(r1.equals(lost) && r2.equals(lost))
  // resynced regions are clean again: a second crash has nothing to do
  await p2.abandon()
  const p3 = track(await Pool.open(home()))
  await p3.openVolume('m')
  assert.is(p3.volumeInfo('m').resyncedBytes, 0)
})

t('clean close marks everything clean: next open resyncs nothing', async () => {
  const pool = await mirrorPool()
  const v = await pool.openVolume('m')
  for (let i = 0; i < 20; i++) await v.write(randomBytes(70000), i * 3 * MiB)
  await pool.close()
  const p2 = track(await Pool.open(home()))
  await p2.openVolume('m')
  assert.is(p2.volumeInfo('m').resyncedBytes, 0)
})

t('hot path: a write into an already-dirty region costs no bitmap I/O', async () => {
  const faults = new Map<string, FaultDev>()
  const pool = await mirrorPool({ wrapDevice: (name: string, dev: BlockDev) => { const x = new FaultDev(dev); faults.set(name, x); return x } })
  const v = await pool.openVolume('m')
  const a = faults.get('a')!
  const w0 = a.writes
  await v.write(randomBytes(4096), 5 * MiB)
  const first = a.writes - w0
  assert.is(first, 2, 'one bitmap sector + the data (checksums wait for the flush)')
  for (let i = 1; i <= 10; i++) await v.write(randomBytes(4096), 5 * MiB + i * 8192)
  assert.is(a.writes - w0 - first, 10, 'data only')
  // concurrent first writes into one clean region share a single bitmap update
  const w1 = a.writes
  await Promise.all(Array.from({ length: 8 }, (_, i) => v.write(randomBytes(4096), 20 * MiB + i * 4096)))
  assert.is(a.writes - w1, 9)
  const w2 = a.writes
  await v.flush()
  assert.is(a.writes - w2, 3, 'the flush writes the two checksum pages touched and the summary page marking them used')
})

t('a region written between flushes stays dirty for clearAfterMs: a write after every flush records no intent again (fdatasync workloads)', async () => {
  let marks = 0
  const bitmap = { regionSize: MiB, hold: () => true, release: () => true, persist: async (durable: boolean) => { if (durable) marks++ } } as unknown as DeviceBitmap
  const log = new DirtyRegionLog(64 * MiB, [{ bitmap, base: 0 }], { isHealthy: () => true, degraded: false, failMember: async () => {} }, 200)
  // two regions visited in turn, a flush after each write: each is idle for a whole flush interval between visits
  for (let k = 0; k < 6; k++) {
    const r = k % 2
    await log.begin(r, r)
    log.end(r, r)
    log.flushDone(log.flushStart())
  }
  assert.is(marks, 2, 'one durable bitmap write per region, not one per write')
  await new Promise((res) => setTimeout(res, 250))
  log.flushDone(log.flushStart())
  assert.is(log.dirtyRegions, 0, 'idle for longer than clearAfterMs: cleared at the next flush')
})

t('a new region is recorded by a durable write of its bitmap sector alone, never a flush of the device', async () => {
  // counts calls on the way to the real devices (which have writeDurable: O_DSYNC)
  const calls = { flush: 0, durable: 0 }
  class Count implements BlockDev {
    constructor(private readonly inner: BlockDev) {}
    get size() { return this.inner.size }
    read(b: Buffer, o: number) { return this.inner.read(b, o) }
    write(b: Buffer, o: number) { return this.inner.write(b, o) }
    writeDurable(b: Buffer, o: number) { calls.durable++; return this.inner.writeDurable!(b, o) }
    flush() { calls.flush++; return this.inner.flush() }
    close() { return this.inner.close() }
  }
  const pool = await mirrorPool({ wrapDevice: (_n: string, dev: BlockDev) => new Count(dev) })
  const v = await pool.openVolume('m')
  const c0 = { ...calls }
  await v.write(randomBytes(4096), 9 * MiB)
  assert.is(calls.durable - c0.durable, 2, 'one bitmap sector on each copy')
  assert.is(calls.flush - c0.flush, 0, 'no device flush before the write is acknowledged')
  // the bit is on disk: an unclean stop resyncs that region
  await pool.abandon()
  const p2 = track(await Pool.open(home()))
  await p2.openVolume('m')
  assert.is(p2.volumeInfo('m').resyncedBytes, MiB)
})

t('Device.writeDurable writes through its own O_DSYNC descriptor and checks the range like write; SliceDev passes it on', async () => {
  const file = f('d.img')
  const d = await openDevice(file, { create: MiB })
  try {
    const data = randomBytes(4096)
    await d.write(randomBytes(4096), 0)
    await d.writeDurable(data, 8192)
    const back = Buffer.alloc(4096)
    await d.read(back, 8192)
    assert.ok(back.equals(data))
    assert.ok((await fsp.readFile(file)).subarray(8192, 12288).equals(data), 'in the file')
    await d.writeDurable(data, MiB - 4096)
    const err = await d.writeDurable(data, MiB - 100).then(() => null, (e) => e)
    assert.is(err?.code, 'ENOSPC')
    // a slice passes it on at its own offset, within its own range
    const s = new SliceDev(d, 64 * 1024, 128 * 1024)
    const more = randomBytes(4096)
    await s.writeDurable(more, 4096)
    assert.ok((await fsp.readFile(file)).subarray(68 * 1024, 72 * 1024).equals(more), 'at the slice offset')
    const err2 = await s.writeDurable(more, 128 * 1024 - 100).then(() => null, (e) => e)
    assert.is(err2?.code, 'ENOSPC')
  } finally { await d.close() }
})

t('region size grows with the device up to 64 MiB; a bitmap keeps the size it was made with', () => {
  const GiB = 1024 * MiB
  assert.is(DeviceBitmap.regionSizeFor(80 * MiB), MiB)
  assert.is(DeviceBitmap.regionSizeFor(2 * GiB), 8 * MiB)
  assert.is(DeviceBitmap.regionSizeFor(16 * GiB), 64 * MiB)
  assert.is(DeviceBitmap.regionSizeFor(1024 * GiB), 64 * MiB)
})

t('a bitmap made with another region size (an older pool) loads with its own size and dirty bits', async () => {
  const data = 2 * 1024 * MiB
  const d = await openDevice(f('old.img'), { create: MiB + data })
  try {
    const h = Buffer.alloc(4096)
    Buffer.from('VSMBMAP1').copy(h, 0)
    h.writeUInt32LE(1, 8)
    h.writeBigUInt64LE(BigInt(MiB), 16)
    h.writeBigUInt64LE(BigInt(data / MiB), 24)
    h.writeUInt32LE(crc32(h.subarray(0, 32)), 32)
    await d.write(h, BITMAP_OFFSET)
    const bits = Buffer.alloc(4096)
    bits[1] = 0b100 // region 10
    await d.write(bits, BITMAP_BITS_OFFSET)
    const b = await DeviceBitmap.load(d, data)
    assert.is(b.regionSize, MiB)
    assert.equal(b.pendingRanges(0, data), [[10 * MiB, 11 * MiB]])
  } finally { await d.close() }
})

t('bits clear lazily after flushes once a region is idle, and are bounded by what is in use', async () => {
  const pool = await mirrorPool()
  await pool.openVolume('m')
  const v = pool.layoutOf('m') as MirrorDev
  v.log!.clearAfterMs = 0
  for (let r = 0; r < 6; r++) await v.write(randomBytes(4096), r * 7 * MiB)
  assert.is(v.log!.dirtyRegions, 6)
  await v.flush()
  assert.is(v.log!.dirtyRegions, 6, 'hysteresis: kept through one flush')
  await v.write(randomBytes(4096), 0) // region 0 stays hot
  await v.flush()
  assert.is(v.log!.dirtyRegions, 1)
  // after a crash only the still-dirty region is resynced
  await new Promise((r) => setTimeout(r, 20)) // the clearing write is advisory and asynchronous
  await pool.abandon()
  const p2 = track(await Pool.open(home()))
  await p2.openVolume('m')
  assert.is(p2.volumeInfo('m').resyncedBytes, MiB)
})

t('the log holds only regions dirty or being written: a log over 1 PiB in 1 MiB regions costs no memory per region', async () => {
  // a stand-in bitmap: this test is about the log's own state (before: 9 bytes per region, 9 GiB here)
  const bitmap = { regionSize: MiB, hold: () => true, release: () => true, persist: async () => {} } as unknown as DeviceBitmap
  const heap = process.memoryUsage().arrayBuffers
  const log = new DirtyRegionLog(2 ** 50, [{ bitmap, base: 0 }], { isHealthy: () => true, degraded: false, failMember: async () => {} }, 0)
  const last = log.regions - 1
  await log.begin(last, last)
  await log.begin(3, 4)
  log.end(last, last)
  log.end(3, 4)
  assert.is(log.dirtyRegions, 3)
  for (let k = 0; k < 3; k++) log.flushDone(log.flushStart())
  assert.is(log.dirtyRegions, 0, 'idle regions clear after flushes')
  assert.ok(process.memoryUsage().arrayBuffers - heap < 16 * MiB, 'no per-region arrays')
})

t('power cut mid-stream under concurrent load: recovery resyncs only dirty regions, copies end identical', async () => {
  // One switch for the whole "host": after N device writes (any device) nothing more
  // reaches disk and in-flight requests never complete, as when the machine dies.
  const power = { left: Infinity }
  class Cut implements BlockDev {
    constructor(private readonly inner: BlockDev) {}
    get size() { return this.inner.size }
    read(b: Buffer, o: number) { return this.inner.read(b, o) }
    write(b: Buffer, o: number): Promise<void> {
      if (power.left <= 0) return new Promise(() => {})
      if (--power.left === 0) {
        // a torn last write: half of it lands
        return this.inner.write(b.subarray(0, b.length >> 1), o).then(() => new Promise<void>(() => {}))
      }
      return this.inner.write(b, o)
    }
    flush(): Promise<void> { return power.left <= 0 ? new Promise(() => {}) : this.inner.flush() }
    close() { return this.inner.close() }
  }
  const pool = await mirrorPool({ wrapDevice: (_n: string, dev: BlockDev) => new Cut(dev) })
  const v = await pool.openVolume('m')
  const regions = new Set<number>()
  power.left = 37
  const writes: Promise<void>[] = []
  for (let i = 0; i < 24; i++) {
    const off = ((i * 2_654_435_761) >>> 0) % (VOL - 200_000)
    for (let r = Math.floor(off / MiB); r <= Math.floor((off + 199_999) / MiB); r++) regions.add(r)
    writes.push(v.write(randomBytes(200_000), off))
  }
  await new Promise((r) => setTimeout(r, 200))
  assert.is(power.left <= 0, true, 'the power cut happened mid-stream')
  await pool.abandon()
  void writes

  const p2 = track(await Pool.open(home()))
  await p2.openVolume('m')
  const bytes = p2.volumeInfo('m').resyncedBytes!
  assert.ok(bytes > 0, 'dirty regions found')
  assert.ok(bytes <= regions.size * MiB, `resynced ${bytes} > ${regions.size} dirty regions`)
  assert.ok((await copyData(p2, 'm', 0)).equals(await copyData(p2, 'm', 1)), 'copies identical after resync')
  assert.is(p2.volumeInfo('m').state, 'healthy')
})

t('a write whose intent bit is not yet durable puts no sum on disk: a flush meanwhile then a crash leaves the block readable', async () => {
  // Writes to the data of region 30 and every bitmap write hang, as on a host that dies
  // before they land; the checksum pages and device flushes go through.
  const hang = { on: false, lo: 0, hi: 0 }
  class Stall implements BlockDev {
    constructor(private readonly inner: BlockDev) {}
    get size() { return this.inner.size }
    read(b: Buffer, o: number) { return this.inner.read(b, o) }
    write(b: Buffer, o: number): Promise<void> {
      return hang.on && o < hang.hi && o + b.length > hang.lo ? new Promise(() => {}) : this.inner.write(b, o)
    }
    writeDurable(b: Buffer, o: number): Promise<void> { return hang.on ? new Promise(() => {}) : this.inner.writeDurable!(b, o) }
    flush() { return this.inner.flush() }
    close() { return this.inner.close() }
  }
  const pool = await mirrorPool({ wrapDevice: (_n: string, dev: BlockDev) => new Stall(dev) })
  const v = await pool.openVolume('m')
  ;(pool.layoutOf('m') as MirrorDev).log!.clearAfterMs = 0
  const old = randomBytes(4096)
  await v.write(old, 30 * MiB)
  await v.flush()
  await v.flush() // region 30 idle for a whole flush interval: its bit is cleared
  assert.is((pool.layoutOf('m') as MirrorDev).log!.dirtyRegions, 0)
  const base = MiB + pool.volumeInfo('m').members[0].offset
  Object.assign(hang, { on: true, lo: base + 30 * MiB, hi: base + 31 * MiB })
  void v.write(randomBytes(4096), 30 * MiB)
  await v.flush()
  await pool.abandon()
  const p2 = track(await Pool.open(home()))
  const got = Buffer.alloc(4096)
  await (await p2.openVolume('m')).read(got, 30 * MiB)
  assert.ok(got.equals(old), 'the block holds the data of the last acknowledged write')
})

t('a device that cannot punch holes: a discard writes zeros there instead, and fails no copy', async () => {
  class NoPunch implements BlockDev {
    constructor(private readonly inner: BlockDev) {}
    get size() { return this.inner.size }
    read(b: Buffer, o: number) { return this.inner.read(b, o) }
    write(b: Buffer, o: number) { return this.inner.write(b, o) }
    writeDurable(b: Buffer, o: number) { return this.inner.writeDurable!(b, o) }
    discard(): Promise<void> { return Promise.reject(Object.assign(new Error('discard: Operation not supported'), { code: 'EOPNOTSUPP' })) }
    flush() { return this.inner.flush() }
    close() { return this.inner.close() }
  }
  const pool = await mirrorPool({ wrapDevice: (_n: string, dev: BlockDev) => new NoPunch(dev) })
  const v = await pool.openVolume('m')
  await v.write(randomBytes(3 * MiB), 2 * MiB)
  await v.discard!(2 * MiB + 4096, MiB)
  await v.flush()
  assert.is(pool.volumeInfo('m').state, 'healthy')
  for (const i of [0, 1]) {
    const copy = await copyData(pool, 'm', i)
    assert.ok(copy.subarray(2 * MiB + 4096, 3 * MiB + 4096).equals(Buffer.alloc(MiB)), `copy ${i} reads zeros where discarded`)
  }
})

t('a copy put in while regions are dirty takes their bits: left the only copy by a crash, it resyncs them', async () => {
  const pool = track(await Pool.create(home()))
  for (const n of ['a', 'b', 'c', 'd', 'e']) await pool.addDevice(n, f(`${n}.img`), 40 * MiB)
  await pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b', 'c'], size: 16 * MiB })
  const v = await pool.openVolume('m')
  // degraded from here on, so no region is cleared
  await pool.offlineDevice('c')
  await v.write(randomBytes(64 * 1024), 0)
  await v.flush()
  const first = await pool.replaceMember('m', 'a', 'd')
  await pool.jobs.wait(first.job!)
  // d is in service with region 0 dirty; now b leaves, slowly replaced by e
  await pool.replaceMember('m', 'b', 'e', { rate: 1 })
  const data = randomBytes(64 * 1024)
  await v.write(data, 0)
  await pool.abandon()
  const p2 = track(await Pool.open(home()))
  assert.equal(p2.volumeInfo('m').members.filter((m) => m.state === 'ok').map((m) => m.device), ['d'])
  const got = Buffer.alloc(data.length)
  await (await p2.openVolume('m')).read(got, 0)
  assert.ok(got.equals(data), 'the write that landed on the only copy reads back')
})

t.run()
