// raid5's stripe journal against the write hole: writes are cut off by a simulated
// crash (every member stops at once, the last write torn), then the volume is
// reassembled with one member missing, so any row left with parity that does not
// match its data would reconstruct bytes nobody wrote; and with every member, where
// a scrub must find every block matching its checksum and every parity matching.
import * as path from 'path'
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { rng } from './helpers/conformance'
import { openDevice, Device } from '../src/volume/device'
import { SliceDev } from '../src/volume/slice'
import { Raid5Dev } from '../src/volume/raid5'
import { ChecksumTable, tableBytes } from '../src/volume/checksum'
import { FaultDev } from '../src/block/fault'
import type { BlockDev } from '../src/block/blockdev'

const t = suite('raid5 journal')
const MEMBER = 6 * MiB
const OPTS = { stripeUnit: 16384, journal: 2 * MiB, tag: '0badc0de-0000-4000-8000-000000000001' }

/** Three members as slices of one file, so one FaultDev stops them all at the same write. */
function members(io: BlockDev, absent = -1): (BlockDev | null)[] {
  return [0, 1, 2].map((i) => (i === absent ? null : new SliceDev(io, i * MEMBER, MEMBER)))
}

/** The same, each member's data followed by its checksum table (as the pool lays them out). */
async function summed(io: BlockDev, absent = -1): Promise<Raid5Dev> {
  const data = MEMBER - tableBytes(MEMBER)
  const ms = [0, 1, 2].map((i) => (i === absent ? null : new SliceDev(io, i * MEMBER, data)))
  const sums = await Promise.all([0, 1, 2].map((i) => (i === absent ? null : ChecksumTable.load(new SliceDev(io, i * MEMBER + data, MEMBER - data), data))))
  return new Raid5Dev(ms, { ...OPTS, sums })
}

t('a crash at any write, then a lost member: every byte is the old or the new data; sums match after replay', async () => {
  const tmp = await tmpDir()
  try {
    const file = path.join(tmp.dir, 'r5.img')
    const r = rng(77)
    let replays = 0
    for (let round = 0; round < 12; round++) {
      await fsp.rm(file, { force: true })
      const base: Device = await openDevice(file, { create: 3 * MEMBER })
      const span = 2 * MiB
      const model = randomBytes(span)
      const setup = await summed(base)
      await setup.write(model, 0)
      await setup.close()
      const fault = new FaultDev(base, { stopAfterWrites: 5 + r(60), tearBytes: 1 + r(20000) })
      const vol = await summed(fault)
      await vol.replay()
      let inflight: { off: number; data: Buffer } | null = null
      for (;;) {
        const len = 1 + r(r(2) ? 40000 : 3000)
        const off = r(span - len)
        const data = randomBytes(len)
        inflight = { off, data }
        try { await vol.write(data, off) } catch { break }
        data.copy(model, off)
        inflight = null
      }
      await base.close()
      for (const absent of [0, 1, 2, -1]) {
        const copy = path.join(tmp.dir, `r5-${absent}.img`)
        await fsp.copyFile(file, copy)
        const dev = await openDevice(copy)
        const again = await summed(dev, absent)
        replays += await again.replay()
        const got = Buffer.alloc(span)
        await again.read(got, 0)
        for (let i = 0; i < span; i++) {
          if (got[i] === model[i]) continue
          const inFlight = inflight && i >= inflight.off && i < inflight.off + inflight.data.length && got[i] === inflight.data[i - inflight.off]
          assert.ok(inFlight, `round ${round}, member ${absent} missing: byte ${i} is neither old nor new`)
        }
        if (absent < 0) assert.equal(await again.scrub().then(({ repaired, unrecoverable, parityRows }) => ({ repaired, unrecoverable, parityRows })), { repaired: [], unrecoverable: [], parityRows: [] }, `round ${round}: scrub after replay`)
        await again.close()
        await dev.close()
      }
    }
    assert.ok(replays > 0, 'some crash left records to replay')
  } finally {
    await tmp.cleanup()
  }
})

t('records already durable in place are not replayed again; the ring wraps under load', async () => {
  const tmp = await tmpDir()
  try {
    const dev = await openDevice(path.join(tmp.dir, 'r5.img'), { create: 3 * MEMBER })
    const vol = new Raid5Dev(members(dev), OPTS)
    await vol.replay()
    const model = Buffer.alloc(4 * MiB)
    const r = rng(5)
    // far more records than slots, concurrently
    await Promise.all(Array.from({ length: 8 }, async (_, k) => {
      for (let i = 0; i < 40; i++) {
        const len = 1 + r(20000), off = k * 512 * 1024 + r(512 * 1024 - len)
        const b = randomBytes(len)
        b.copy(model, off)
        await vol.write(b, off)
      }
    }))
    await vol.close()
    const again = new Raid5Dev(members(dev), OPTS)
    assert.is(await again.replay(), 0)
    const got = Buffer.alloc(model.length)
    await again.read(got, 0)
    assert.ok(got.equals(model))
    await again.close()
    await dev.close()
  } finally {
    await tmp.cleanup()
  }
})

t.run()
