// Block checksums kept apart from the data they cover (as ZFS and dm-integrity do):
// one crc32 per 4 KiB block of a member, in a table at the end of the member's
// extent, read and written through the bounded page cache (pagecache.ts), so memory
// does not grow with the member. Changed table pages are written no later than the
// next flush, which makes them durable with the data they describe; until then a
// crash can leave a sum behind its data, so owners only defer them where a
// write-intent log or journal re-derives the sums of everything written since
// (mirror resync, raid5 replay). 0 means "never written" and is not verified.
//
// Two layouts. Dense (volumes made before tagged tables): 1024 sums a page, zeroed in
// full when the volume was made. Tagged: every page starts with the 8-byte generation
// of the table (from the volume's salt and the member's place), and a page that does
// not carry it was never written by this table: it reads as zeros, so a new table is
// made by writing nothing and its extent stays sparse. In front of the sum pages,
// summary pages hold one bit per sum page, set (and written first) before that page
// is, so finding what was ever written (scrub, rebuild) reads a page per 127 GiB.
import { createHash } from 'crypto'
import { BlockDev } from '../block/blockdev'
import { blockSumsInto, crc32 } from '../native/sums'
import { GroupFlush } from './sync'
import { PAGE_BYTES, PageCache, PagedArea, PageFormat, tableCache } from './pagecache'

export const SUM_BLOCK = 4096
const GEN_BYTES = 8
const DENSE_PER_PAGE = PAGE_BYTES / 4
const TAGGED_PER_PAGE = (PAGE_BYTES - GEN_BYTES) / 4
const SUMMARY_BITS = (PAGE_BYTES - GEN_BYTES) * 8

interface Layout {
  perPage: number
  /** Byte offset of the first sum in a page. */
  head: number
  /** Sum pages, and summary pages in front of them (0 for dense). */
  pages: number
  summaries: number
}

function layout(dataBytes: number, tagged: boolean): Layout {
  const perPage = tagged ? TAGGED_PER_PAGE : DENSE_PER_PAGE
  const pages = Math.ceil(Math.ceil(dataBytes / SUM_BLOCK) / perPage)
  return { perPage, head: tagged ? GEN_BYTES : 0, pages, summaries: tagged ? Math.ceil(pages / SUMMARY_BITS) : 0 }
}

/** Bytes of table for a data area of n bytes. */
export function tableBytes(n: number, tagged = false): number {
  const l = layout(n, tagged)
  return (l.summaries + l.pages) * PAGE_BYTES
}

/** The generation a tagged table's pages carry: from the volume's salt and where the member lies. */
export function tableGeneration(salt: string, device: string, offset: number): Buffer {
  const g = createHash('sha256').update(`${salt}/${device}/${offset}`).digest().subarray(0, GEN_BYTES)
  // all zeros is what a never-written page holds
  if (g.every((x) => x === 0)) g[0] = 1
  return g
}

/** Checksum of one block; never 0, which marks a block never written. */
export function blockSum(b: Buffer): number {
  return crc32(b) || 1
}

/** Sums of the successive SUM_BLOCK blocks of data. */
export function blockSums(data: Buffer): Uint32Array {
  const out = new Uint32Array(Math.ceil(data.length / SUM_BLOCK))
  blockSumsInto(data, SUM_BLOCK, out)
  return out
}

/**
 * Block k's sum is known (want[k] not 0: never written) and is not got[k], its data's:
 * verifying a read against sums made by one blockSums() call (a call per block cost
 * ~1 ms of main thread a 4 MiB chunk).
 */
export function differs(want: Uint32Array, got: Uint32Array, k: number): boolean {
  return want[k] !== 0 && got[k] !== want[k]
}

function sameWords(w: Uint32Array, slot: number, part: Uint32Array): boolean {
  for (let k = 0; k < part.length; k++) if (w[slot + k] !== part[k]) return false
  return true
}

export interface TableOptions {
  /** The cache the table's pages go through (default: the process's table cache). */
  cache?: PageCache
  /** A tagged table of this generation (tableGeneration); without it, a dense one. */
  generation?: Buffer
}

export class ChecksumTable {
  private readonly sync = new GroupFlush(() => this.area.flush())
  private readonly area: PagedArea

  private constructor(io: BlockDev, private readonly l: Layout, private readonly gen: Buffer | undefined, cache: PageCache) {
    const format: PageFormat = {}
    if (gen) {
      const ours = (buf: Buffer) => buf.subarray(0, GEN_BYTES).equals(gen)
      format.loaded = (_i, buf) => { if (!ours(buf)) buf.fill(0) }
      format.stamp = (_i, buf) => { gen.copy(buf, 0) }
      format.blank = async (i) => i >= l.summaries && !(await this.pageUsed(i - l.summaries, true))
      format.beforeWrite = (i) => i >= l.summaries ? this.area.writeIndex(this.summaryOf(i - l.summaries)[0]) : Promise.resolve()
    }
    this.area = new PagedArea(cache, io, l.summaries + l.pages, format)
  }

  /** The table on io (nothing is read until a sum is needed). */
  static async load(io: BlockDev, dataBytes: number, opts: TableOptions = {}): Promise<ChecksumTable> {
    return new ChecksumTable(io, layout(dataBytes, !!opts.generation), opts.generation, opts.cache ?? tableCache)
  }

  /** Summary page (area index) and bit of sum page p. */
  private summaryOf(p: number): [number, number] {
    return [Math.floor(p / SUMMARY_BITS), p % SUMMARY_BITS]
  }

  private async pageUsed(p: number, roomless = false): Promise<boolean> {
    const [s, bit] = this.summaryOf(p)
    const buf = await this.area.read(s, roomless)
    return (buf[GEN_BYTES + (bit >>> 3)] & (1 << (bit & 7))) !== 0
  }

  /** The sums of sum page p (area index), in the byte order they are stored. */
  private words(buf: Buffer): Uint32Array {
    return new Uint32Array(buf.buffer, buf.byteOffset + this.l.head, this.l.perPage)
  }

  async get(block: number): Promise<number> {
    return (await this.getMany(block, 1))[0]
  }

  /** The sums of n blocks from block first. */
  async getMany(first: number, n: number): Promise<Uint32Array> {
    const out = new Uint32Array(n)
    const per = this.l.perPage
    for (let k = 0; k < n;) {
      const b = first + k, slot = b % per
      const take = Math.min(n - k, per - slot)
      const buf = await this.area.read(this.l.summaries + Math.floor(b / per))
      out.set(this.words(buf).subarray(slot, slot + take), k)
      k += take
    }
    return out
  }

  set(block: number, sum: number): void {
    this.setMany(block, Uint32Array.of(sum))
  }

  /** Set the sums of the blocks of data, which starts at block first. */
  setAll(first: number, data: Buffer): void {
    this.setMany(first, blockSums(data))
  }

  /** Set sums (from blockSums) starting at block first: copies of one data share one computation. */
  setMany(first: number, sums: Uint32Array): void {
    const per = this.l.perPage
    for (let k = 0; k < sums.length;) {
      const b = first + k, slot = b % per
      const part = sums.subarray(k, k + Math.min(sums.length - k, per - slot))
      k += part.length
      const p = Math.floor(b / per), cur = this.area.peek(this.l.summaries + p)
      // unchanged sums (a resync of equal copies) write nothing
      if (cur && sameWords(this.words(cur), slot, part)) continue
      if (this.gen) this.markUsed(p)
      this.area.edit(this.l.summaries + p, (buf) => { this.words(buf).set(part, slot) })
    }
  }

  /** Set the sums of n blocks from first back to "never written" (discarded), writing no page never written. */
  async clear(first: number, n: number): Promise<void> {
    for (const [lo, hi] of await this.usedRanges(first, n)) this.setMany(lo, new Uint32Array(hi - lo))
  }

  /** Set sum page p's summary bit (its write goes out before the page's: beforeWrite). */
  private markUsed(p: number): void {
    const [s, bit] = this.summaryOf(p), byte = GEN_BYTES + (bit >>> 3), mask = 1 << (bit & 7)
    const cur = this.area.peek(s)
    if (cur && (cur[byte] & mask)) return
    this.area.edit(s, (buf) => { buf[byte] |= mask })
  }

  /**
   * Block ranges [lo, hi) within [first, first+n) that may hold sums: for a tagged table,
   * the sum pages its summary marks; a dense table cannot tell, so the whole range.
   */
  async usedRanges(first: number, n: number): Promise<[number, number][]> {
    if (!this.gen) return n > 0 ? [[first, first + n]] : []
    const per = this.l.perPage, out: [number, number][] = []
    const p0 = Math.floor(first / per), p1 = Math.ceil((first + n) / per)
    for (let p = p0; p < p1;) {
      const [s, bit] = this.summaryOf(p)
      const buf = await this.area.read(s)
      // a whole summary page is read at once: scanning it costs a byte per 8 sum pages
      for (let end = Math.min(p1, (s + 1) * SUMMARY_BITS), b = bit; p < end; p++, b++) {
        if ((b & 7) === 0 && buf[GEN_BYTES + (b >>> 3)] === 0 && p + 8 <= end) { p += 7; b += 7; continue }
        if (!(buf[GEN_BYTES + (b >>> 3)] & (1 << (b & 7)))) continue
        const lo = Math.max(first, p * per), hi = Math.min(first + n, (p + 1) * per)
        const prev = out[out.length - 1]
        if (prev && prev[1] === lo) prev[1] = hi; else out.push([lo, hi])
      }
    }
    return out
  }

  /**
   * After setting sums: undefined, or a promise to wait on before the next write, which
   * resolves once dirty pages beyond the cache's capacity have been written back.
   */
  room(): Promise<void> | undefined {
    return this.area.room()
  }

  /** Resolves once every change made before the call is written (not flushed). */
  persist(): Promise<void> {
    return this.area.busy ? this.sync.run() : Promise.resolve()
  }
}
