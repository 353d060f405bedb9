// A file's extent map on a B+tree (src/fs/btree/extent-tree.ts) against the in-memory
// ExtentMap as the model: random inserts into holes (fresh physical runs, sometimes
// contiguous so they coalesce), punches, snapshots (clone of the root), dropped
// snapshots, commits and reopen. Checked: every map's segments and extents as the
// model's; the data references the trees report (ValueRefs) held on exactly the blocks
// some map still holds, so dropping a snapshot frees exactly what only it held; a block
// is shared (path shared or count above 1) exactly when another map holds it. The seed
// is printed; EXTENT_TREE_SEED=N replays it. The references also go to a data space
// map (data-space.ts) in the same store, whose counts must equal them, also after a
// crash at a random write or flush (the maps then are the last committed ones, and
// the data space map's counts what their leaves imply).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { Extent, ExtentMap, FreeMap } from '../src/fs/extents'
import { checkTrees } from '../src/fs/btree/check'
import { ExtentTree, decodeExtent, encodeExtent, extentTree } from '../src/fs/btree/extent-tree'
import { BtStore } from '../src/fs/btree/store'
import { DATA_SPACE_TREE, DataSpace } from '../src/fs/btree/data-space'
import { clone, drop, walk } from '../src/fs/btree/tree'
import { ARCHIVE_BASE } from '../src/fs/layout'
import { rng } from './helpers/conformance'
import { Crash, CrashDev, MemDev } from './helpers/fs-memdev'
import { BlockDev } from '../src/block/blockdev'

/** The extent maps here are models of the trees: nobody reads their block counts. */
const uncounted = (): void => {}

const BLOCKS = 16384
const SB: [number, number] = [1, 2]

async function open(dev: BlockDev) {
  const { store, roots, used } = await BtStore.open(dev, { sb: SB, cacheNodes: 32 })
  const free = FreeMap.fromAllocated(3, BLOCKS, used.map((b) => ({ start: b, len: 1 })), [])
  store.start({ alloc: () => free.alloc(1, -1)?.[0].start ?? null, available: () => free.free, release: (b) => free.release(b, 1) })
  return { store, roots }
}

test('extent tree: random inserts, punches, snapshots and drops match ExtentMap; data references exact', async () => {
  const seed = process.env.EXTENT_TREE_SEED ? Number(process.env.EXTENT_TREE_SEED) : Date.now() % 1_000_000_000
  console.log(`fs-extent-tree: seed ${seed} (EXTENT_TREE_SEED=${seed} replays it)`)
  const r = rng(seed)
  let mem = new MemDev(BLOCKS * 4096)
  await BtStore.format(mem, SB)
  let dev = new CrashDev(mem)
  let { store } = await open(dev)
  // data block -> holders the trees report
  const held = new Map<number, number>()
  const adjust = (v: Buffer, d: number) => {
    const { pb, len } = decodeExtent(0, v)
    for (let b = pb; b < pb + len; b++) {
      const n = (held.get(b) ?? 0) + d
      if (n < 0) throw new Error(`block ${b} released more than held (seed ${seed})`)
      if (n) held.set(b, n); else held.delete(b)
    }
  }
  // the same references kept on disk by the data space map, checked against `held`
  let ds = new DataSpace(store, 0)
  const dsRefs = () => ds.refs()
  const t = extentTree({
    inc: async (v) => { adjust(v, 1); await dsRefs().inc(v) },
    dec: async (v) => { adjust(v, -1); await dsRefs().dec(v) },
  })
  const FILE = 40000
  let nextPb = 1_000_000
  const everUsed = new Set<number>()
  const maps = new Map<string, { tree: ExtentTree; model: ExtentMap }>([['live', { tree: new ExtentTree(store, t, 0), model: new ExtentMap() }]])
  let snaps = 0
  const rootsOf = () => ({ ...Object.fromEntries([...maps].map(([n, m]) => [n, m.tree.root])), ds: ds.root })

  const modelsOf = () => new Map([...maps].map(([n, m]) => [n, m.model.clone(uncounted)]))
  let committed = modelsOf(), committing: Map<string, ExtentMap> | null = null, crashes = 0

  /**
   * Power lost: reopen what the device kept. The maps must be the last committed ones
   * (or the ones being committed, when the crash came after their superblock write was
   * issued), and the data space map's counts what the recovered trees' leaves imply.
   */
  const recover = async (op: number) => {
    mem = mem.crashImage(r)
    dev = new CrashDev(mem)
    const o = await open(dev)
    store = o.store
    // a store the crash caught before its first commit opens with no roots: the start, one empty live map
    const roots: Record<string, number> = Object.keys(o.roots).length ? o.roots : { live: 0, ds: 0 }
    const matches = async (ms: Map<string, ExtentMap>) => {
      if (Object.keys(roots).filter((k) => k !== 'ds').sort().join() !== [...ms.keys()].sort().join()) return false
      for (const [n, model] of ms) {
        const got = await new ExtentTree(store, t, roots[n]).all()
        if (JSON.stringify(got) !== JSON.stringify(model.toArray())) return false
      }
      return true
    }
    const before = committed, during = committing
    const state = (await matches(before)) ? before : during && (await matches(during)) ? during : null
    assert.ok(state, `after crash ${crashes} at op ${op}: the maps are the last committed ones (seed ${seed})`)
    maps.clear()
    for (const [n, model] of state!) maps.set(n, { tree: new ExtentTree(store, t, roots[n]), model: model.clone(uncounted) })
    ds = new DataSpace(store, roots.ds)
    committed = modelsOf()
    committing = null
    held.clear()
    const seen = new Set<number>()
    for (const m of maps.values()) {
      await walk(store, t, m.tree.root, (node) => {
        if (seen.has(node.block) || !node.leaf) return
        seen.add(node.block)
        for (const v of node.vals) adjust(v, 1)
      })
    }
    await verify(`after crash ${crashes} at op ${op}`)
  }

  const verify = async (what: string) => {
    for (const [name, m] of maps) {
      assert.equal(await m.tree.all(), m.model.toArray().map((e) => ({ ...e })), `${what}: extents of ${name} (seed ${seed})`)
      const b0 = r(FILE), b1 = b0 + r(400)
      assert.equal(await m.tree.segments(b0, b1), m.model.segments(b0, b1), `${what}: segments ${b0}..${b1} of ${name} (seed ${seed})`)
    }
    // as a mount reads them: leaf by leaf, a leaf two maps share read once, and here at
    // most 2 node reads in flight (more are wanted at once)
    const memo = new Map<number, Extent[][]>()
    for (const [name, m] of maps) assert.equal(ExtentMap.ofChunks(await m.tree.chunks(memo, 2), uncounted).flat(), m.model.flat(), `${what}: ${name} read by leaves (seed ${seed})`)
    const mapped = new Map<number, number>()
    for (const m of maps.values()) for (const e of m.model) for (let b = e.pb; b < e.pb + e.len; b++) mapped.set(b, (mapped.get(b) ?? 0) + 1)
    assert.equal([...held.keys()].sort((a, b) => a - b), [...mapped.keys()].sort((a, b) => a - b), `${what}: data held exactly where a map holds it (seed ${seed})`)
    const onDisk = new Map<number, number>()
    for (const pc of await ds.pieces(0, nextPb + 10)) for (let b = pc.start; pc.n && b < pc.start + pc.len; b++) onDisk.set(b, pc.n)
    assert.equal([...onDisk].sort((a, b) => a[0] - b[0]), [...held].sort((a, b) => a[0] - b[0]), `${what}: the data space map's counts (seed ${seed})`)
    // sharing as the fs sees it, on a sample of the live file's blocks
    const live = maps.get('live')!
    for (let k = 0; k < 20; k++) {
      const fb = r(FILE)
      const m = live.model.lookup(fb)
      if (!m) continue
      const shared = (await live.tree.pathShared(fb)) || (held.get(m.pb) ?? 0) > 1
      assert.is(shared, mapped.get(m.pb)! > 1, `${what}: block ${fb} shared (seed ${seed})`)
    }
    const c = await checkTrees(store, [...[...maps.values()].map((m) => ({ tree: t, root: m.tree.root })), { tree: DATA_SPACE_TREE, root: ds.root }])
    assert.equal(c.errors, [], `${what}: check (seed ${seed})`)
  }

  for (let op = 0; op < 4000; op++) {
    try {
      const names = [...maps.keys()]
      const name = names[r(names.length)]
      const m = maps.get(name)!
      const p = r(100)
      if (p < 45) {
        const fb = r(FILE), len = 1 + r(24)
        for (const sg of m.model.segments(fb, fb + len)) {
          if (sg.pb >= 0) continue
          // sometimes right after the previous run or right before the next one's blocks
          // (when never used), so neighbours coalesce on either side
          const after = m.model.lookup(sg.fb + sg.len)
          let pb = r(4) ? nextPb + 5 : nextPb
          if (after && r(2) && after.pb - sg.len >= 0 && ![...Array(sg.len).keys()].some((k) => everUsed.has(after.pb - sg.len + k))) pb = after.pb - sg.len
          m.model.insert(sg.fb, 0, pb, sg.len)
          await t.value!.inc(encodeExtent(0, pb, sg.len)) // the caller's reference to fresh blocks, handed to the tree
          await m.tree.insert(sg.fb, 0, pb, sg.len)
          for (let k = 0; k < sg.len; k++) everUsed.add(pb + k)
          nextPb = Math.max(nextPb, pb + sg.len)
        }
      } else if (p < 75) {
        const fb = r(FILE), len = 1 + r(60)
        const got = await m.tree.punch(fb, fb + len)
        const exp = m.model.punch(fb, fb + len)
        assert.equal(got.map((e) => ({ ...e })), exp.map((e) => ({ ...e })), `punch ${fb}+${len} in ${name} (seed ${seed})`)
      } else if (p < 80 && maps.size < 6) {
        const s = `s${++snaps}`
        maps.set(s, { tree: new ExtentTree(store, t, await clone(store, t, m.tree.root)), model: m.model.clone(uncounted) })
      } else if (p < 84 && maps.size > 1) {
        const s = names.filter((x) => x !== 'live')[r(names.length - 1)]
        await drop(store, t, maps.get(s)!.tree.root)
        maps.delete(s)
      } else if (p < 92) {
        committing = modelsOf()
        await store.commit(rootsOf())
        committed = committing
        committing = null
        if (r(3) === 0) await verify(`after commit at op ${op}`)
      } else if (p < 94) {
        // reopen from the device: the committed trees, read through a cold cache
        committing = modelsOf()
        await store.commit(rootsOf())
        committed = committing
        committing = null
        const o = await open(dev)
        store = o.store
        for (const [n, mm] of maps) mm.tree = new ExtentTree(store, t, o.roots[n])
        ds = new DataSpace(store, o.roots.ds)
      } else if (p < 97 && !dev.dead) {
        dev.arm(1 + r(60))
      }
    } catch (e) {
      if (!(e instanceof Crash)) throw e
      crashes++
      await recover(op)
    }
  }
  dev.arm(-1)
  await store.commit(rootsOf())
  await verify('at the end')
  console.log(`fs-extent-tree: seed ${seed}: ${snaps} snapshots, ${crashes} crashes, ${maps.get('live')!.model.count} live extents`)
})

test('extent tree values: archive volume numbers (from 2^16) and 48-bit physical blocks round-trip', () => {
  for (const [vol, pb, len] of [[0, 0, 1], [ARCHIVE_BASE + 3, 2 ** 48 - 1, 2 ** 32 - 1], [65535, 123456789, 256], [1, 2 ** 32, 1], [1, 2 ** 32 - 1, 1], [2, 2 ** 32 + 1, 7]]) {
    assert.equal(decodeExtent(7, encodeExtent(vol, pb, len)), { fb: 7, vol, pb, len })
  }
})

test.run()
