// A file's extent map on a copy-on-write B+tree: key = the file block where an extent
// starts, value = {volume u32 (archive locations are numbered from 2^16), physical
// block u48, length u32}. The same operations as
// the in-memory ExtentMap (segments with holes, lookup, insert into a hole with
// coalescing, punch), so the fs's maps can move onto trees; a snapshot of a map is
// clone() of its root.
//
// Data references: the tree's ValueRefs (the owner's data space map) are told of every
// extent a leaf starts or stops holding. A value replaced in place is released by the
// tree, so a trimmed or merged extent is first given its own reference here; what the
// caller inserts is its reference handed over. A block is shared when another map
// holds it: its count is above 1, or a node on the way to it is shared (a leaf two
// trees hold counts its values once), see shared().
import { VsmError } from '../../block/blockdev'
import { Extent, Segment, joinSorted } from '../extents'
import type { BtStore } from './store'
import { Tree, ValueRefs, floor, insert, pathShared, range, remove } from './tree'

export const EXTENT_VSIZE = 14
const READS_AT_ONCE = 64

export function extentTree(refs?: ValueRefs): Tree {
  return { vsize: EXTENT_VSIZE, shared: true, value: refs }
}

export function encodeExtent(vol: number, pb: number, len: number): Buffer {
  const v = Buffer.alloc(EXTENT_VSIZE)
  v.writeUInt32LE(vol, 0)
  v.writeUIntLE(pb, 4, 6)
  v.writeUInt32LE(len, 10)
  return v
}

/**
 * The extent at file block fb whose value is at `at` in v. The physical block is put
 * together from its two words so that a small one stays a small integer: readUIntLE
 * returns a boxed double, which turns the field of every extent a mount reads into a
 * box of its own (16 more bytes an extent: 80 -> 64 MiB of heap for 1M extents).
 */
export function decodeExtent(fb: number, v: Buffer, at = 0): Extent {
  const lo = v.readUInt32LE(at + 4), hi = v.readUInt16LE(at + 8)
  return { fb, vol: v.readUInt32LE(at), pb: hi ? hi * 0x1_0000_0000 + lo : lo, len: v.readUInt32LE(at + 10) }
}

export class ExtentTree {
  constructor(private readonly s: BtStore, private readonly t: Tree, public root: number) {}

  /** The extent holding file block b, or the last one before it. */
  private async before(b: number): Promise<Extent | null> {
    const f = await floor(this.s, this.t, this.root, b)
    return f ? decodeExtent(f[0], f[1]) : null
  }

  /** Extents overlapping [b0, b1), in order. */
  async extentsIn(b0: number, b1: number): Promise<Extent[]> {
    const out: Extent[] = []
    if (b1 <= b0) return out
    const first = await this.before(b0)
    if (first && first.fb + first.len > b0 && first.fb < b0) out.push(first)
    for (const [k, v] of await range(this.s, this.t, this.root, b0, b1)) out.push(decodeExtent(k, v))
    return out
  }

  /** Cover [b0, b1) with mapped segments and holes (pb < 0), in order. */
  async segments(b0: number, b1: number): Promise<Segment[]> {
    const out: Segment[] = []
    let b = b0
    for (const e of await this.extentsIn(b0, b1)) {
      if (e.fb > b) out.push({ fb: b, len: e.fb - b, vol: -1, pb: -1 })
      const s = Math.max(b, e.fb), end = Math.min(e.fb + e.len, b1)
      out.push({ fb: s, len: end - s, vol: e.vol, pb: e.pb + (s - e.fb) })
      b = end
    }
    if (b < b1) out.push({ fb: b, len: b1 - b, vol: -1, pb: -1 })
    return out
  }

  async lookup(b: number): Promise<{ vol: number; pb: number } | null> {
    const e = await this.before(b)
    return e && b < e.fb + e.len ? { vol: e.vol, pb: e.pb + (b - e.fb) } : null
  }

  /** Every extent, in order. */
  async all(): Promise<Extent[]> {
    return (await range(this.s, this.t, this.root, 0, Infinity)).map(([k, v]) => decodeExtent(k, v))
  }

  /**
   * Every extent in order, one array per leaf (joinSorted within it). `memo` (node block
   * -> its arrays) is shared by the reads of one mount: a leaf or subtree that several
   * trees hold (a file and its snapshots) is read once and its arrays are shared.
   */
  async chunks(memo: Map<number, Extent[][]>, readsAtOnce = READS_AT_ONCE): Promise<Extent[][]> {
    // a bounded number of node reads in flight, each with its buffer, however big the tree
    let reading = 0
    const queue: (() => void)[] = []
    const visit = async (b: number, leaf: Extent[]) => {
      while (reading >= readsAtOnce) await new Promise<void>((r) => queue.push(r))
      reading++
      try { return await this.s.visit(b, (k, v, at) => leaf.push(decodeExtent(k, v, at))) } finally { reading--; queue.shift()?.() }
    }
    const rec = async (b: number): Promise<Extent[][]> => {
      const had = memo.get(b)
      if (had) return had
      const leaf: Extent[] = []
      const kids = await visit(b, leaf)
      let out: Extent[][]
      if (!kids) {
        const a = joinSorted(leaf)
        out = a.length ? [a] : []
      } else {
        // the children read at once, not one round trip each: through a mirrored volume
        // a node read is a few hundred µs, and a mount reads every leaf
        out = []
        for (const part of await Promise.all(kids.map(rec))) for (const a of part) out.push(a)
      }
      memo.set(b, out)
      return out
    }
    return this.root ? rec(this.root) : []
  }

  private async put(e: Extent): Promise<void> {
    this.root = await insert(this.s, this.t, this.root, e.fb, encodeExtent(e.vol, e.pb, e.len))
  }

  /** Map [fb, fb+len), which must be a hole, handing over the caller's reference; joins contiguous neighbours. */
  async insert(fb: number, vol: number, pb: number, len: number): Promise<void> {
    if (len <= 0) return
    const prev = await this.before(fb)
    const next = (await range(this.s, this.t, this.root, fb, fb + len + 1))[0]
    if ((prev && prev.fb + prev.len > fb) || (next && next[0] < fb + len)) {
      throw new VsmError('EIO', `extent overlap inserting file block ${fb}+${len}`)
    }
    const refs = this.t.value
    let cur: Extent = { fb, vol, pb, len }
    if (prev && prev.fb + prev.len === fb && prev.vol === vol && prev.pb + prev.len === pb) {
      // the merged extent holds its own reference; the tree releases prev's, and the
      // caller's reference to the new part is spent
      cur = { fb: prev.fb, vol, pb: prev.pb, len: prev.len + len }
      await refs?.inc(encodeExtent(cur.vol, cur.pb, cur.len))
      await refs?.dec(encodeExtent(vol, pb, len))
    }
    const n = next && decodeExtent(next[0], next[1])
    if (n && n.fb === cur.fb + cur.len && n.vol === vol && n.pb === cur.pb + cur.len) {
      const merged = { fb: cur.fb, vol, pb: cur.pb, len: cur.len + n.len }
      await refs?.inc(encodeExtent(merged.vol, merged.pb, merged.len))
      // cur's reference (the caller's, or the one the prev merge made) is spent too
      await refs?.dec(encodeExtent(cur.vol, cur.pb, cur.len))
      this.root = await remove(this.s, this.t, this.root, n.fb)
      cur = merged
    }
    await this.put(cur)
  }

  /** Unmap [b0, b1); returns the extents taken out (their references released). */
  async punch(b0: number, b1: number): Promise<Extent[]> {
    const out: Extent[] = []
    const refs = this.t.value
    for (const e of await this.extentsIn(b0, b1)) {
      const end = e.fb + e.len
      const s = Math.max(e.fb, b0), t = Math.min(end, b1)
      out.push({ fb: s, vol: e.vol, pb: e.pb + (s - e.fb), len: t - s })
      // the pieces that stay get their own references before the tree releases e's
      const left = s > e.fb ? { fb: e.fb, vol: e.vol, pb: e.pb, len: s - e.fb } : null
      const right = t < end ? { fb: t, vol: e.vol, pb: e.pb + (t - e.fb), len: end - t } : null
      for (const p of [left, right]) if (p) await refs?.inc(encodeExtent(p.vol, p.pb, p.len))
      if (left) await this.put(left)
      else this.root = await remove(this.s, this.t, this.root, e.fb)
      if (right) await this.put(right)
    }
    return out
  }

  /** Whether the tree's path to file block b's extent is shared with another tree. */
  async pathShared(b: number): Promise<boolean> {
    const e = await this.before(b)
    return !!e && b < e.fb + e.len && pathShared(this.s, this.t, this.root, e.fb)
  }
}
