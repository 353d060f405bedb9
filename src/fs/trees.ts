// The fs's extent maps on the copy-on-write B+trees (btree/): the store in volume 0,
// its nodes taken from volume 0's data space; what changed since the last checkpoint
// (dirty ranges, rebases from snapshot/clone/revert, maps that went) as ops record it
// (ops.ts, live and in replay alike); the checkpoint's step that applies those changes
// to the trees and commits the store (cost: what changed, a snapshot one clone); the
// maps read back at mount; and the trees' part of fsck.
//
// Blocks the store frees in a commit stay out of the free map until the checkpoint
// naming that commit is durable: until then mount goes back to the commit before.
import { mergeRanges } from '../block/ranges'
import { checkTrees } from './btree/check'
import { ExtentTree, extentTree } from './btree/extent-tree'
import { BtStore } from './btree/store'
import { clone, drop } from './btree/tree'
import type { FsCore } from './core'
import { Extent, ExtentMap } from './extents'
import { Inode, err } from './inode'
import { stateBlocks } from './state'

/**
 * The extent trees. No ValueRefs: data blocks' counts stay the in-memory RefMap that
 * mount rebuilds from the maps (moving them into data-space.ts trees is the next step).
 */
export const EXTENTS = extentTree()
/**
 * Nodes the store's cache holds: decoded, a full leaf takes ~18 KiB of heap (1024: ~18
 * MiB); a checkpoint touching more reads them again, nothing else.
 */
const CACHE_NODES = Number(process.env.VSM_FS_TREE_CACHE_NODES ?? 1024)
/**
 * Volume 0's metadata budget: blocks counted as the metadata's whether its nodes use
 * them yet or not (1/256 of the volume, 4 MiB..256 MiB), so statfs does not move with
 * every node a checkpoint copies; the metadata grows past it into the data space.
 */
const BUDGET_MIN = 1024, BUDGET_MAX = 65536

interface Edit { ranges: [number, number][]; ext: Extent[] }

/**
 * A checkpoint's changes to the trees. `maps` in order: a map with forks first, its
 * steps applied in turn, each fork taking a clone of the tree as it is after its step
 * (the source as the snapshot saw it); a fork's own entry comes later.
 */
export interface TreeWork {
  clones: [Inode, number][]
  drops: number[]
  maps: { n: Inode; steps: { edit: Edit; forks: Inode[] }[] }[]
}

/** Blocks [b0, b1) of n's map changed. */
export function markDirty(c: FsCore, n: Inode, b0: number, b1: number): void {
  if (b1 <= b0) return
  n.dirty.push([b0, b1])
  c.treeWork++
  c.treeChanged.add(n)
  c.stateChanged.add(n.ino)
}

/** n's map became a copy of from's (snapshot, clone, revert). */
export function rebase(c: FsCore, n: Inode, from: Inode): void {
  n.rebase = from.rebase ?? from
  // from's tree will be its committed one plus its changed ranges: n forks it after
  // those recorded so far, unless from is itself to be a copy (then n copies its ranges)
  n.rebaseAt = from.rebase ? -1 : from.dirty.length
  n.dirty = from.dirty.slice()
  c.treeWork += 1 + n.dirty.length
  c.treeChanged.add(n)
  c.stateChanged.add(n.ino)
}

/** n's map went (its inode was deleted): the next checkpoint drops its tree. */
export function dropped(c: FsCore, n: Inode): void {
  n.rebase = null
  n.rebaseAt = -1
  n.dirty = []
  c.treeDrops.push(n)
  c.treeWork++
}

/**
 * Blocks the next checkpoint may need: the store's own headroom (128 + 2 per count
 * changed), per change recorded a copied leaf and its two count changes, plus the
 * count increments a shared path's copy gives its children (at most one per node
 * there is); but never more than copying every node once (a node made in a
 * transaction is changed in place) with the splits and space-tree changes that brings.
 */
export function checkpointNeed(c: FsCore): number {
  const work = c.treeWork + c.treeWorkInFlight
  return 160 + Math.min(8 * work + 2 * c.storeBlocks, 6 * c.storeBlocks + Math.ceil(work / 4))
}

/** Volume 0's metadata budget in blocks (not capacity for data: statfs leaves it out). */
export function metaBudget(c: FsCore): number {
  return Math.min(BUDGET_MAX, Math.max(BUDGET_MIN, Math.floor((c.free[0].hi - c.free[0].lo) / 256)))
}

/**
 * Blocks the next checkpoint's state may take (`extra` bytes more) while the current
 * one's are still held: its last size grown by what was journaled since, a bound
 * (extent ops grow the journal, not the state), in segments (stateBlocks).
 */
export function stateNeed(c: FsCore, extra = 0): number {
  return stateBlocks(c, c.lastCkptLen + c.sinceCkpt + c.opsBytes + extra)
}

/**
 * Volume 0 blocks the metadata holds or keeps back: its budget, or more once its nodes,
 * the next checkpoint's need and room for two states (the held one and the next, as
 * metaNearFull asks) pass it.
 */
export function metaBlocks(c: FsCore): number {
  return Math.max(metaBudget(c), c.storeBlocks + checkpointNeed(c) + 2 * stateNeed(c))
}

/** Free blocks of volume v that data writes must leave alone. */
export function metaReserve(c: FsCore, v: number): number {
  return v === 0 ? Math.max(0, metaBlocks(c) - c.storeBlocks - c.stateHeld - c.stateTaken) : 0
}

/**
 * n's map over `ranges` as the journal has it: extents of allocating writes still in
 * flight left out (their data is not written; their `ex` op marks them dirty later),
 * what a copy-on-write replaced put back.
 */
function durableView(n: Inode, ranges: [number, number][]): Extent[] {
  const m = new ExtentMap()
  for (const [b0, b1] of ranges) for (const s of n.ext.segments(b0, b1)) if (s.pb >= 0) m.insert(s.fb, s.vol, s.pb, s.len)
  for (const p of n.pending) for (const a of p.allocs) m.punch(a.fb, a.fb + a.len)
  for (const p of n.pending) for (const r of p.replaced) for (const [b0, b1] of ranges) {
    const s = Math.max(b0, r.fb), e = Math.min(b1, r.fb + r.len)
    if (s < e) m.insert(s, r.vol, r.pb + (s - r.fb), e - s)
  }
  return m.toArray()
}

function edit(n: Inode, dirty: [number, number][]): Edit {
  const ranges = mergeRanges(dirty)
  return { ranges, ext: durableView(n, ranges) }
}

/**
 * The changes since the last checkpoint, taken synchronously with the checkpoint's
 * inode images. A map that became a copy of a live map that is not itself a copy
 * forks that map's tree at the point of the copy (sharing everything the source had
 * changed by then) and takes only the ranges changed since, by either, from its own
 * map; any other copy clones the committed tree and takes every range.
 */
export function captureTrees(c: FsCore): TreeWork {
  const w: TreeWork = { clones: [], drops: [], maps: [] }
  for (const n of c.treeDrops) if (n.root) w.drops.push(n.root)
  c.treeDrops = []
  const forks = new Map<Inode, Inode[]>()
  const forked = new Map<Inode, Edit>()
  // the live maps with changes (a deleted one's tree is in treeDrops)
  const changed = [...c.treeChanged].filter((n) => c.inodes.get(n.ino) === n)
  c.treeChanged = new Set()
  for (const n of changed) {
    if (!n.rebase) continue
    const src = n.rebase
    if (n.rebaseAt >= 0 && !src.rebase && c.inodes.get(src.ino) === src) {
      const list = forks.get(src) ?? []
      list.push(n)
      forks.set(src, list)
      forked.set(n, edit(n, [...src.dirty.slice(n.rebaseAt), ...n.dirty.slice(n.rebaseAt)]))
    } else w.clones.push([n, src.root])
    if (n.root) w.drops.push(n.root)
  }
  for (const [src, list] of forks) {
    list.sort((a, b) => a.rebaseAt - b.rebaseAt)
    const steps: TreeWork['maps'][0]['steps'] = []
    let from = 0
    for (const f of list) {
      const last = steps[steps.length - 1]
      if (last && f.rebaseAt === from) { last.forks.push(f); continue }
      steps.push({ edit: edit(src, src.dirty.slice(from, f.rebaseAt)), forks: [f] })
      from = f.rebaseAt
    }
    steps.push({ edit: edit(src, src.dirty.slice(from)), forks: [] })
    w.maps.push({ n: src, steps })
  }
  for (const n of changed) {
    const e = forked.get(n)
    if (e) w.maps.push({ n, steps: [{ edit: e, forks: [] }] })
    else if (n.dirty.length && !forks.has(n)) w.maps.push({ n, steps: [{ edit: edit(n, n.dirty), forks: [] }] })
  }
  for (const n of changed) { n.rebase = null; n.rebaseAt = -1; n.dirty = [] }
  c.treeWorkInFlight = c.treeWork
  c.treeWork = 0
  return w
}

/**
 * Apply captured changes and commit the store: the committed trees copies start from
 * are cloned first (one may be dropped or changed in the same step), then the drops,
 * then each map's steps, its forks cloned after theirs. Returns the new root of every
 * map that changed.
 */
export async function applyTrees(c: FsCore, w: TreeWork): Promise<Map<Inode, number>> {
  const s = c.store!
  const roots = new Map<Inode, number>()
  for (const [n, from] of w.clones) roots.set(n, await clone(s, EXTENTS, from))
  for (const r of w.drops) await drop(s, EXTENTS, r)
  for (const m of w.maps) {
    const t = new ExtentTree(s, EXTENTS, roots.get(m.n) ?? m.n.root)
    for (const { edit: e, forks } of m.steps) {
      for (const [b0, b1] of e.ranges) await t.punch(b0, b1)
      for (const x of e.ext) await t.insert(x.fb, x.vol, x.pb, x.len)
      for (const f of forks) roots.set(f, await clone(s, EXTENTS, t.root))
    }
    roots.set(m.n, t.root)
  }
  await s.commit({})
  return roots
}

/** The checkpoint naming the store's commit is durable: the maps take their new roots, the blocks freed come back. */
export function treesDurable(c: FsCore, roots: Map<Inode, number>): void {
  for (const [n, r] of roots) n.root = r
  c.treeWorkInFlight = 0
  const freed = c.metaFreed
  c.metaFreed = []
  for (const b of freed) c.free[0].release(b, 1)
  c.storeBlocks -= freed.length
}

/** Open the store at commit `seq`; returns the blocks that state uses. */
export async function openStore(c: FsCore, seq?: number): Promise<number[]> {
  if (!c.sb.store) throw err('EIO', 'the superblock names no metadata store')
  const { store, used } = await BtStore.open(c.vols[0], { sb: c.sb.store, cacheNodes: CACHE_NODES }, seq)
  c.store = store
  return used
}

/** The store takes its nodes from volume 0's free map, from now on. */
export function startStore(c: FsCore): void {
  c.store!.start({
    alloc: () => {
      const b = c.free[0].allocLast()
      if (b !== null) c.storeBlocks++
      return b
    },
    available: () => c.free[0].free,
    release: (b) => { c.metaFreed.push(b) },
  })
}

/** Every map read from its tree (mount); maps whose trees share nodes share their chunks. */
export async function loadMaps(c: FsCore): Promise<void> {
  const memo = new Map<number, Extent[][]>()
  for (const n of c.inodes.values()) {
    if (!n.root) continue
    n.ext = ExtentMap.ofChunks(await new ExtentTree(c.store!, EXTENTS, n.root).chunks(memo), c.copied)
  }
}

function coalesced(ex: Iterable<Extent>): string {
  const m = new ExtentMap()
  for (const e of ex) m.insert(e.fb, e.vol, e.pb, e.len)
  return JSON.stringify(m.flat())
}

/**
 * The trees' part of fsck (under the tree lock, no checkpoint in flight): the store's
 * nodes and counts against the roots the maps hold, and each map unchanged since the
 * checkpoint equal to its tree. Returns the blocks the store uses (not free, held by no extent).
 */
export async function checkMaps(c: FsCore, errors: string[]): Promise<{ start: number; len: number }[]> {
  if (!c.store) return []
  const holders = [...c.inodes.values(), ...c.treeDrops].filter((n) => n.root)
  const r = await checkTrees(c.store, holders.map((n) => ({ tree: EXTENTS, root: n.root })))
  for (const e of r.errors) errors.push(`extent trees: ${e}`)
  for (const n of c.inodes.values()) {
    if (n.rebase || n.dirty.length || n.pending.length) continue
    const tree = n.root ? await new ExtentTree(c.store, EXTENTS, n.root).all() : []
    // the map may have changed while the tree was read
    if (n.rebase || n.dirty.length || n.pending.length || !c.inodes.has(n.ino)) continue
    if (coalesced(tree) !== coalesced(n.ext)) errors.push(`inode ${n.ino}: its extent tree (root ${n.root}) differs from its map`)
  }
  return [...r.used, ...c.sb.store!].map((b) => ({ start: b, len: 1 }))
}
