// Verification of a store against the trees its roots name: every node reachable,
// well formed (keys sorted, each under its parent's bounds), its reference count equal
// to the parents and roots that point at it, no count for a node nothing reaches, and
// no block used twice (a node of a tree that is also a space tree node). `vsm fs
// check` runs it once the fs keeps its maps in trees.
import type { BtStore } from './store'
import { Tree } from './tree'

export interface TreeCheck { errors: string[]; nodes: number; used: number[] }

export async function checkTrees(s: BtStore, roots: { tree: Tree; root: number }[]): Promise<TreeCheck> {
  const errors: string[] = []
  const expected = new Map<number, number>()
  const seen = new Set<number>()
  const visit = async (t: Tree, b: number, lo: number, hi: number): Promise<void> => {
    let n
    try { n = await s.get(b) } catch (e) { errors.push((e as Error).message); return }
    if (n.vsize !== t.vsize) errors.push(`node ${b}: value size ${n.vsize}, its tree's is ${t.vsize}`)
    if (!n.keys.length) errors.push(`node ${b}: empty`)
    for (let i = 0; i < n.keys.length; i++) {
      if (i && n.keys[i] <= n.keys[i - 1]) errors.push(`node ${b}: keys out of order at ${i}`)
      if (n.keys[i] < lo && !(i === 0 && !n.leaf)) errors.push(`node ${b}: key ${n.keys[i]} below its bound ${lo}`)
      if (n.keys[i] >= hi) errors.push(`node ${b}: key ${n.keys[i]} not below its bound ${hi}`)
    }
    if (n.leaf) return
    for (let i = 0; i < n.kids.length; i++) {
      const k = n.kids[i]
      expected.set(k, (expected.get(k) ?? 0) + 1)
      if (seen.has(k)) continue
      seen.add(k)
      await visit(t, k, i === 0 ? lo : n.keys[i], i + 1 < n.keys.length ? n.keys[i + 1] : hi)
    }
  }
  for (const { tree, root } of roots) {
    if (!root) continue
    if (!tree.shared) { errors.push('checkTrees: only reference-counted trees are checked by root'); continue }
    expected.set(root, (expected.get(root) ?? 0) + 1)
    if (seen.has(root)) continue
    seen.add(root)
    await visit(tree, root, 0, Infinity)
  }
  const counts = await s.allCounts()
  for (const [b, n] of expected) {
    const c = counts.get(b) ?? 0
    if (c !== n) errors.push(`node ${b}: reference count ${c}, ${n} parents and roots hold it`)
  }
  for (const [b, c] of counts) if (!expected.has(b)) errors.push(`node ${b}: count ${c} but no tree reaches it (leaked)`)
  const space = await s.spaceNodes()
  for (const b of space) if (expected.has(b)) errors.push(`block ${b}: both a space tree node and a tree node`)
  const used = [...expected.keys(), ...space].sort((a, b) => a - b)
  return { errors, nodes: expected.size, used }
}
