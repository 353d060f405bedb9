// The BlockDev conformance suite: every implementation (device, each layout, fs
// file, virtual disk, fault wrapper with no faults) must pass the same checks.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import type { BlockDev } from '../../src/block/blockdev'

export interface Subject {
  dev: BlockDev
  /** Close, reopen from stable storage, return the new handle (omit if the backend cannot). */
  reopen?: () => Promise<BlockDev>
  cleanup(): Promise<void>
}

/** Deterministic PRNG so a failing sequence can be replayed from its seed. */
export function rng(seed: number) {
  let s = seed >>> 0 || 1
  return (n: number) => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s % n }
}

export function conformance(name: string, make: () => Promise<Subject>, opts: { ops?: number } = {}) {
  const t = suite(`conformance: ${name}`)
  let subj: Subject
  t.before.each(async () => { subj = await make() })
  t.after.each(async () => { await subj.cleanup() })

  t('size is a positive whole number of bytes', () => {
    assert.ok(Number.isSafeInteger(subj.dev.size) && subj.dev.size > 0)
  })

  t('unwritten ranges read as zeros', async () => {
    const { dev } = subj
    for (const off of [0, Math.floor(dev.size / 2), dev.size - 8192]) {
      const b = Buffer.alloc(8192, 0xee)
      const n = await dev.read(b, off)
      assert.is(n, 8192)
      assert.ok(b.equals(Buffer.alloc(8192)), `nonzero at ${off}`)
    }
  })

  t('random writes and reads match an in-memory model', async () => {
    const { dev } = subj
    const span = Math.min(dev.size, 16 << 20)
    const model = Buffer.alloc(span)
    const r = rng(0x5eed + span)
    const ops = opts.ops ?? 300
    for (let i = 0; i < ops; i++) {
      const len = 1 + r(r(2) ? 4096 : 200_000)
      const off = r(span - len)
      if (r(3)) {
        const b = randomBytes(len)
        await dev.write(b, off)
        b.copy(model, off)
      } else {
        const b = Buffer.alloc(len, 0xaa)
        await dev.read(b, off)
        assert.ok(b.equals(model.subarray(off, off + len)), `mismatch op ${i} off=${off} len=${len}`)
      }
    }
    await dev.flush()
    const whole = Buffer.alloc(span)
    await dev.read(whole, 0)
    assert.ok(whole.equals(model), 'final full read differs from model')
  })

  t('concurrent writes to disjoint ranges all land', async () => {
    const { dev } = subj
    const bufs = Array.from({ length: 32 }, () => randomBytes(65536 + 512))
    await Promise.all(bufs.map((b, i) => dev.write(b, i * 70000)))
    for (let i = 0; i < bufs.length; i++) {
      const got = Buffer.alloc(bufs[i].length)
      await dev.read(got, i * 70000)
      assert.ok(got.equals(bufs[i]), `range ${i}`)
    }
  })

  t('the last byte is writable and reading past the end is refused or short', async () => {
    const { dev } = subj
    await dev.write(Buffer.from([0x5a]), dev.size - 1)
    const b = Buffer.alloc(1)
    await dev.read(b, dev.size - 1)
    assert.is(b[0], 0x5a)
    let refused = false
    try { await dev.write(Buffer.alloc(2), dev.size - 1) } catch { refused = true }
    assert.ok(refused, 'write crossing the end must fail')
  })

  // Every subject flushes and reads back; those that can reopen do so in between.
  t('flushed writes read back, also after close and reopen where the backend can', async () => {
    const data = randomBytes(300_000)
    await subj.dev.write(data, 12345)
    await subj.dev.flush()
    if (subj.reopen) subj.dev = await subj.reopen()
    const got = Buffer.alloc(data.length)
    await subj.dev.read(got, 12345)
    assert.ok(got.equals(data))
  })

  return t
}
