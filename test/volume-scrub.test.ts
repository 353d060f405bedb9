// Checksums and scrub: bytes flipped straight in a backing file are caught by the
// per-block checksums (kept apart from the data), served from the good copy and
// repaired on read; scrub finds and repairs them everywhere and says what it fixed.
import * as path from 'path'
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import type { MirrorDev } from '../src/volume/mirror'
import type { Raid5Dev } from '../src/volume/raid5'
import type { LayoutKind } from '../src/volume/config'

const t = suite('volume checksums and scrub')
let tmp: { dir: string; cleanup: () => Promise<void> }
let pool: Pool
t.before.each(async () => { tmp = await tmpDir() })
t.after.each(async () => { await pool?.close().catch(() => {}); await tmp.cleanup() })
const f = (n: string) => path.join(tmp.dir, n)

async function make(layout: LayoutKind, devs: string[]) {
  pool = await Pool.create(f('home'))
  for (const n of devs) await pool.addDevice(n, f(`${n}.img`), 40 * MiB)
  await pool.createVolume('v', { layout, devices: devs, size: 24 * MiB })
  const v = await pool.openVolume('v')
  const data = randomBytes(v.size)
  await v.write(data, 0)
  await v.flush()
  return { v, data }
}

/** Flip one byte of member i's data area at off, behind the volume manager's back. */
async function flip(i: number, off: number) {
  const m = pool.config.volumes[0].members[i]
  const dev = pool.config.devices.find((d) => d.id === m.device)!
  const fh = await fsp.open(dev.path, 'r+')
  try {
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, dev.dataOffset + m.offset + off)
    b[0] ^= 0x5a
    await fh.write(b, 0, 1, dev.dataOffset + m.offset + off)
  } finally { await fh.close() }
}

async function scrub(name = 'v') {
  const { job } = await pool.scrubVolume(name)
  const info = await pool.jobs.wait(job)
  assert.not.ok(info.error, info.error?.message)
  return info.result as { checkedBytes: number; skippedBytes: number; repaired: { device: string; offset: number }[]; unrecoverable: unknown[]; parityRowsFixed: number }
}

t('mirror: scrub finds flipped bytes on either copy, repairs them from the good copy, and reports them', async () => {
  const { v, data } = await make('mirror', ['a', 'b'])
  await flip(1, 5 * MiB + 123)
  await flip(1, 17 * MiB)
  await flip(0, 9 * MiB + 4095)
  const r = await scrub()
  assert.is(r.checkedBytes, v.size)
  assert.equal(r.repaired.map((x) => `${x.device}@${x.offset}`).sort(), ['a@' + (9 * MiB), 'b@' + (17 * MiB), 'b@' + (5 * MiB)].sort())
  assert.is(r.unrecoverable.length, 0)
  assert.is((await scrub()).repaired.length, 0, 'nothing left to fix')
  const got = Buffer.alloc(v.size)
  await v.read(got, 0)
  assert.ok(got.equals(data))
})

t('mirror: scrub reads only what the tables say was ever written, reports the rest skipped, and still repairs there', async () => {
  pool = await Pool.create(f('home'))
  for (const n of ['a', 'b']) await pool.addDevice(n, f(`${n}.img`), 40 * MiB)
  await pool.createVolume('v', { layout: 'mirror', devices: ['a', 'b'], size: 24 * MiB })
  const v = await pool.openVolume('v')
  const empty = await scrub()
  assert.equal([empty.checkedBytes, empty.skippedBytes], [0, v.size], 'a volume never written: nothing read')
  const data = randomBytes(8192)
  await v.write(data, 10 * MiB)
  await v.flush()
  await flip(1, 10 * MiB + 5000)
  const r = await scrub()
  // the 4 MiB chunks that hold the sum page describing the write (it spans 8 MiB to just past 12 MiB)
  assert.equal([r.checkedBytes, r.skippedBytes], [8 * MiB, v.size - 8 * MiB])
  assert.equal(r.repaired.map((x) => `${x.device}@${x.offset}`), ['b@' + (10 * MiB + 4096)])
  const got = Buffer.alloc(8192)
  await v.read(got, 10 * MiB)
  assert.ok(got.equals(data))
})

t('mirror: a read of a corrupt block returns the good copy and repairs the bad one', async () => {
  const { v, data } = await make('mirror', ['a', 'b'])
  await flip(0, 3 * MiB + 10)
  await flip(1, 3 * MiB + 8192)
  // read twice so each copy serves the range once
  for (let k = 0; k < 2; k++) {
    const got = Buffer.alloc(64 * 1024)
    await v.read(got, 3 * MiB)
    assert.ok(got.equals(data.subarray(3 * MiB, 3 * MiB + 64 * 1024)), `read ${k}`)
  }
  assert.ok((pool.layoutOf('v') as MirrorDev).repairedOnRead >= 1)
  // an unaligned write over a corrupt block merges with the good bytes
  await flip(0, 6 * MiB + 100)
  await flip(1, 6 * MiB + 100) // both copies bad at one block: only reachable through the checksum
  await v.write(Buffer.from('hello'), 7 * MiB + 1)
  data.write('hello', 7 * MiB + 1)
  const got = Buffer.alloc(4096)
  await v.read(got, 7 * MiB)
  assert.ok(got.equals(data.subarray(7 * MiB, 7 * MiB + 4096)))
  await v.read(Buffer.alloc(4096), 6 * MiB).then(() => assert.unreachable('read of a block bad on every copy'), (e) => assert.match(e.message, /checksum mismatch/))
  const r = await scrub()
  assert.equal(r.unrecoverable, [{ offset: 6 * MiB }])
})

t('kill -9 after unflushed writes: sums of the dirty regions are recomputed, reads and scrub stay clean', async () => {
  const { v, data } = await make('mirror', ['a', 'b'])
  // sums on disk now describe data; rewrite the same blocks without a flush, then crash
  const b = randomBytes(2 * MiB)
  await v.write(b, 4 * MiB)
  b.copy(data, 4 * MiB)
  await pool.abandon()
  pool = await Pool.open(f('home'))
  const again = await pool.openVolume('v')
  const got = Buffer.alloc(again.size)
  await again.read(got, 0)
  assert.ok(got.equals(data))
  const r = await scrub()
  assert.is(r.repaired.length + r.unrecoverable.length, 0)
})

t('raid10: checksums per group', async () => {
  const { v, data } = await make('raid10', ['a', 'b', 'c', 'd'])
  await flip(3, 2 * MiB)
  const r = await scrub()
  assert.equal(r.repaired.map((x) => x.device), ['d'])
  const got = Buffer.alloc(v.size)
  await v.read(got, 0)
  assert.ok(got.equals(data))
})

t('raid5: a bad data block is rebuilt from the row on read; scrub repairs data and parity units and reports each', async () => {
  const { v, data } = await make('raid5', ['a', 'b', 'c'])
  const J = pool.config.volumes[0].journal!, su = pool.config.volumes[0].stripeUnit!
  // 3 members, left-symmetric: row 5 has parity on a, its data units on b (column 0) and c
  await flip(1, J + 5 * su + 100)
  const got = Buffer.alloc(su)
  await v.read(got, 10 * su)
  assert.ok(got.equals(data.subarray(10 * su, 11 * su)), 'read rebuilt the bad block')
  assert.is((pool.layoutOf('v') as Raid5Dev).repairedOnRead, 1)
  await flip(0, J + 5 * su + 8192 + 3) // parity of row 5
  await flip(2, J + 7 * su + 12289) // row 7: parity on b, c holds column 0
  const r = await scrub()
  assert.equal(r.repaired.map((x) => `${x.device}@${x.offset}`).sort(), [`a@${J + 5 * su + 8192}`, `c@${J + 7 * su + 12288}`])
  assert.is(r.parityRowsFixed + r.unrecoverable.length, 0)
  assert.equal((await scrub()).repaired, [], 'the read repaired b, scrub a and c: nothing left')
  const all = Buffer.alloc(v.size)
  await v.read(all, 0)
  assert.ok(all.equals(data))
  // the same block bad on both data units of a row: nothing to rebuild it from
  await flip(1, J + 2 * su + 40)
  await flip(2, J + 2 * su + 50)
  await v.read(Buffer.alloc(4096), 5 * su).then(() => assert.unreachable('read of a block bad on two members'), (e) => assert.match(e.message, /checksum mismatch/))
  assert.equal((await scrub()).unrecoverable, [{ device: 'b', offset: J + 2 * su }, { device: 'c', offset: J + 2 * su }])
})

t('volumes made or grown on extents another volume left behind: its old bytes never pass for sums', async () => {
  const { v } = await make('mirror', ['a', 'b'])
  await pool.addDevice('c', f('c.img'), 40 * MiB)
  await pool.addDevice('d', f('d.img'), 40 * MiB)
  await v.close()
  const moved = await pool.reshapeVolume('v', 'relayout', { layout: 'mirror', devices: ['c', 'd'] })
  assert.not.ok((await pool.jobs.wait(moved.job)).error)
  // a and b now hold v's old bytes in free space, where w's tables will be
  await pool.createVolume('w', { layout: 'mirror', devices: ['a', 'b'], size: 4 * MiB })
  let w = await pool.openVolume('w')
  await w.read(Buffer.alloc(w.size), 0)
  const head = randomBytes(w.size)
  await w.write(head, 0)
  const grown = await pool.reshapeVolume('w', 'grow', { size: 12 * MiB })
  assert.not.ok((await pool.jobs.wait(grown.job)).error)
  w = await pool.openVolume('w')
  const all = Buffer.alloc(w.size)
  await w.read(all, 0)
  assert.ok(all.subarray(0, head.length).equals(head))
  const r = await scrub('w')
  assert.is(r.repaired.length + r.unrecoverable.length, 0)
})

t('mirror: a copy corrupted in a dirty region before a crash does not win the resync at open', async () => {
  const { data } = await make('mirror', ['a', 'b'])
  // the write's region is still dirty (bits clear only after a further idle flush), its sums are on disk
  await flip(0, 5 * MiB + 77)
  await pool.abandon()
  pool = await Pool.open(f('home'))
  const v = await pool.openVolume('v')
  assert.ok(pool.volumeInfo('v').resyncedBytes! > 0, 'the region was resynced')
  for (let k = 0; k < 2; k++) {
    const got = Buffer.alloc(4096)
    await v.read(got, 5 * MiB)
    assert.ok(got.equals(data.subarray(5 * MiB, 5 * MiB + 4096)), `read ${k} returns what was written`)
  }
})

t.run()
