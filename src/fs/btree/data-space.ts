// Reference counts of one volume's data blocks on a B+tree (the data space map the
// fs's counts and free space move into): key = first block of a run, value = {length
// u32, count u32}; a block in no run is free. It is the extent trees' ValueRefs: every
// extent a leaf starts or stops holding adjusts its run, so a block's count is the
// number of leaves (not trees: a shared leaf counts once) that hold it, and a block
// whose count reaches 0 is free again once the commit is durable.
import { VsmError } from '../../block/blockdev'
import type { BtStore } from './store'
import { Tree, ValueRefs, floor, insert, range, remove } from './tree'
import { decodeExtent } from './extent-tree'

export const DATA_SPACE_TREE: Tree = { vsize: 8, shared: true }

export interface CountRun { start: number; len: number; n: number }

function encodeRun(len: number, n: number): Buffer {
  const v = Buffer.alloc(8)
  v.writeUInt32LE(len, 0)
  v.writeUInt32LE(n, 4)
  return v
}

export class DataSpace {
  constructor(private readonly s: BtStore, public root: number) {}

  private async runsIn(b0: number, b1: number): Promise<CountRun[]> {
    const out: CountRun[] = []
    if (b1 <= b0) return out
    const f = await floor(this.s, DATA_SPACE_TREE, this.root, b0)
    if (f && f[0] < b0 && f[0] + f[1].readUInt32LE(0) > b0) out.push({ start: f[0], len: f[1].readUInt32LE(0), n: f[1].readUInt32LE(4) })
    for (const [k, v] of await range(this.s, DATA_SPACE_TREE, this.root, b0, b1)) out.push({ start: k, len: v.readUInt32LE(0), n: v.readUInt32LE(4) })
    return out
  }

  /** Counts over [start, start+len), in order; n = 0 for free pieces. */
  async pieces(start: number, len: number): Promise<CountRun[]> {
    const out: CountRun[] = []
    const end = start + len
    let b = start
    for (const r of await this.runsIn(start, end)) {
      if (r.start > b) out.push({ start: b, len: r.start - b, n: 0 })
      const s = Math.max(b, r.start), e = Math.min(r.start + r.len, end)
      out.push({ start: s, len: e - s, n: r.n })
      b = e
    }
    if (b < end) out.push({ start: b, len: end - b, n: 0 })
    return out
  }

  /**
   * Add delta to the count of every block of [start, start+len): +1 takes free blocks
   * (count 1) too, -1 needs every block held. Returns the runs whose count reached 0.
   */
  async adjust(start: number, len: number, delta: 1 | -1): Promise<{ start: number; len: number }[]> {
    const freed: { start: number; len: number }[] = []
    const end = start + len
    const runs = await this.runsIn(start, end)
    if (delta < 0) {
      let b = start
      for (const r of runs) { if (r.start > b) break; b = r.start + r.len }
      if (b < end) throw new VsmError('EIO', `data space: releasing free block ${Math.max(b, start)}`)
    }
    const put = async (s: number, l: number, n: number) => {
      if (l <= 0) return
      if (n === 0) { freed.push({ start: s, len: l }); return }
      this.root = await insert(this.s, DATA_SPACE_TREE, this.root, s, encodeRun(l, n))
    }
    let b = start
    for (const r of runs) {
      const re = r.start + r.len
      if (r.start > b) await put(b, r.start - b, 1) // a gap: free blocks taken (delta is +1 here)
      this.root = await remove(this.s, DATA_SPACE_TREE, this.root, r.start)
      await put(r.start, Math.max(0, start - r.start), r.n)
      const s = Math.max(r.start, start), e = Math.min(re, end)
      await put(s, e - s, r.n + delta)
      await put(end, re - end, r.n)
      b = e
    }
    if (b < end) await put(b, end - b, 1)
    return freed
  }

  /** The ValueRefs of extent trees whose values are runs of this volume (`freed` hears of blocks reaching 0). */
  refs(freed: (r: { start: number; len: number }) => void = () => undefined): ValueRefs {
    return {
      inc: async (v) => { const e = decodeExtent(0, v); await this.adjust(e.pb, e.len, 1) },
      dec: async (v) => { const e = decodeExtent(0, v); for (const f of await this.adjust(e.pb, e.len, -1)) freed(f) },
    }
  }
}
