// Unit tests of the extent map and the free-extent allocator against plain array models.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { rng } from './helpers/conformance'
import { ExtentMap, FreeMap } from '../src/fs/extents'

test('ExtentMap insert/punch/segments match a per-block model and stay coalesced', () => {
  const r = rng(42)
  const N = 2000
  const m = new ExtentMap()
  const model: (number | null)[] = new Array(N).fill(null) // file block -> physical
  let nextPb = 10_000
  for (let i = 0; i < 3000; i++) {
    const fb = r(N - 50), len = 1 + r(40)
    if (r(3)) {
      // map the holes in [fb, fb+len) with a fresh physical run per hole
      for (const s of m.segments(fb, fb + len)) {
        if (s.pb >= 0) continue
        const pb = r(4) ? nextPb : nextPb + 7
        m.insert(s.fb, 0, pb, s.len)
        for (let k = 0; k < s.len; k++) model[s.fb + k] = pb + k
        nextPb = pb + s.len
      }
    } else {
      const removed = m.punch(fb, fb + len)
      let cnt = 0
      for (const e of removed) for (let k = 0; k < e.len; k++) { assert.is(model[e.fb + k], e.pb + k); cnt++ }
      for (let k = fb; k < fb + len; k++) { if (model[k] !== null) cnt--; model[k] = null }
      assert.is(cnt, 0)
    }
  }
  for (let b = 0; b < N; b++) {
    const l = m.lookup(b)
    assert.is(l ? l.pb : null, model[b], `block ${b}`)
  }
  assert.is(m.total, model.filter((x) => x !== null).length)
  for (let i = 1; i < m.ex.length; i++) {
    const a = m.ex[i - 1], b = m.ex[i]
    assert.ok(a.fb + a.len <= b.fb)
    assert.ok(!(a.fb + a.len === b.fb && a.pb + a.len === b.pb && a.vol === b.vol), 'not coalesced')
  }
})

test('FreeMap alloc/release keep exact accounting, honour the goal, refuse double free', () => {
  const r = rng(7)
  const f = FreeMap.fromAllocated(100, 5100, [], [])
  const used = new Set<number>()
  const held: { start: number; len: number }[] = []
  for (let i = 0; i < 4000; i++) {
    if (r(2) && held.length) {
      const [h] = held.splice(r(held.length), 1)
      f.release(h.start, h.len)
      for (let k = 0; k < h.len; k++) used.delete(h.start + k)
    } else {
      const want = 1 + r(64)
      const got = f.alloc(want, r(2) ? 100 + r(5000) : -1)
      if (!got) { assert.ok(want > 5000 - used.size); continue }
      let n = 0
      for (const g of got) {
        for (let k = 0; k < g.len; k++) { assert.ok(!used.has(g.start + k), 'double allocation'); used.add(g.start + k) }
        assert.ok(g.start >= 100 && g.start + g.len <= 5100)
        n += g.len
        held.push(g)
      }
      assert.is(n, want)
    }
    assert.is(f.free, 5000 - used.size)
  }
  const fresh = FreeMap.fromAllocated(0, 1000, [], [])
  const a = fresh.alloc(10, -1)!
  assert.equal(fresh.alloc(5, a[0].start + 10), [{ start: a[0].start + 10, len: 5 }], 'goal not honoured')
  fresh.release(a[0].start + 10, 5)
  assert.throws(() => fresh.release(a[0].start + 12, 1), /double free/)
})

test.run()
