// The metadata store under the copy-on-write B+trees (after dm-thin's persistent-data):
// nodes in 4 KiB blocks read through a bounded cache, reference counts per node, the
// blocks to allocate coming from the owner's space (the fs's data space), and the
// transaction commit: new nodes are written, flushed, then a superblock naming the new
// roots (two alternating slots, crc, seq: mount takes the newest valid one), flushed.
// The committed state is never overwritten: a node of it is changed by copying it
// (shadow) and the blocks it frees become allocatable only after the next commit.
//
// Reference counts: a node's count is the number of parents and roots that point at
// it; cloning a tree is one increment of its root (O(1)), and the first change below a
// shared node copies it and increments its children. The counts live in the space
// tree (block -> count), itself a B+tree in the same store whose nodes are never shared
// (so changing it needs no counts: no recursion); a commit folds the transaction's
// count changes into it.
import { crc32 } from '../../native/sums'
import { BlockDev, VsmError } from '../../block/blockdev'
import { NODE_SIZE, Node, decode, encode, scan } from './node'
import { Tree, insert, lookup, remove, walk } from './tree'

/** Where metadata blocks come from: the owner's free space (one block at a time). */
export interface MetaAllocator {
  /** A free block, or null when there is none. */
  alloc(): number | null
  /** Free blocks left. */
  available(): number
  /** A block no committed state references any more. */
  release(block: number): void
}

export interface StoreOptions {
  /** The two superblock slots (block numbers), fixed by the owner. */
  sb: [number, number]
  /** Nodes the cache holds at most (dirty ones are written out when evicted). */
  cacheNodes: number
}

const SB_MAGIC = 0x31535442
/**
 * Blocks a change needs at most, with what its commit needs on top: a path copied and
 * split at every level (trees stay far below 16 levels), the space tree's share per
 * changed count. An insert wants more than a remove, so that when the space runs out
 * inserts fail first (ENOSPC, nothing changed) while removes and commits still work.
 */
const HEADROOM = { insert: 128, remove: 64 }
const COUNT = 4
/** The space tree: block -> reference count (u32); its own nodes are never shared. */
export const SPACE_TREE: Tree = { vsize: COUNT, shared: false }

function err(code: string, msg: string) { return new VsmError(code, msg) }

export class BtStore {
  private cache = new Map<number, Node>()
  /** Blocks allocated in this transaction: not in the committed state, changed in place. */
  private fresh = new Set<number>()
  /** Fresh blocks whose cached content is not on the device yet. */
  private dirty = new Set<number>()
  /** Reference counts changed in this transaction (0: freed). */
  private delta = new Map<number, number>()
  /** Freed in this transaction: allocatable once the commit is durable. */
  private released: number[] = []
  private spaceRoot = 0
  private seq = 0
  private broken: Error | null = null
  readonly stats = { nodesRead: 0, nodesWritten: 0, commits: 0, maxCached: 0 }

  private constructor(private readonly dev: BlockDev, private readonly opts: StoreOptions, private alloc: MetaAllocator) {
    if (!Number.isSafeInteger(opts.cacheNodes) || opts.cacheNodes < 8) throw err('EINVAL', 'cacheNodes: at least 8 nodes')
  }

  /**
   * An empty store: commit 1 in slot 1 (no roots), slot 0 invalidated. Commit n goes to
   * slot n % 2, so commit 2 does not overwrite commit 1 (an owner may go back to it).
   */
  static async format(dev: BlockDev, sb: [number, number]): Promise<void> {
    await dev.write(Buffer.alloc(NODE_SIZE), sb[0] * NODE_SIZE)
    await dev.write(encodeSuper(1, 0, {}), sb[1] * NODE_SIZE)
    await dev.flush()
  }

  /**
   * Open the newest committed state, or the one of commit `seq` (an owner whose own
   * record of the commit did not become durable goes back to the one before: the
   * owner then keeps the blocks that commit freed until its record is durable).
   * Returns its roots and every block it uses (the
   * nodes with a count, and the space tree's own), from which the owner builds the
   * allocator it then passes to start().
   */
  static async open(dev: BlockDev, opts: StoreOptions, seq?: number): Promise<{ store: BtStore; roots: Record<string, number>; used: number[] }> {
    let best: { seq: number; space: number; roots: Record<string, number> } | null = null
    for (const b of opts.sb) {
      const buf = Buffer.alloc(NODE_SIZE)
      await dev.read(buf, b * NODE_SIZE)
      const s = decodeSuper(buf)
      if (s && (seq === undefined ? !best || s.seq > best.seq : s.seq === seq)) best = s
    }
    if (!best) throw err('EIO', seq === undefined ? 'no valid btree superblock' : `no valid btree superblock with seq ${seq}`)
    const notStarted = () => { throw err('EIO', 'btree store not started') }
    const store = new BtStore(dev, opts, { alloc: notStarted, available: notStarted, release: notStarted })
    store.seq = best.seq
    store.spaceRoot = best.space
    const used: number[] = []
    await walk(store, SPACE_TREE, store.spaceRoot, (n) => {
      used.push(n.block)
      if (n.leaf) n.keys.forEach((k, i) => { if (n.vals[i].readUInt32LE(0) > 0) used.push(k) })
    })
    used.sort((a, b) => a - b)
    return { store, roots: best.roots, used }
  }

  start(alloc: MetaAllocator): void { this.alloc = alloc }

  private live() {
    if (this.broken) throw err('EIO', `btree store unusable after a failed commit: ${this.broken.message}`)
  }

  // ------------------------------------------------------------ nodes and the cache

  async get(block: number): Promise<Node> {
    this.live()
    const c = this.cache.get(block)
    if (c) { this.cache.delete(block); this.cache.set(block, c); return c }
    const n = decode(await this.read(block), block)
    await this.cachePut(n)
    return n
  }

  private async read(block: number): Promise<Buffer> {
    if (!Number.isSafeInteger(block) || block <= 0) throw err('EIO', `btree: bad node block ${block}`)
    const buf = Buffer.alloc(NODE_SIZE)
    await this.dev.read(buf, block * NODE_SIZE)
    this.stats.nodesRead++
    return buf
  }

  /**
   * Node `block` for a walk that reads each node once (mount reading every map): a
   * leaf's entries to `value` (see scan), an internal node's children returned. Read
   * from the device it is not cached: a walk over every leaf would only push out the
   * nodes commits come back to. A cached node is used as it is (it may be newer).
   */
  async visit(block: number, value: (key: number, b: Buffer, at: number) => void): Promise<number[] | null> {
    this.live()
    const c = this.cache.get(block)
    if (c) {
      if (!c.leaf) return c.kids
      c.keys.forEach((k, i) => value(k, c.vals[i], 0))
      return null
    }
    return scan(await this.read(block), block, value)
  }

  /** Record a changed (fresh) node: it is written at the commit, or earlier if evicted. */
  async touch(n: Node): Promise<void> {
    if (!this.fresh.has(n.block)) throw err('EIO', `btree: node ${n.block} changed without a shadow`)
    this.dirty.add(n.block)
    this.cache.delete(n.block)
    await this.cachePut(n)
  }

  private async cachePut(n: Node): Promise<void> {
    this.cache.set(n.block, n)
    while (this.cache.size > this.opts.cacheNodes) {
      const [b, old] = this.cache.entries().next().value as [number, Node]
      this.cache.delete(b)
      // a fresh block is in no committed state: writing it early is safe
      if (this.dirty.delete(b)) await this.writeNode(old)
    }
    this.stats.maxCached = Math.max(this.stats.maxCached, this.cache.size)
  }

  private async writeNode(n: Node): Promise<void> {
    this.stats.nodesWritten++
    await this.dev.write(encode(n), n.block * NODE_SIZE)
  }

  /** A new node in a fresh block (count 1 when `counted`: a node of a shared tree). */
  async create(leaf: boolean, vsize: number, counted: boolean): Promise<Node> {
    this.live()
    const b = this.alloc.alloc()
    if (b === null) throw err('ENOSPC', 'no space left for btree metadata')
    this.fresh.add(b)
    if (counted) this.delta.set(b, 1)
    const n: Node = { block: b, leaf, vsize, keys: [], vals: [], kids: [] }
    await this.touch(n)
    return n
  }

  /**
   * Refuse a change (ENOSPC, before anything changed) unless the space holds what it
   * and the commit after it can need: the committed state stays reachable and the
   * transaction can always be committed.
   */
  reserve(kind: keyof typeof HEADROOM): void {
    this.live()
    if (this.alloc.available() < HEADROOM[kind] + 2 * this.delta.size) throw err('ENOSPC', 'no space left for btree metadata')
  }

  /** The node may be changed in place: it was made in this transaction. */
  isFresh(block: number): boolean { return this.fresh.has(block) }

  /** Drop a node's block (its count reached 0, or an unshared node was copied). */
  free(block: number): void {
    this.cache.delete(block)
    this.dirty.delete(block)
    this.released.push(block)
  }

  // ------------------------------------------------------------ reference counts

  async refs(block: number): Promise<number> {
    const d = this.delta.get(block)
    if (d !== undefined) return d
    const v = await lookup(this, SPACE_TREE, this.spaceRoot, block)
    return v ? v.readUInt32LE(0) : 0
  }

  async setRefs(block: number, n: number): Promise<void> {
    if (n < 0) throw err('EIO', `btree: reference count of ${block} below 0`)
    this.delta.set(block, n)
  }

  // ------------------------------------------------------------ commit

  /**
   * Make the transaction durable with these roots: fold the count changes into the
   * space tree, write every changed node, flush, write the superblock, flush. Blocks
   * freed in the transaction become allocatable after that. A failure leaves the
   * committed state on the device as it was; this store is then unusable (reopen).
   */
  async commit(roots: Record<string, number>): Promise<void> {
    this.live()
    try {
      const changes = [...this.delta].sort((a, b) => a[0] - b[0])
      this.delta.clear()
      let space = this.spaceRoot
      for (const [b, n] of changes) {
        if (n === 0) space = await remove(this, SPACE_TREE, space, b)
        else {
          const v = Buffer.alloc(COUNT)
          v.writeUInt32LE(n, 0)
          space = await insert(this, SPACE_TREE, space, b, v)
        }
      }
      for (const b of this.dirty) await this.writeNode(this.cache.get(b)!)
      await this.dev.flush()
      const seq = this.seq + 1
      await this.dev.write(encodeSuper(seq, space, roots), this.opts.sb[seq % 2] * NODE_SIZE)
      await this.dev.flush()
      this.seq = seq
      this.spaceRoot = space
      this.dirty.clear()
      this.fresh.clear()
      this.stats.commits++
    } catch (e) {
      this.broken = e as Error
      throw e
    }
    const rel = this.released
    this.released = []
    for (const b of rel) this.alloc.release(b)
  }

  /** The seq of the last commit. */
  get committedSeq(): number { return this.seq }

  /** Nodes made since the last commit (what the next commit writes, before the space tree's share). */
  get pendingNodes(): number { return this.fresh.size }

  get cachedNodes(): number { return this.cache.size }

  /** Every count the space tree holds (check: compared with what the roots imply). */
  async allCounts(): Promise<Map<number, number>> {
    const out = new Map<number, number>()
    await walk(this, SPACE_TREE, this.spaceRoot, (n) => {
      if (n.leaf) n.keys.forEach((k, i) => out.set(k, n.vals[i].readUInt32LE(0)))
    })
    for (const [b, n] of this.delta) out.set(b, n)
    for (const [b, n] of out) if (n === 0) out.delete(b)
    return out
  }

  /** The space tree's own nodes (in use, uncounted). */
  async spaceNodes(): Promise<number[]> {
    const out: number[] = []
    await walk(this, SPACE_TREE, this.spaceRoot, (n) => { out.push(n.block) })
    return out
  }
}

function encodeSuper(seq: number, space: number, roots: Record<string, number>): Buffer {
  const b = Buffer.alloc(NODE_SIZE)
  const j = Buffer.from(JSON.stringify(roots))
  if (j.length > NODE_SIZE - 32) throw err('EINVAL', 'btree superblock: too many roots')
  b.writeUInt32LE(SB_MAGIC, 0)
  b.writeUInt32LE(Math.floor(seq / 2 ** 32), 8); b.writeUInt32LE(seq >>> 0, 12)
  b.writeUInt32LE(Math.floor(space / 2 ** 32), 16); b.writeUInt32LE(space >>> 0, 20)
  b.writeUInt32LE(j.length, 24)
  j.copy(b, 32)
  b.writeUInt32LE(crc32(b.subarray(8)), 4)
  return b
}

function decodeSuper(b: Buffer): { seq: number; space: number; roots: Record<string, number> } | null {
  if (b.readUInt32LE(0) !== SB_MAGIC || b.readUInt32LE(4) !== crc32(b.subarray(8))) return null
  const len = b.readUInt32LE(24)
  if (len > NODE_SIZE - 32) return null
  try {
    return {
      seq: b.readUInt32LE(8) * 2 ** 32 + b.readUInt32LE(12),
      space: b.readUInt32LE(16) * 2 ** 32 + b.readUInt32LE(20),
      roots: JSON.parse(b.subarray(32, 32 + len).toString()),
    }
  } catch { return null }
}
