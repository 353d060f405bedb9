// Block checksums kept apart from the data they cover (as ZFS and dm-integrity do):
// one crc32 per 4 KiB block of a member, in a table at the end of the member's
// extent, read and written through the bounded page cache (pagecache.ts), so memory
// does not grow with the member. Changed table pages are written no later than the
// next flush, which makes them durable with the data they describe; until then a
// crash can leave a sum behind its data, so owners only defer them where a
// write-intent log or journal re-derives the sums of everything written since
// (mirror resync, raid5 replay). 0 means "never written" and is not verified.
import { crc32 } from 'zlib'
import { BlockDev } from '../block/blockdev'
import { GroupFlush } from './sync'
import { PAGE_BYTES, PageCache, PagedArea, tableCache } from './pagecache'

export const SUM_BLOCK = 4096
const PER_PAGE = PAGE_BYTES / 4

/** Bytes of table for a data area of n bytes. */
export function tableBytes(n: number): number {
  return Math.ceil(Math.ceil(n / SUM_BLOCK) / PER_PAGE) * PAGE_BYTES
}

/** Checksum of one block; never 0, which marks a block never written. */
export function blockSum(b: Buffer): number {
  return crc32(b) || 1
}

/** Sums of the successive SUM_BLOCK blocks of data. */
export function blockSums(data: Buffer): Uint32Array {
  const out = new Uint32Array(Math.ceil(data.length / SUM_BLOCK))
  for (let k = 0; k < out.length; k++) out[k] = blockSum(data.subarray(k * SUM_BLOCK, (k + 1) * SUM_BLOCK))
  return out
}

/** A page's sums, in the byte order they are stored in. */
function words(buf: Buffer): Uint32Array {
  return new Uint32Array(buf.buffer, buf.byteOffset, PER_PAGE)
}

function sameWords(buf: Buffer, slot: number, part: Uint32Array): boolean {
  const w = words(buf)
  for (let k = 0; k < part.length; k++) if (w[slot + k] !== part[k]) return false
  return true
}

export interface TableOptions {
  /** The cache the table's pages go through (default: the process's table cache). */
  cache?: PageCache
}

export class ChecksumTable {
  private readonly sync = new GroupFlush(() => this.area.flush())

  private constructor(private readonly area: PagedArea) {}

  /** The table on io (nothing is read until a sum is needed). */
  static async load(io: BlockDev, dataBytes: number, opts: TableOptions = {}): Promise<ChecksumTable> {
    return new ChecksumTable(new PagedArea(opts.cache ?? tableCache, io, tableBytes(dataBytes) / PAGE_BYTES))
  }

  async get(block: number): Promise<number> {
    return (await this.getMany(block, 1))[0]
  }

  /** The sums of n blocks from block first. */
  async getMany(first: number, n: number): Promise<Uint32Array> {
    const out = new Uint32Array(n)
    for (let k = 0; k < n;) {
      const b = first + k, slot = b % PER_PAGE
      const take = Math.min(n - k, PER_PAGE - slot)
      const buf = await this.area.read(Math.floor(b / PER_PAGE))
      out.set(words(buf).subarray(slot, slot + take), k)
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
    for (let k = 0; k < sums.length;) {
      const b = first + k, slot = b % PER_PAGE
      const part = sums.subarray(k, k + Math.min(sums.length - k, PER_PAGE - slot))
      k += part.length
      const pi = Math.floor(b / PER_PAGE), cur = this.area.peek(pi)
      // unchanged sums (a resync of equal copies) write nothing
      if (cur && sameWords(cur, slot, part)) continue
      this.area.edit(pi, (buf) => { words(buf).set(part, slot) })
    }
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
