// native/vsm_sums against the definitions it replaces: zlib's crc32 (with a starting
// value, at any byte offset, any length), per-block sums with 0 mapped to 1, and xor.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { crc32 as zlibCrc32 } from 'zlib'
import { randomBytes } from 'crypto'
import { blockSumsInto, crc32, xorInto } from '../src/native/sums'
import { rng } from './helpers/conformance'

const test = suite('native sums')
const seed = Number(process.env.VSM_SEED ?? Date.now() % 1e9)
console.log(`native sums seed ${seed}`)

/** n random bytes starting `skew` bytes into a larger buffer (unaligned views). */
const bytes = (n: number, skew: number) => randomBytes(n + skew).subarray(skew)

test('crc32 equals zlib crc32, from any starting value', () => {
  const r = rng(seed)
  for (let i = 0; i < 2000; i++) {
    const b = bytes(r(10_000), i % 8)
    const start = i % 2 ? r(2 ** 32) : 0
    assert.is(crc32(b, start), zlibCrc32(b, start), `length ${b.length} start ${start}`)
  }
  assert.is(crc32(Buffer.alloc(0)), 0)
})

test('block sums are zlib crc32 per block, 1 where that is 0, the last block short', () => {
  const r = rng(seed + 1)
  for (let i = 0; i < 300; i++) {
    const bs = [512, 4096, 1000][i % 3]
    const b = bytes(r(40_000), i % 8)
    const out = new Uint32Array(Math.ceil(b.length / bs))
    blockSumsInto(b, bs, out)
    for (let k = 0; k < out.length; k++) assert.is(out[k], zlibCrc32(b.subarray(k * bs, (k + 1) * bs)) || 1)
  }
  // a block whose crc32 is 0 must sum to 1
  const zero = Buffer.from([0x9d, 0x0a, 0xd9, 0x6d])
  assert.is(zlibCrc32(zero), 0)
  const out = new Uint32Array(1)
  blockSumsInto(zero, 4096, out)
  assert.is(out[0], 1)
})

test('bad arguments throw and write nothing', () => {
  const out = new Uint32Array(1)
  assert.throws(() => blockSumsInto(Buffer.alloc(8192), 4096, out), /too short/)
  assert.is(out[0], 0)
  assert.throws(() => blockSumsInto(Buffer.alloc(8), 0, new Uint32Array(8)), /too short/)
  assert.throws(() => crc32('text' as unknown as Buffer), /Buffer is expected/)
})

test('xorInto is a byte-wise xor over the shorter buffer', () => {
  const r = rng(seed + 2)
  for (let i = 0; i < 300; i++) {
    const n = r(70_000)
    const a = bytes(n, i % 8), b = bytes(n - (i % 3), (i + 3) % 8)
    const want = Buffer.from(a)
    for (let k = 0; k < b.length; k++) want[k] ^= b[k]
    xorInto(a, b)
    assert.ok(a.equals(want), `length ${n}`)
  }
})

test.run()
