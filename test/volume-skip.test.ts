// Work in proportion to data (issue 13): rebuild, resync and relayout copy only what the
// checksum tables say was ever written and report the rest as skipped. A replacement
// keeps "never written" in its own table where it was skipped (reads give zeros, scrub
// skips it too), and on raid5 a row written on any member is rebuilt, so parity stays
// whole: after the rebuild another member can go and every byte still reads back.
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { poolFixture, MiB, GiB } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import type { BlockDev } from '../src/block/blockdev'
import type { LayoutKind } from '../src/volume/config'

const t = suite('volume: rebuild, resync and relayout skip what was never written')
const { track, f, home } = poolFixture(t)
let pool: Pool

async function make(layout: LayoutKind, devs: string[], size: number, extra: string[] = [], devSize = 2 * GiB) {
  pool = track(await Pool.create(home()))
  for (const n of [...devs, ...extra]) await pool.addDevice(n, f(`${n}.img`), devSize)
  await pool.createVolume('v', { layout, devices: devs, size })
  return pool.openVolume('v')
}

/** Writes of random data at offs (len bytes each), flushed; returns them for checking. */
async function scatter(v: BlockDev, offs: number[], len: number): Promise<Map<number, Buffer>> {
  const out = new Map<number, Buffer>()
  for (const off of offs) {
    const b = randomBytes(len)
    await v.write(b, off)
    out.set(off, b)
  }
  await v.flush()
  return out
}

async function check(v: BlockDev, written: Map<number, Buffer>, what: string): Promise<void> {
  for (const [off, b] of written) {
    const got = Buffer.alloc(b.length)
    await v.read(got, off)
    assert.ok(got.equals(b), `${what}: the ${b.length} bytes at ${off}`)
  }
}

async function job<T>(id: number): Promise<T> {
  const info = await pool.jobs.wait(id)
  assert.not.ok(info.error, info.error?.message)
  return info.result as T
}

/** Take each device offline in turn: with it gone, everything written still reads back; then it resyncs. */
async function checkWithEachGone(v: BlockDev, written: Map<number, Buffer>, devs: string[]): Promise<void> {
  for (const gone of devs) {
    await pool.offlineDevice(gone)
    await check(v, written, `with ${gone} offline`)
    const { jobs } = await pool.onlineDevice(gone)
    for (const j of jobs) await job(j)
  }
}

const held = async (n: string) => (await fsp.stat(f(`${n}.img`))).blocks * 512

type Scrubbed = { checkedBytes: number; skippedBytes: number; repaired: unknown[]; unrecoverable: unknown[]; parityRowsFixed: number }

t('mirror: a replacement gets only the written chunks, its table says never written elsewhere, and it alone serves every byte', async () => {
  const v = await make('mirror', ['a', 'b'], GiB, ['c'])
  const written = await scatter(v, [100 * MiB, 600 * MiB + 12288, GiB - 2 * MiB], 256 * 1024)
  const seen: [string, any][] = []
  pool.useEvents({ publish: (n: string, d: unknown) => { seen.push([n, d]) } })
  const r = await job<{ copied: number; skipped: number }>((await pool.replaceMember('v', 'b', 'c')).job!)
  // each write lies in the chunks its table page (4 MiB of sums) covers: at most 8 MiB apiece
  assert.ok(r.copied > 0 && r.copied <= 3 * 8 * MiB, `copied ${r.copied}`)
  assert.is(r.copied + r.skipped, v.size)
  const ev = seen.find(([n]) => n === 'volume.rebuilt')?.[1]
  assert.equal([ev?.copied, ev?.skipped], [r.copied, r.skipped], 'the event says what was skipped')
  assert.ok(await held('c') < r.copied + 4 * MiB, `the new device holds ${await held('c')} bytes`)
  // the old source goes: the replacement serves alone, zeros where nothing was written
  await pool.offlineDevice('a')
  await check(v, written, 'from the replacement alone')
  const zeros = Buffer.alloc(MiB, 0xee)
  await v.read(zeros, 300 * MiB)
  assert.ok(zeros.equals(Buffer.alloc(MiB)), 'a never-written MiB reads as zeros')
  const { jobs } = await pool.onlineDevice('a')
  for (const j of jobs) await job(j)
  const s = await job<Scrubbed>((await pool.scrubVolume('v')).job)
  // scrub reads whole 4 MiB chunks around what the rebuild copied
  assert.ok(s.checkedBytes <= 3 * 8 * MiB, `scrub read ${s.checkedBytes}`)
  assert.equal([s.repaired.length, s.unrecoverable.length], [0, 0], 'scrub agrees')
})

for (const layout of ['mirror', 'raid5'] as const) {
  t(`${layout}: scrub --rate holds what is read: never-written ranges are passed over at once, not slept through`, async () => {
    const v = await make(layout, layout === 'mirror' ? ['a', 'b'] : ['a', 'b', 'c'], GiB)
    await scatter(v, [300 * MiB], 4096)
    const t0 = Date.now()
    const s = await job<Scrubbed>((await pool.scrubVolume('v', { rate: 64 * MiB })).job)
    // reading at most 8 MiB at 64 MiB/s; held to the volume's size it would take 16 s
    assert.ok(Date.now() - t0 < 6000, `${layout} scrub took ${Date.now() - t0} ms`)
    assert.ok(s.checkedBytes <= 8 * MiB && s.checkedBytes > 0, `${layout} scrub read ${s.checkedBytes}`)
  })
}

t('mirror: a returning copy resyncs only the regions written meanwhile that were ever written', async () => {
  const v = await make('mirror', ['a', 'b'], GiB)
  await pool.offlineDevice('b')
  const written = await scatter(v, [5 * MiB, 700 * MiB], 64 * 1024)
  const { jobs: [id] } = await pool.onlineDevice('b')
  const r = await job<{ copied: number; skipped: number }>(id)
  assert.ok(r.copied > 0 && r.copied <= 2 * 8 * MiB, `copied ${r.copied}`)
  await pool.offlineDevice('a')
  await check(v, written, 'from the returning copy alone')
})

t('raid5: a replacement is rebuilt only in rows some member wrote (data or parity), and parity stays whole', async () => {
  const v = await make('raid5', ['a', 'b', 'c'], GiB, ['d'])
  // 4 KiB writes touch one data column and the parity of their row: with three members, rows
  // 0, 1 and 2 put parity on each member in turn, so whichever member is replaced, some row
  // is marked only on the other two
  const su = pool.volumeInfo('v').stripeUnit!
  const written = await scatter(v, [0, 2 * su + 4096, 4 * su + 8192, 300 * MiB, 900 * MiB + 65536], 4096)
  const r = await job<{ copied: number; skipped: number }>((await pool.replaceMember('v', 'c', 'd')).job!)
  const perMember = GiB / 2
  assert.ok(r.copied > 0 && r.copied <= 3 * 8 * MiB, `copied ${r.copied}`)
  assert.ok(r.skipped >= perMember - 3 * 8 * MiB, `skipped ${r.skipped}`)
  const s = await job<Scrubbed>((await pool.scrubVolume('v')).job)
  assert.equal([s.parityRowsFixed, s.repaired.length, s.unrecoverable.length], [0, 0, 0], 'parity agrees with the data in every row read')
  assert.ok(s.skippedBytes > GiB / 2, `scrub skipped ${s.skippedBytes}`)
  // with a or b gone, reads of their columns come from d and parity
  await checkWithEachGone(v, written, ['a', 'b'])
})

t('raid5: writes into never-written rows while the replacement starts are all rebuilt', async () => {
  const v = await make('raid5', ['a', 'b', 'c'], 256 * MiB, ['d'], 512 * MiB)
  const written = await scatter(v, [MiB], 4096)
  const writes: Promise<void>[] = []
  const racing = new Map<number, Buffer>()
  for (let k = 0; k < 48; k++) {
    const off = (8 + k * 5) * MiB + (k % 7) * 4096, b = randomBytes(4096)
    racing.set(off, b)
    writes.push(v.write(b, off))
    if (k === 8) writes.push(pool.replaceMember('v', 'a', 'd').then(() => undefined))
  }
  await Promise.all(writes)
  await v.flush()
  for (const j of pool.jobs.list().filter((x) => x.kind === 'volume.rebuild')) await job(j.id)
  for (const [off, b] of racing) written.set(off, b)
  await checkWithEachGone(v, written, ['b', 'c'])
})

t('relayout mirror to raid10 copies only what was written; grow leaves the new space never written', async () => {
  const v = await make('mirror', ['a', 'b'], GiB, ['c', 'd'], 3 * GiB)
  const written = await scatter(v, [10 * MiB, 512 * MiB + 4096], 128 * 1024)
  const seen: [string, any][] = []
  pool.useEvents({ publish: (n: string, d: unknown) => { seen.push([n, d]) } })
  const r = await job<{ copied: number; skipped: number }>((await pool.reshapeVolume('v', 'relayout', { layout: 'raid10', devices: ['a', 'b', 'c', 'd'] })).job)
  assert.ok(r.copied > 0 && r.copied <= 2 * 8 * MiB, `copied ${r.copied}`)
  assert.is(r.copied + r.skipped, v.size)
  assert.is(seen.find(([n]) => n === 'volume.reshaped')?.[1].skipped, r.skipped)
  await check(v, written, 'after the relayout')
  const g = await job<{ copied: number; skipped: number }>((await pool.reshapeVolume('v', 'grow', { size: 2 * GiB })).job)
  // raid10 tables mark a member's pages; the rows holding them span every column
  assert.ok(g.copied <= 4 * 8 * MiB, `grow copied ${g.copied}`)
  await check(v, written, 'after the grow')
  const s = await job<Scrubbed>((await pool.scrubVolume('v')).job)
  assert.equal([s.repaired.length, s.unrecoverable.length], [0, 0])
  // per copy of each column, the 4 MiB chunks around what the grow copied
  assert.ok(s.checkedBytes <= 64 * MiB && s.skippedBytes >= 2 * GiB - 64 * MiB, `scrub read ${s.checkedBytes}, skipped ${s.skippedBytes}`)
})

t.run()
