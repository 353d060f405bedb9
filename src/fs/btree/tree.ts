// Copy-on-write B+tree operations over a BtStore: lookup, range, insert, remove,
// clone and drop. A tree is named by its root block (0: empty). Every change copies
// the path from the root down (shadow) unless a node was made in this transaction and
// only one parent holds it; the caller keeps the new root. In a shared tree (one whose
// nodes are reference-counted) a clone is one increment of the root, and a node copied
// while shared gives its children (or, in a leaf, its values) one more reference;
// dropping a tree frees exactly the nodes and values only it held.
import type { BtStore } from './store'
import { Node, capacity } from './node'

/** A leaf value that holds something (a data extent): told when a leaf copy adds a holder and when one goes. */
export interface ValueRefs {
  inc(v: Buffer): void | Promise<void>
  dec(v: Buffer): void | Promise<void>
}

export interface Tree {
  vsize: number
  /** Nodes are reference-counted (clone, drop); the space tree's are not. */
  shared: boolean
  value?: ValueRefs
}

/** Index of the child whose range holds key: the last with keys[i] <= key, or 0. */
function childIndex(n: Node, key: number): number {
  let lo = 0, hi = n.keys.length - 1, r = 0
  while (lo <= hi) {
    const m = (lo + hi) >> 1
    if (n.keys[m] <= key) { r = m; lo = m + 1 } else hi = m - 1
  }
  return r
}

/** First index with keys[i] >= key. */
function lowerBound(keys: number[], key: number): number {
  let lo = 0, hi = keys.length
  while (lo < hi) {
    const m = (lo + hi) >> 1
    if (keys[m] < key) lo = m + 1; else hi = m
  }
  return lo
}

export async function lookup(s: BtStore, _t: Tree, root: number, key: number): Promise<Buffer | undefined> {
  if (!root) return undefined
  let n = await s.get(root)
  while (!n.leaf) n = await s.get(n.kids[childIndex(n, key)])
  const i = lowerBound(n.keys, key)
  return n.keys[i] === key ? n.vals[i] : undefined
}

/** The entry with the greatest key <= key, if any. */
export async function floor(s: BtStore, t: Tree, root: number, key: number): Promise<[number, Buffer] | undefined> {
  if (!root) return undefined
  const n = await s.get(root)
  if (n.leaf) {
    const i = lowerBound(n.keys, key + 1) - 1
    return i >= 0 ? [n.keys[i], n.vals[i]] : undefined
  }
  // keys[i] only bounds child i from below: its entries may all lie above key, and then
  // the floor is the greatest entry of the child before
  for (let i = childIndex(n, key); i >= 0; i--) {
    const hit = await floor(s, t, n.kids[i], key)
    if (hit) return hit
  }
  return undefined
}

/** Whether a node on the way to key is held twice or more (the leaf's entries are then another tree's too). */
export async function pathShared(s: BtStore, _t: Tree, root: number, key: number): Promise<boolean> {
  for (let b = root; b;) {
    if ((await s.refs(b)) > 1) return true
    const n = await s.get(b)
    if (n.leaf) return false
    b = n.kids[childIndex(n, key)]
  }
  return false
}

/** Entries with lo <= key < hi, in key order. */
export async function range(s: BtStore, _t: Tree, root: number, lo: number, hi: number): Promise<[number, Buffer][]> {
  const out: [number, Buffer][] = []
  const rec = async (b: number): Promise<void> => {
    const n = await s.get(b)
    if (n.leaf) {
      for (let i = lowerBound(n.keys, lo); i < n.keys.length && n.keys[i] < hi; i++) out.push([n.keys[i], n.vals[i]])
      return
    }
    for (let i = childIndex(n, lo); i < n.kids.length && (i === 0 || n.keys[i] < hi); i++) await rec(n.kids[i])
  }
  if (root && lo < hi) await rec(root)
  return out
}

/** Visit every node of a tree once, parents before children. */
export async function walk(s: BtStore, _t: Tree, root: number, visit: (n: Node) => void): Promise<void> {
  if (!root) return
  const n = await s.get(root)
  visit(n)
  if (!n.leaf) for (const k of n.kids.slice()) await walk(s, _t, k, visit)
}

async function incRef(s: BtStore, b: number): Promise<void> {
  await s.setRefs(b, (await s.refs(b)) + 1)
}

/** One reference to node b goes; at 0 the node goes, and with it one reference to each child or value. */
async function decRef(s: BtStore, t: Tree, b: number): Promise<void> {
  const r = (await s.refs(b)) - 1
  await s.setRefs(b, r)
  if (r > 0) return
  const n = await s.get(b)
  if (n.leaf) for (const v of n.vals) await t.value?.dec(v)
  else for (const k of n.kids) await decRef(s, t, k)
  s.free(b)
}

/** A second holder of the tree at root (a snapshot): O(1), the nodes are shared. */
export async function clone(s: BtStore, t: Tree, root: number): Promise<number> {
  if (root && t.shared) await incRef(s, root)
  return root
}

/** A holder lets go of the tree: frees what no other tree shares. */
export async function drop(s: BtStore, t: Tree, root: number): Promise<void> {
  if (root && t.shared) await decRef(s, t, root)
}

/** A node this transaction may change: itself if made in it and held once, else a copy. */
async function shadow(s: BtStore, t: Tree, b: number): Promise<Node> {
  const held = t.shared ? await s.refs(b) : 1
  if (s.isFresh(b) && held === 1) return s.get(b)
  const n = await s.get(b)
  const c = await s.create(n.leaf, n.vsize, t.shared)
  c.keys = n.keys.slice()
  c.vals = n.vals.map((v) => Buffer.from(v))
  c.kids = n.kids.slice()
  await s.touch(c)
  if (held > 1) {
    // the copy is one more holder of everything below
    if (c.leaf) for (const v of c.vals) await t.value?.inc(v)
    else for (const k of c.kids) await incRef(s, k)
    await s.setRefs(b, held - 1)
  } else {
    if (t.shared) await s.setRefs(b, 0)
    s.free(b)
  }
  return c
}

/** A node emptied or merged away in this transaction (its children, if any, moved on). */
async function discard(s: BtStore, t: Tree, n: Node): Promise<void> {
  if (t.shared) await s.setRefs(n.block, 0)
  s.free(n.block)
}

/** Insert or replace key's value (the tree takes over the caller's reference to val); returns the new root. */
export async function insert(s: BtStore, t: Tree, root: number, key: number, val: Buffer): Promise<number> {
  if (!Number.isSafeInteger(key) || key < 0) throw new Error(`btree: bad key ${key}`)
  if (val.length !== t.vsize) throw new Error(`btree: value of ${val.length} bytes, tree takes ${t.vsize}`)
  if (t.shared) s.reserve('insert')
  if (!root) {
    const n = await s.create(true, t.vsize, t.shared)
    n.keys = [key]
    n.vals = [Buffer.from(val)]
    await s.touch(n)
    return n.block
  }
  const ins = async (b: number): Promise<{ node: Node; right: Node | null }> => {
    const n = await shadow(s, t, b)
    if (n.leaf) {
      const i = lowerBound(n.keys, key)
      if (n.keys[i] === key) { await t.value?.dec(n.vals[i]); n.vals[i] = Buffer.from(val) } else { n.keys.splice(i, 0, key); n.vals.splice(i, 0, Buffer.from(val)) }
    } else {
      const i = childIndex(n, key)
      const r = await ins(n.kids[i])
      n.kids[i] = r.node.block
      if (key < n.keys[i]) n.keys[i] = key
      if (r.right) { n.keys.splice(i + 1, 0, r.right.keys[0]); n.kids.splice(i + 1, 0, r.right.block) }
    }
    let right: Node | null = null
    if (n.keys.length > capacity(n.leaf, n.vsize)) {
      const half = Math.ceil(n.keys.length / 2)
      right = await s.create(n.leaf, n.vsize, t.shared)
      right.keys = n.keys.splice(half)
      if (n.leaf) right.vals = n.vals.splice(half); else right.kids = n.kids.splice(half)
      await s.touch(right)
    }
    await s.touch(n)
    return { node: n, right }
  }
  const r = await ins(root)
  if (!r.right) return r.node.block
  const top = await s.create(false, t.vsize, t.shared)
  top.keys = [r.node.keys[0], r.right.keys[0]]
  top.kids = [r.node.block, r.right.block]
  await s.touch(top)
  return top.block
}

/** Remove key (nothing changes when it is absent); returns the new root (0: empty). */
export async function remove(s: BtStore, t: Tree, root: number, key: number): Promise<number> {
  if (!root || (await lookup(s, t, root, key)) === undefined) return root
  if (t.shared) s.reserve('remove')
  const rem = async (b: number): Promise<Node | null> => {
    const n = await shadow(s, t, b)
    if (n.leaf) {
      const i = lowerBound(n.keys, key)
      await t.value?.dec(n.vals[i])
      n.keys.splice(i, 1)
      n.vals.splice(i, 1)
    } else {
      const i = childIndex(n, key)
      const c = await rem(n.kids[i])
      if (!c) { n.keys.splice(i, 1); n.kids.splice(i, 1) } else { n.kids[i] = c.block; await mergeSmall(n, i, c) }
    }
    if (!n.keys.length) { await discard(s, t, n); return null }
    await s.touch(n)
    return n
  }
  /** A child left small is merged with a neighbour when both fit in one node, so sparse removals do not leave sparse trees. */
  const mergeSmall = async (p: Node, i: number, c: Node) => {
    const cap = capacity(c.leaf, c.vsize)
    if (c.keys.length >= cap / 4 || p.kids.length < 2) return
    const j = i + 1 < p.kids.length ? i + 1 : i - 1
    const sib = await s.get(p.kids[j])
    if (sib.keys.length + c.keys.length > (cap * 3) / 4) return
    const other = await shadow(s, t, p.kids[j])
    const [a, z] = j > i ? [c, other] : [other, c]
    a.keys.push(...z.keys)
    if (a.leaf) a.vals.push(...z.vals); else a.kids.push(...z.kids)
    await s.touch(a)
    await discard(s, t, z)
    const lo = Math.min(i, j)
    p.kids[lo] = a.block
    p.keys.splice(lo + 1, 1)
    p.kids.splice(lo + 1, 1)
  }
  let top = await rem(root)
  // a root with one child hands it over: the root pointer takes the parent's reference
  while (top && !top.leaf && top.kids.length === 1 && s.isFresh(top.block)) {
    const k = top.kids[0]
    await discard(s, t, top)
    top = await s.get(k)
  }
  return top ? top.block : 0
}
