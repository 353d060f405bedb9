// The copy-on-write B+tree library (src/fs/btree) against a model: random inserts,
// removes, lookups, ranges, snapshots (clones), dropped snapshots, commits, and crashes
// at a random write or flush (what the device kept: the flushed image plus a random
// subset of the unflushed writes, some torn). After each recovery the trees must equal
// the last committed model (or the one being committed when the crash came after its
// superblock write was issued); every reference count must equal its holders, and the
// free space plus the used nodes must cover the metadata area exactly (no leak). The
// seed is printed; BTREE_SEED=N replays a run, BTREE_RUNS=N runs more seeds.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { BlockDev } from '../src/block/blockdev'
import { FreeMap } from '../src/fs/extents'
import { checkTrees } from '../src/fs/btree/check'
import { BtStore } from '../src/fs/btree/store'
import { Tree, clone, drop, insert, lookup, range, remove, walk } from '../src/fs/btree/tree'
import { rng } from './helpers/conformance'
import { Crash, CrashDev, MemDev } from './helpers/fs-memdev'

const BLOCKS = 16384
const SB: [number, number] = [1, 2]
const LO = 3
const VSIZE = 100 // 37 entries a leaf: thousands of keys make three levels

type Model = Map<string, Map<number, Buffer>>

function copyModel(m: Model): Model {
  return new Map([...m].map(([k, t]) => [k, new Map(t)]))
}

/** Value ids held by leaves: what inc/dec report must equal what the trees hold. */
function valueRefs(held: Map<number, number>) {
  return {
    inc: (v: Buffer) => { const id = v.readUInt32LE(0); held.set(id, (held.get(id) ?? 0) + 1) },
    dec: (v: Buffer) => {
      const id = v.readUInt32LE(0), n = (held.get(id) ?? 0) - 1
      if (n < 0) throw new Error(`value ${id} released more often than held`)
      if (n) held.set(id, n); else held.delete(id)
    },
  }
}

async function openStore(dev: BlockDev, cacheNodes: number) {
  const { store, roots, used } = await BtStore.open(dev, { sb: SB, cacheNodes })
  const errors: string[] = []
  const free = FreeMap.fromAllocated(LO, BLOCKS, used.map((b) => ({ start: b, len: 1 })), errors)
  assert.equal(errors, [], 'used blocks inside the area, each once')
  store.start({ alloc: () => free.alloc(1, -1)?.[0].start ?? null, available: () => free.free, release: (b) => free.release(b, 1) })
  return { store, roots, free }
}

/** A formatted store on a fresh device, and a tree of plain values. */
async function freshStore(cacheNodes: number) {
  const mem = new MemDev(BLOCKS * 4096)
  await BtStore.format(mem, SB)
  const tree: Tree = { vsize: VSIZE, shared: true }
  return { mem, tree, ...(await openStore(mem, cacheNodes)) }
}

async function run(seed: number, ops: number) {
  const r = rng(seed)
  let mem = new MemDev(BLOCKS * 4096)
  await BtStore.format(mem, SB)
  let dev = new CrashDev(mem)
  const held = new Map<number, number>()
  const tree: Tree = { vsize: VSIZE, shared: true, value: valueRefs(held) }
  let { store, roots, free } = await openStore(dev, 16)
  let model: Model = new Map([['live', new Map()]])
  roots.live = 0
  await store.commit({ ...roots })
  let committed = copyModel(model)
  let committing: Model | null = null
  let nextId = 1, snaps = 0, crashes = 0
  const val = (id: number) => { const b = Buffer.alloc(VSIZE, id & 0xff); b.writeUInt32LE(id, 0); return b }

  const verify = async (what: string) => {
    const names = [...model.keys()].sort()
    assert.equal(Object.keys(roots).sort(), names, `${what}: the same trees`)
    for (const name of names) {
      const got = await range(store, tree, roots[name], 0, Infinity)
      const exp = [...model.get(name)!].sort((a, b) => a[0] - b[0])
      assert.equal(got.map(([k, v]) => [k, v.readUInt32LE(0)]), exp.map(([k, v]) => [k, v.readUInt32LE(0)]), `${what}: tree ${name} (seed ${seed})`)
    }
    const c = await checkTrees(store, names.map((n) => ({ tree, root: roots[n] })))
    assert.equal(c.errors, [], `${what}: check (seed ${seed})`)
    // what the model's trees hold is exactly what is held: dropping frees what only it held
    const ids = new Set<number>()
    for (const t of model.values()) for (const v of t.values()) ids.add(v.readUInt32LE(0))
    assert.equal([...held.keys()].sort((a, b) => a - b), [...ids].sort((a, b) => a - b), `${what}: values held (seed ${seed})`)
    return c
  }
  const verifyCommitted = async (what: string) => {
    const c = await verify(what)
    // used nodes + free space = the whole area: nothing leaked, nothing used twice
    assert.is(c.used.length + free.free, BLOCKS - LO, `${what}: used ${c.used.length} + free ${free.free} cover the area (seed ${seed})`)
  }

  for (let op = 0; op < ops; op++) {
    const names = [...model.keys()]
    const name = names[r(names.length)]
    const m = model.get(name)!
    const k = r(20000)
    const p = r(100)
    try {
      if (p < 45) {
        const id = nextId++
        roots[name] = await insert(store, tree, roots[name], k, val(id))
        held.set(id, (held.get(id) ?? 0) + 1)
        m.set(k, val(id))
      } else if (p < 65) {
        const keys = [...m.keys()]
        const key = keys.length && r(4) ? keys[r(keys.length)] : k
        roots[name] = await remove(store, tree, roots[name], key)
        m.delete(key)
      } else if (p < 75) {
        const v = await lookup(store, tree, roots[name], k)
        assert.is(v?.readUInt32LE(0), m.get(k)?.readUInt32LE(0), `lookup ${k} in ${name} (seed ${seed})`)
      } else if (p < 82) {
        const lo = r(20000), hi = lo + r(3000)
        const got = await range(store, tree, roots[name], lo, hi)
        const exp = [...m].filter(([x]) => x >= lo && x < hi).sort((a, b) => a[0] - b[0])
        assert.equal(got.map(([x]) => x), exp.map(([x]) => x), `range in ${name} (seed ${seed})`)
      } else if (p < 86 && model.size < 8) {
        const s = `s${++snaps}`
        roots[s] = await clone(store, tree, roots[name])
        model.set(s, new Map(m))
      } else if (p < 90 && model.size > 1) {
        const s = names.filter((x) => x !== 'live')[r(names.length - 1)]
        await drop(store, tree, roots[s])
        delete roots[s]
        model.delete(s)
      } else if (p < 97) {
        committing = copyModel(model)
        await store.commit({ ...roots })
        committed = committing
        committing = null
        if (r(4) === 0) await verifyCommitted(`after commit at op ${op}`)
      } else if (!dev.dead) {
        dev.arm(1 + r(60))
      }
    } catch (e) {
      if (!(e instanceof Crash)) throw e
      // power lost: what the device kept, reopened
      crashes++
      const image = mem.crashImage(r)
      dev = new CrashDev(image)
      const before = committed, during = committing
      ;({ store, roots, free } = await openStore(dev, 16))
      const match = async (mm: Model) => {
        if (Object.keys(roots).sort().join() !== [...mm.keys()].sort().join()) return false
        for (const [n, t] of mm) {
          const got = await range(store, tree, roots[n], 0, Infinity)
          if (got.length !== t.size || got.some(([x, v]) => t.get(x)?.readUInt32LE(0) !== v.readUInt32LE(0))) return false
        }
        return true
      }
      const ok = (await match(before)) || (during !== null && (await match(during)))
      assert.ok(ok, `after crash ${crashes} at op ${op}: the trees are the last committed state (seed ${seed})`)
      model = (await match(before)) ? copyModel(before) : copyModel(during!)
      committed = copyModel(model)
      committing = null
      // the values' holders as the recovered leaves say (the counts of values live with their owner)
      held.clear()
      const seen = new Set<number>()
      for (const n of Object.keys(roots)) {
        await walk(store, tree, roots[n], (node) => {
          if (seen.has(node.block)) return
          seen.add(node.block)
          if (node.leaf) for (const v of node.vals) tree.value!.inc(v)
        })
      }
      await verifyCommitted(`after crash ${crashes} at op ${op}`)
      mem = image
    }
  }
  dev.arm(-1)
  await store.commit({ ...roots })
  await verifyCommitted('at the end')
  assert.ok(store.stats.maxCached <= 16, `the cache stayed within 16 nodes (${store.stats.maxCached})`)
  return { crashes, snaps }
}

test('btree: random ops, snapshots, drops and crashes against a model (seed printed)', async () => {
  const runs = Number(process.env.BTREE_RUNS ?? 2)
  const first = process.env.BTREE_SEED ? Number(process.env.BTREE_SEED) : (Date.now() % 1_000_000_000)
  for (let i = 0; i < runs; i++) {
    const seed = first + i
    console.log(`fs-btree: seed ${seed} (BTREE_SEED=${seed} replays it)`)
    const res = await run(seed, 4000)
    console.log(`fs-btree: seed ${seed}: ${res.crashes} crashes, ${res.snaps} snapshots`)
  }
})

test('btree: a snapshot of a big tree is O(1); the first change after it copies one path', async () => {
  const { store, tree } = await freshStore(64)
  let root = 0
  for (let k = 0; k < 8000; k++) root = await insert(store, tree, root, k * 2, Buffer.alloc(VSIZE, 1))
  await store.commit({ live: root })
  let w = store.stats.nodesWritten
  const snap = await clone(store, tree, root)
  await store.commit({ live: root, snap })
  const snapWrites = store.stats.nodesWritten - w
  assert.ok(snapWrites <= 4, `a snapshot of ${8000} keys wrote ${snapWrites} nodes (only the count of the root changes)`)
  w = store.stats.nodesWritten
  root = await insert(store, tree, root, 7777, Buffer.alloc(VSIZE, 2))
  const pathNodes = store.pendingNodes
  await store.commit({ live: root, snap })
  assert.ok(pathNodes <= 4, `one insert after the snapshot made ${pathNodes} tree nodes (one path)`)
  assert.ok(store.stats.nodesWritten - w <= 12, `and its commit wrote ${store.stats.nodesWritten - w} nodes with the counts`)
  assert.is((await lookup(store, tree, snap, 7777)), undefined, 'the snapshot does not see the change')
  const c = await checkTrees(store, [{ tree, root }, { tree, root: snap }])
  assert.equal(c.errors, [])
})

test('btree: out of space, inserts fail with ENOSPC and change nothing; removes and commits still work', async () => {
  const { mem, store, free, tree } = await freshStore(32)
  // leave the store only a small area: everything past it is taken by "data"
  free.alloc(free.free - 400, -1)
  let root = 0, k = 0, refused = ''
  try {
    for (;;) { root = await insert(store, tree, root, k, Buffer.alloc(VSIZE, 3)); k++; if (k % 50 === 0) await store.commit({ root }) }
  } catch (e) { refused = (e as Error & { code?: string }).code ?? String(e) }
  assert.is(refused, 'ENOSPC')
  assert.is((await range(store, tree, root, 0, Infinity)).length, k, 'every insert before the refusal is there, the refused one is not')
  // each remove copies a path; committing now and then hands the old copies back
  for (let i = 0; i < k; i += 3) { root = await remove(store, tree, root, i); if (i % 12 === 0) await store.commit({ root }) }
  await store.commit({ root })
  const { store: again, roots } = await openStore(mem, 32)
  const left = await range(again, tree, roots.root, 0, Infinity)
  assert.is(left.length, k - Math.ceil(k / 3), 'the removes were committed')
  assert.equal((await checkTrees(again, [{ tree, root: roots.root }])).errors, [])
})

test('btree: a node read back damaged or from the wrong block is EIO naming the block', async () => {
  const { mem, store, tree } = await freshStore(16)
  let root = 0
  for (let k = 0; k < 200; k++) root = await insert(store, tree, root, k, Buffer.alloc(VSIZE, 4))
  await store.commit({ root })
  const node = Buffer.alloc(4096)
  await mem.read(node, root * 4096)
  const copy = Buffer.from(node)
  node[100] ^= 1
  await mem.write(node, root * 4096)
  let { store: s2 } = await openStore(mem, 16)
  const msg = (p: Promise<unknown>) => p.then(() => 'no error', (e: Error) => e.message)
  assert.match(await msg(lookup(s2, tree, root, 5)), new RegExp(`btree node at block ${root}: checksum mismatch`))
  // a whole valid node written at another block
  await mem.write(copy, root * 4096)
  ;({ store: s2 } = await openStore(mem, 16))
  const kid = (await s2.get(root)).kids[0]
  await mem.write(copy, kid * 4096)
  ;({ store: s2 } = await openStore(mem, 16))
  assert.match(await msg(lookup(s2, tree, root, 0)), new RegExp(`btree node at block ${kid}: written as block ${root}`))
  const c = await checkTrees(s2, [{ tree, root }])
  assert.ok(c.errors.some((e) => e.includes(`block ${kid}`)), 'check names the bad node')
})

test.run()
