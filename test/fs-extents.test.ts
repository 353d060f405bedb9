// Unit tests of the extent map, the free-extent allocator and the reference counts against plain array models.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { rng } from './helpers/conformance'
import { Extent, ExtentMap, FreeMap, RefMap, RunBounds, joinSorted, sortBlocks } from '../src/fs/extents'
import { Chunked } from '../src/fs/chunked'

/** For copies whose block counts no test here reads. */
const uncounted = (): void => {}

test('Chunked: random splices, floor/next/prev/from and copies match an array model, seed printed', () => {
  const seed = Number(process.env.CHUNKED_SEED ?? Date.now() % 1e9)
  console.log(`Chunked: seed ${seed}`)
  const r = rng(seed)
  for (const max of [2, 5, 64]) {
    let model: number[] = []
    let s = new Chunked<number>((x) => x, max)
    const copies: [Chunked<number>, number[]][] = []
    for (let op = 0; op < 3000; op++) {
      if (op % 200 === 0) copies.push([s.clone(uncounted), model.slice()])
      if (op % 500 === 250 && copies.length) {
        // work on a copy for a while: its source must not see it
        const [c, m] = copies.pop()!
        copies.push([s, model])
        s = c; model = m
      }
      // an edit replaces the items with keys in [k0, k1) by fresh keys in that range, in order
      const k0 = r(2000), k1 = k0 + 1 + r(r(10) ? 10 : 400)
      const a = s.next(s.floor(k0 - 1)), b = s.next(s.floor(k1 - 1))
      const items = [...new Set(Array.from({ length: r(r(5) ? 3 : 2 * max + 3) }, () => k0 + r(k1 - k0)))].sort((x, y) => x - y)
      s.splice(a, b, items)
      const lo = model.findIndex((x) => x >= k0), hi = model.findIndex((x) => x >= k1)
      const i0 = lo < 0 ? model.length : lo, i1 = hi < 0 ? model.length : hi
      model.splice(i0, i1 - i0, ...items)
      if (op % 25 === 0) {
        assert.equal(s.toArray(), model, `max ${max} op ${op}: items (seed ${seed})`)
        assert.is(s.length, model.length)
        assert.is(s.first(), model[0])
        assert.is(s.last(), model[model.length - 1])
        const k = r(2100) - 50
        const p = s.floor(k)
        const want = model.filter((x) => x <= k)
        assert.is(s.at(p), want[want.length - 1], `max ${max} op ${op}: floor(${k}) (seed ${seed})`)
        assert.equal([...s.from(s.next(p))], model.slice(want.length), `from after floor(${k})`)
        if (want.length) assert.is(s.at(s.prev(p)), want[want.length - 2], `prev of floor(${k})`)
      }
    }
    for (const [c, m] of copies) assert.equal(c.toArray(), m, `max ${max}: a copy keeps its own items (seed ${seed})`)
    assert.equal([...s], model)
  }
})

for (const chunk of [3, 8, 256]) {
  test(`ExtentMap (chunks of ${chunk}) insert/punch/segments/from match a per-block model, stay coalesced; copies and source diverge apart`, () => {
    const r = rng(42 + chunk)
    const N = 2000
    const m = new ExtentMap(chunk)
    const model: (number | null)[] = new Array(N).fill(null) // file block -> physical
    let nextPb = 10_000
    const copies: [ExtentMap, number[]][] = [] // clones taken along the way, with their extents then
    for (let i = 0; i < 3000; i++) {
      if (i % 300 === 0) { const copy = m.clone(uncounted); copies.push([copy, copy.flat()]) }
      // a copy changed after the fact must not change its source (nor the other copies)
      if (i % 300 === 150) {
        const [copy] = copies[copies.length - 1]
        const before = m.flat()
        copy.punch(r(N), r(N) + 30)
        for (const s of copy.segments(r(N), N)) if (s.pb < 0) { copy.insert(s.fb, 1, 90_000 + i, 1); break }
        assert.equal(m.flat(), before, 'a source is not changed by its copy')
        copies[copies.length - 1][1] = copy.flat()
      }
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
        // now and then a punch over many extents (a delete is one over all)
        const end = fb + (r(40) ? len : r(N))
        const removed = m.punch(fb, end)
        let cnt = 0, at = -1
        for (const e of removed) {
          assert.ok(e.fb >= at && e.len > 0, 'removed pieces in order')
          at = e.fb + e.len
          for (let k = 0; k < e.len; k++) { assert.is(model[e.fb + k], e.pb + k); cnt++ }
        }
        for (let k = fb; k < Math.min(end, N); k++) { if (model[k] !== null) cnt--; model[k] = null }
        assert.is(cnt, 0)
      }
      if (i % 50 === 0) {
        const b0 = r(N), b1 = b0 + r(200)
        let b = b0
        for (const s of m.segments(b0, b1)) {
          assert.is(s.fb, b, 'segments are contiguous')
          for (let k = 0; k < s.len; k++) assert.is(s.pb < 0 ? null : s.pb + k, model[s.fb + k] ?? null, `segment block ${s.fb + k}`)
          b += s.len
        }
        assert.is(b, Math.max(b0, b1))
        const first = [...m.from(b0)][0]
        const want = m.toArray().find((e) => e.fb + e.len > b0)
        assert.equal(first, want, `from(${b0})`)
      }
    }
    for (const [copy, flat] of copies) assert.equal(copy.flat(), flat, 'a copy is not changed by its source')
    const all = m.clone(uncounted)
    const gone = all.punch(0, Infinity)
    assert.is(all.count, 0)
    assert.is(all.total, 0)
    assert.is(all.end(), 0)
    assert.equal(gone, m.toArray(), 'a punch of everything returns every extent')
    for (let b = 0; b < N; b++) {
      const l = m.lookup(b)
      assert.is(l ? l.pb : null, model[b], `block ${b}`)
    }
    assert.is(m.total, model.filter((x) => x !== null).length)
    const ex = m.toArray()
    assert.is(m.count, ex.length)
    let end = N
    while (end > 0 && model[end - 1] === null) end--
    assert.is(m.end(), end)
    for (let i = 1; i < ex.length; i++) {
      const a = ex[i - 1], b = ex[i]
      assert.ok(a.fb + a.len <= b.fb)
      assert.ok(!(a.fb + a.len === b.fb && a.pb + a.len === b.pb && a.vol === b.vol), 'not coalesced')
    }
  })
}

test('ExtentMap.ofChunks (maps read from trees) joins what insert joins, shares the leaves copy-on-write, refuses an overlap', () => {
  const r = rng(7)
  const m = new ExtentMap()
  const pieces: Extent[] = []
  for (let fb = 0, pb = 100; fb < 20_000; fb += r(3)) {
    const len = 1 + r(4), vol = r(8) ? 0 : 1
    m.insert(fb, vol, pb, len)
    // a tree may hold contiguous pieces unjoined: one block each
    for (let k = 0; k < len; k++) pieces.push({ fb: fb + k, vol, pb: pb + k, len: 1 })
    fb += len
    pb += len + (r(2) ? 0 : 5)
  }
  // leaves of 1 to 60 extents (chunks of at most 64; past 16 an edit inside one is made
  // in place): joins within a leaf and across two
  const chunks: Extent[][] = []
  for (let i = 0; i < pieces.length;) {
    const want = 1 + r(60)
    let j = i + 1
    while (j < pieces.length && joinSorted(pieces.slice(i, j + 1).map((e) => ({ ...e }))).length <= want) j++
    chunks.push(joinSorted(pieces.slice(i, j).map((e) => ({ ...e }))))
    i = j
  }
  const a = ExtentMap.ofChunks(chunks, uncounted, 64), b = ExtentMap.ofChunks(chunks, uncounted, 64)
  for (const x of [a, b]) {
    assert.equal(x.flat(), m.flat())
    assert.is(x.total, m.total)
    assert.is(x.count, m.count)
  }
  // two maps read from the same leaves: a change to one leaves the other as read
  a.punch(500, 9000)
  a.insert(600, 1, 1_000_000, 10)
  // and small edits, each inside one chunk
  for (let k = 0; k < 50; k++) {
    const fb = 9000 + r(11_000)
    if (a.lookup(fb)) a.punch(fb, fb + 1)
    else a.insert(fb, 1, 2_000_000 + k, 1)
  }
  assert.equal(b.flat(), m.flat(), 'a map sharing leaves is not changed by the other')
  assert.is(b.lookup(600)?.pb, m.lookup(600)?.pb)
  assert.throws(() => joinSorted([{ fb: 0, vol: 0, pb: 10, len: 4 }, { fb: 3, vol: 0, pb: 50, len: 1 }]), /overlap/)
  assert.throws(() => ExtentMap.ofChunks([[{ fb: 0, vol: 0, pb: 10, len: 4 }], [{ fb: 3, vol: 0, pb: 50, len: 1 }]], uncounted), /overlap/)
})

for (const chunk of [3, 8, 64]) {
  test(`maps sharing chunks (clones, snapshots: chunks of ${chunk}) keep block counts per chunk array exact, never free a held block, leak none; seed printed`, () => {
    const seed = Number(process.env.SHARED_SEED ?? Date.now() % 1e9) + chunk
    console.log(`shared chunks: seed ${seed}`)
    const r = rng(seed)
    const N = 600
    const refs = new RefMap(4)
    // as FsCore: a copied chunk's blocks gain a holder first, then what an edit unmapped
    // loses one; a released map's last-held chunks lose theirs
    const copied = (e: readonly Extent[]) => { refs.adjustMany(e.map((x) => ({ start: x.pb, len: x.len })), 1) }
    const unref = (e: Extent[]) => refs.adjustMany(e.map((x) => ({ start: x.pb, len: x.len })), -1)
    const live = new Set<ExtentMap>([new ExtentMap(chunk)])
    // what each map should read at each file block, and what each physical block holds
    const want = new Map<ExtentMap, Map<number, number>>([[[...live][0], new Map()]])
    const data = new Map<number, number>()
    const allocated = new Set<number>()
    let nextPb = 1
    const what = (op: number) => `seed ${seed} op ${op}`
    for (let op = 0; op < 1500; op++) {
      const maps = [...live], m = maps[r(maps.length)], k = r(10)
      if (k === 0 && live.size < 8) { const x = m.clone(copied); live.add(x); want.set(x, new Map(want.get(m))) }
      else if (k === 1 && live.size > 1) {
        live.delete(m)
        want.delete(m)
        for (const f of unref(m.release())) for (let b = f.start; b < f.start + f.len; b++) allocated.delete(b)
      } else {
        // a write: shared blocks and holes get fresh blocks, private ones stay
        const fb = r(N - 40), len = 1 + r(r(6) ? 8 : 40)
        const plan = m.segments(fb, fb + len).flatMap((sg) => {
          if (sg.pb < 0) return [{ ...sg, fresh: true }]
          const own = !m.sharedAt(sg.fb)
          return own ? refs.pieces(sg.pb, sg.len).map((pc) => ({ fb: sg.fb + pc.start - sg.pb, len: pc.len, vol: 0, pb: pc.start, fresh: pc.n > 1 })) : [{ ...sg, fresh: true }]
        })
        const punched: Extent[] = []
        for (let b = fb; b < fb + len; b++) want.get(m)!.set(b, op)
        for (const p of plan) {
          if (!p.fresh) { for (let b = p.pb; b < p.pb + p.len; b++) data.set(b, op); continue }
          punched.push(...m.punch(p.fb, p.fb + p.len))
          m.insert(p.fb, 0, nextPb, p.len)
          for (let b = nextPb; b < nextPb + p.len; b++) data.set(b, op)
          for (let b = nextPb; b < nextPb + p.len; b++) allocated.add(b)
          nextPb += p.len + r(2)
        }
        for (const f of unref(punched)) for (let b = f.start; b < f.start + f.len; b++) allocated.delete(b)
      }
      if (op % 10 && op !== 1499) continue
      // every map reads what was written to it (no write landed in place under another)
      for (const x of live) for (const [b, v] of want.get(x)!) assert.is(data.get(x.lookup(b)!.pb), v, `${what(op)}: file block ${b} of a map`)
      // the counts equal those of the distinct chunk arrays of the live maps
      const seen = new Set<readonly Extent[]>(), runs: { start: number; len: number }[] = []
      const holders = new Map<number, Set<ExtentMap>>()
      for (const x of live) {
        x.forEachChunk((ex) => { if (!seen.has(ex)) { seen.add(ex); for (const e of ex) runs.push({ start: e.pb, len: e.len }) } })
        x.forEach((e) => { for (let b = e.pb; b < e.pb + e.len; b++) (holders.get(b) ?? holders.set(b, new Set()).get(b)!).add(x) })
      }
      assert.equal(refs.toArray(), RefMap.fromRuns(runs).refs.toArray(), `${what(op)}: counts per distinct chunk`)
      // nothing held is freed, nothing freed is held
      assert.equal([...allocated].sort((a, b) => a - b), [...holders.keys()].sort((a, b) => a - b), `${what(op)}: allocated = held`)
      // what a map would write in place is held by it alone
      for (const x of live) {
        x.forEach((e) => {
          if (x.sharedAt(e.fb)) return
          for (const pc of refs.pieces(e.pb, e.len)) if (pc.n === 1) assert.is(holders.get(pc.start)!.size, 1, `${what(op)}: block ${pc.start} counted private but held by more`)
        })
      }
    }
  })
}

test('FreeMap against a bitmap (chunks of 4 and 256): exact runs and accounting, the goal, one run when one fits, else the longest first; refuses double free', () => {
  for (const chunk of [4, 256]) {
    const r = rng(7 + chunk)
    const LO = 100, HI = 5100
    // some blocks allocated from the start, scattered, so the free space begins in pieces
    const pre = Array.from({ length: 400 }, () => ({ start: LO + r(HI - LO - 8), len: 1 + r(8) }))
    const model = new Uint8Array(HI)
    for (const x of pre) model.fill(1, x.start, x.start + x.len)
    const f = FreeMap.fromAllocated(LO, HI, RefMap.fromRuns(pre).union, [], chunk)
    const freeRuns = () => {
      const out: { start: number; len: number }[] = []
      for (let b = LO; b < HI; b++) {
        if (model[b]) continue
        const l = out[out.length - 1]
        if (l && l.start + l.len === b) l.len++
        else out.push({ start: b, len: 1 })
      }
      return out
    }
    const held: { start: number; len: number }[] = []
    let rotor = LO
    for (let i = 0; i < 3000; i++) {
      const before = freeRuns()
      if (r(2) && held.length) {
        const [h] = held.splice(r(held.length), 1)
        f.release(h.start, h.len)
        model.fill(0, h.start, h.start + h.len)
      } else {
        const want = 1 + r(r(4) ? 16 : 300)
        const goal = r(2) ? LO + r(HI - LO) : -1
        const got = f.alloc(want, goal)
        const free = before.reduce((t, x) => t + x.len, 0)
        if (!got) { assert.ok(want > free, `chunk ${chunk} op ${i}: refused ${want} with ${free} free`); continue }
        let n = 0
        for (const g of got) {
          for (let k = g.start; k < g.start + g.len; k++) { assert.is(model[k], 0, `chunk ${chunk} op ${i}: block ${k} allocated twice`); model[k] = 1 }
          n += g.len
          held.push(g)
        }
        assert.is(n, want)
        const atGoal = before.some((x) => goal >= x.start && goal < x.start + x.len)
        if (atGoal) assert.is(got[0].start, goal, `chunk ${chunk} op ${i}: goal not honoured`)
        else if (before.some((x) => x.len >= want)) {
          assert.is(got.length, 1, `chunk ${chunk} op ${i}: ${want} blocks in pieces while a run holds them`)
          // next-fit: the first run that holds them from the one holding the rotor on, wrapping round
          const from = before.findIndex((x) => x.start + x.len > rotor)
          const order = from < 0 ? before : [...before.slice(from), ...before.slice(0, from)]
          assert.is(got[0].start, order.find((x) => x.len >= want)!.start, `chunk ${chunk} op ${i}: not next-fit`)
        }
        else assert.is(got[0].len, Math.max(...before.map((x) => x.len)), `chunk ${chunk} op ${i}: the first piece is not the longest run`)
        rotor = got[got.length - 1].start + got[got.length - 1].len
      }
      assert.equal(f.runs(), freeRuns(), `chunk ${chunk} op ${i}: free runs`)
      assert.is(f.free, freeRuns().reduce((t, x) => t + x.len, 0))
    }
    f.release(held[0].start, held[0].len)
    assert.throws(() => f.release(held[0].start, 1), /double free/)
  }
  const fresh = FreeMap.fromAllocated(0, 1000, [], [])
  const a = fresh.alloc(10, -1)!
  assert.equal(fresh.alloc(5, a[0].start + 10), [{ start: a[0].start + 10, len: 5 }], 'goal not honoured')
  fresh.release(a[0].start + 10, 5)
  assert.throws(() => fresh.release(a[0].start + 12, 1), /double free/)
})

test('RefMap.adjustMany (one sweep) gives the counts and frees of adjust() run by run', () => {
  const r = rng(7)
  for (let round = 0; round < 40; round++) {
    // a in small chunks: adjust() edits across chunk bounds
    const a = new RefMap(4), b = new RefMap()
    // a map that already has shared runs
    const base = Array.from({ length: 100 + r(200) }, () => ({ start: r(5000), len: 1 + r(30) }))
    for (const x of base) { a.adjust(x.start, x.len, 1); b.adjust(x.start, x.len, 1) }
    const runs = Array.from({ length: 64 + r(300) }, () => ({ start: r(5000), len: 1 + r(30) }))
    const delta = r(2) ? 1 : -1
    // -1 only over blocks held: the shared runs, each twice, so the blocks counted 2 are freed
    const use = delta > 0 ? runs : a.toArray().slice(0, 32 + r(Math.max(1, a.count - 32))).flatMap((x) => [{ start: x.start, len: x.len }, { start: x.start, len: x.len }])
    if (use.length < 64) continue
    const one = use.flatMap((x) => a.adjust(x.start, x.len, delta))
    const many = b.adjustMany(use, delta)
    assert.equal(b.toArray(), a.toArray(), `round ${round}: counts`)
    for (let q = 0; q < 20; q++) {
      const s0 = r(5000), len = 1 + r(100)
      assert.equal(a.pieces(s0, len), b.pieces(s0, len), `round ${round}: pieces ${s0}+${len}`)
      assert.is(a.anyShared(s0, len), b.anyShared(s0, len), `round ${round}: anyShared ${s0}+${len}`)
    }
    const blocks = (l: { start: number; len: number }[]) => l.flatMap((x) => Array.from({ length: x.len }, (_, i) => x.start + i)).sort((p, q) => p - q)
    assert.equal(blocks(many), blocks(one), `round ${round}: freed`)
  }
})

test('RefMap.fromRuns, adjustMany, unshared and RunBounds.overlaps (sorted-array sweeps) match per-block counts and adjust() run by run, random seed', () => {
  const seed = Number(process.env.SEED ?? Math.floor(Math.random() * 2 ** 31))
  console.log(`fs-extents: RefMap sweeps seed ${seed} (SEED=${seed} repeats it)`)
  const r = rng(seed)
  /** Sorted, coalesced runs of the blocks whose count passes `keep`, with the count. */
  const runsOf = (count: Map<number, number>, keep: (n: number) => boolean) => {
    const out: { start: number; len: number; n: number }[] = []
    for (const b of [...count.keys()].sort((p, q) => p - q)) {
      const n = count.get(b)!
      if (!keep(n)) continue
      const l = out[out.length - 1]
      if (l && l.start + l.len === b && l.n === n) l.len++
      else out.push({ start: b, len: 1, n })
    }
    return out
  }
  const blocks = (l: { start: number; len: number }[]) => l.flatMap((x) => Array.from({ length: x.len }, (_, i) => x.start + i)).sort((p, q) => p - q)
  for (let round = 0; round < 200; round++) {
    // a small address space: many runs start or end at the same block; some are empty
    const span = 50 + r(3000), maxLen = 1 + r(60)
    const runs = Array.from({ length: r(400) }, () => ({ start: r(span), len: r(8) ? 1 + r(maxLen) : 0 }))
    const count = new Map<number, number>()
    for (const x of runs) for (let b = x.start; b < x.start + x.len; b++) count.set(b, (count.get(b) ?? 0) + 1)
    const built = RefMap.fromRuns(runs)
    assert.equal(built.refs.toArray(), runsOf(count, (n) => n >= 2), `seed ${seed} round ${round}: fromRuns counts`)
    assert.equal(built.union, runsOf(count, (n) => n >= 1).map((x) => ({ start: x.start, len: x.len })).reduce((o, x) => {
      const l = o[o.length - 1]
      if (l && l.start + l.len === x.start) l.len += x.len; else o.push(x)
      return o
    }, [] as { start: number; len: number }[]), `seed ${seed} round ${round}: fromRuns union`)
    for (let q = 0; q < 20; q++) {
      const s0 = r(span), len = r(maxLen * 4)
      const one = built.refs.pieces(s0, len).filter((p) => p.n === 1).reduce((t, p) => t + p.len, 0)
      assert.is(built.refs.unshared(s0, len), one, `seed ${seed} round ${round}: unshared ${s0}+${len}`)
    }
    // mount's check that a map holds no block twice
    const twice = [...count.values()].some((n) => n >= 2)
    assert.is(RunBounds.of(runs).overlaps(), twice, `seed ${seed} round ${round}: overlaps`)
    const apart = runsOf(count, (n) => n >= 1).map((x) => ({ start: x.start, len: x.len })).reverse()
    const pick = apart.filter(() => r(2) > 0)
    assert.is(built.refs.unsharedIn(RunBounds.of(pick)), pick.reduce((t, x) => t + built.refs.unshared(x.start, x.len), 0), `seed ${seed} round ${round}: unsharedIn`)
    assert.is(RunBounds.of(apart).overlaps(), false, `seed ${seed} round ${round}: disjoint runs overlap`)
    if (apart.length) {
      const x = apart[r(apart.length)], b = x.start + r(x.len)
      assert.is(RunBounds.of([...apart, { start: b, len: 1 }]).overlaps(), true, `seed ${seed} round ${round}: block ${b} twice`)
    }
    // adjustMany from that map against adjust() run by run: +1 over any runs, -1 over blocks held
    const a = RefMap.of(built.refs.toArray().map((x) => ({ ...x })), 4), b = RefMap.of(built.refs.toArray().map((x) => ({ ...x })))
    const delta = r(2) ? 1 : -1
    const use = delta > 0
      ? Array.from({ length: 64 + r(300) }, () => ({ start: r(span), len: r(8) ? 1 + r(maxLen) : 0 }))
      : [...runsOf(count, (n) => n >= 1).filter(() => r(3) > 0), ...a.toArray().filter(() => r(2) > 0)].map((x) => ({ start: x.start, len: x.len }))
    if (use.length < 64) continue
    for (let i = use.length - 1; i > 0; i--) { const k = r(i + 1); [use[i], use[k]] = [use[k], use[i]] }
    const one = use.flatMap((x) => a.adjust(x.start, x.len, delta))
    const many = b.adjustMany(use, delta)
    assert.equal(b.toArray(), a.toArray(), `seed ${seed} round ${round}: adjustMany counts`)
    assert.equal(blocks(many), blocks(one), `seed ${seed} round ${round}: adjustMany frees`)
  }
})

test('sortBlocks sorts as the native sort does: radix on whole numbers below 2^48, native otherwise', () => {
  const seed = Number(process.env.SEED ?? Math.floor(Math.random() * 2 ** 31))
  const r = rng(seed)
  const cases: [number, () => number][] = [
    [5000, () => r(1 << 16)], // one pass
    [20000, () => r(1 << 30) * 4 + r(4)], // two
    [9000, () => r(1 << 24) * 2 ** 24 + r(1 << 24)], // three, up to 2^48
    [100, () => r(1 << 20)], // short: native
    [6000, () => (r(1000) ? r(1 << 20) : -1 - r(5))], // a negative: native
    [6000, () => (r(1000) ? r(1 << 20) : r(1 << 20) + 0.5)], // a fraction: native
    [6000, () => (r(1000) ? r(1 << 20) : 2 ** 48 + r(9))], // too large: native
  ]
  for (const [n, gen] of cases) {
    const a = new Float64Array(n)
    for (let i = 0; i < n; i++) a[i] = gen()
    const want = a.slice().sort()
    sortBlocks(a)
    assert.equal(a, want, `seed ${seed}: ${n} values`)
  }
})

test.run()
