// Block checksums kept apart from the data they cover (as ZFS and dm-integrity do):
// one crc32 per 4 KiB block of a member, in a table at the end of the member's
// extent. The whole table lives in memory (4 bytes per 4 KiB: 1 MiB per GiB). Changed
// table sectors are written no later than the next flush, which makes them durable
// with the data they describe; until then a crash can leave a sum behind its data, so
// owners only defer them where a write-intent log or journal re-derives the sums of
// everything written since (mirror resync, raid5 replay). 0 means "never written" and
// is not verified.
import { crc32 } from 'zlib'
import { BlockDev } from '../block/blockdev'
import { GroupFlush } from './sync'

export const SUM_BLOCK = 4096
const SECTOR = 4096
const PER_SECTOR = SECTOR / 4

/** Bytes of table for a data area of n bytes. */
export function tableBytes(n: number): number {
  return Math.ceil(Math.ceil(n / SUM_BLOCK) / PER_SECTOR) * SECTOR
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

export class ChecksumTable {
  private readonly dirty = new Set<number>()
  private readonly sync = new GroupFlush(() => this.writeDirty())

  private constructor(private readonly io: BlockDev, private readonly sums: Uint32Array) {}

  static async load(io: BlockDev, dataBytes: number): Promise<ChecksumTable> {
    const raw = Buffer.alloc(tableBytes(dataBytes))
    await io.read(raw, 0)
    // same byte order as writeDirty stores
    return new ChecksumTable(io, new Uint32Array(raw.buffer, raw.byteOffset, raw.length / 4))
  }

  get(block: number): number { return this.sums[block] }

  set(block: number, sum: number): void {
    if (this.sums[block] === sum) return
    this.sums[block] = sum
    this.dirty.add(Math.floor(block / PER_SECTOR))
  }

  /** Set the sums of the blocks of data, which starts at block first. */
  setAll(first: number, data: Buffer): void {
    this.setMany(first, blockSums(data))
  }

  /** Set sums (from blockSums) starting at block first: copies of one data share one computation. */
  setMany(first: number, sums: Uint32Array): void {
    for (let k = 0; k < sums.length; k++) this.set(first + k, sums[k])
  }

  /** Resolves once every change made before the call is written (not flushed). */
  persist(): Promise<void> {
    return this.dirty.size ? this.sync.run() : Promise.resolve()
  }

  private async writeDirty(): Promise<void> {
    const sectors = [...this.dirty].sort((a, b) => a - b)
    this.dirty.clear()
    try {
      for (const s of sectors) {
        const b = Buffer.from(this.sums.buffer, this.sums.byteOffset + s * SECTOR, SECTOR)
        // copy: the table keeps changing while the write is in the kernel
        await this.io.write(Buffer.from(b), s * SECTOR)
      }
    } catch (e) {
      for (const s of sectors) this.dirty.add(s)
      throw e
    }
  }
}
