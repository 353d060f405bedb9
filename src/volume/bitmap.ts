// The per-device write-intent bitmap kept in the reserved area (label.ts has the
// offsets). One bit per region of the device's data area; a set bit means "copies
// of this region may differ". Device coordinates (not volume coordinates) because
// several mirrors can share a device; each region bit is reference-counted in memory
// by the volumes holding it, and bits found set at load ("pending") stay set until
// the owning mirror has resynced them, even across clean closes of other volumes.
// Held whole in memory: a bit per region and at most 8M regions (regions grow with the
// device), so a few KiB for a small device and under 1 MiB for any.
import { crc32 } from '../native/sums'
import { BlockDev, writeDurable } from '../block/blockdev'
import { MiB, BITMAP_OFFSET, BITMAP_BITS_OFFSET, BITMAP_BITS_BYTES } from './label'

const MAGIC = Buffer.from('VSMBMAP1')
const SECTOR = 4096
const TARGET_REGIONS = 256
const MAX_REGION = 64 * MiB

export class DeviceBitmap {
  /** In-memory image of the on-disk bits. */
  private readonly bits: Buffer
  /** Bits that were set when loaded: dirty from an earlier run, not yet resynced. */
  private readonly pending: Buffer
  private readonly holds = new Map<number, number>()
  private readonly dirtySectors = new Set<number>()
  private writing: Promise<void> | null = null
  private queued: Promise<void> | null = null
  private queuedFlush = false
  /** Sectors written without a flush since their last durable write. */
  private readonly unflushed = new Set<number>()
  readonly regions: number

  private constructor(private readonly io: BlockDev, readonly regionSize: number, dataSize: number, bits: Buffer) {
    this.regions = Math.ceil(dataSize / regionSize)
    this.bits = bits
    this.pending = Buffer.from(bits)
  }

  /**
   * Region size for a new bitmap: a power of two of at least 1 MiB, growing with the
   * device up to 256 regions and 64 MiB (md's default bitmap chunk: 256 regions on a
   * 16 GiB member), then as large as the bitmap needs. The first write into a clean
   * region waits for a durable bitmap write, so a sequential stream pays one per
   * region; a crash resyncs whole dirty regions, and a small device keeps small ones.
   */
  static regionSizeFor(dataSize: number): number {
    let rs = MiB
    while (rs < MAX_REGION && rs * TARGET_REGIONS < dataSize) rs *= 2
    while (!DeviceBitmap.fits(rs, dataSize)) rs *= 2
    return rs
  }

  private static fits(rs: number, dataSize: number): boolean {
    return Math.ceil(dataSize / rs) <= BITMAP_BITS_BYTES * 8
  }

  private static header(regionSize: number, regions: number): Buffer {
    const h = Buffer.alloc(SECTOR)
    MAGIC.copy(h, 0)
    h.writeUInt32LE(1, 8)
    h.writeBigUInt64LE(BigInt(regionSize), 16)
    h.writeBigUInt64LE(BigInt(regions), 24)
    h.writeUInt32LE(crc32(h.subarray(0, 32)), 32)
    return h
  }

  /** Bytes of whole sectors that hold a bit for each region of a data area. */
  private static bitsBytes(rs: number, dataSize: number): number {
    return Math.ceil(Math.ceil(dataSize / rs) / 8 / SECTOR) * SECTOR
  }

  /** Fresh device: header plus an all-clean bitmap. */
  static async init(io: BlockDev, dataSize: number): Promise<DeviceBitmap> {
    const rs = DeviceBitmap.regionSizeFor(dataSize)
    const bits = Buffer.alloc(DeviceBitmap.bitsBytes(rs, dataSize))
    await io.write(DeviceBitmap.header(rs, Math.ceil(dataSize / rs)), BITMAP_OFFSET)
    await io.write(bits, BITMAP_BITS_OFFSET)
    await io.flush()
    return new DeviceBitmap(io, rs, dataSize, bits)
  }

  static async load(io: BlockDev, dataSize: number): Promise<DeviceBitmap> {
    const h = Buffer.alloc(SECTOR)
    await io.read(h, BITMAP_OFFSET)
    const valid = h.subarray(0, 8).equals(MAGIC) && crc32(h.subarray(0, 32)) === h.readUInt32LE(32)
    // the region size it was made with, even if regionSizeFor would choose another now
    const rs = Number(h.readBigUInt64LE(16))
    if (!valid || rs < SECTOR || (rs & (rs - 1)) !== 0 || !DeviceBitmap.fits(rs, dataSize)) {
      // unknown dirty state: assume everything may differ (a full resync is safe, a skipped one is not)
      const bmp = await DeviceBitmap.init(io, dataSize)
      bmp.pending.fill(0xff)
      bmp.bits.fill(0xff)
      return bmp
    }
    const bits = Buffer.alloc(DeviceBitmap.bitsBytes(rs, dataSize))
    await io.read(bits, BITMAP_BITS_OFFSET)
    return new DeviceBitmap(io, rs, dataSize, bits)
  }

  private setBit(g: number, on: boolean): boolean {
    const byte = g >>> 3, mask = 1 << (g & 7)
    const was = (this.bits[byte] & mask) !== 0
    if (was === on) return false
    this.bits[byte] = on ? this.bits[byte] | mask : this.bits[byte] & ~mask
    this.dirtySectors.add(Math.floor(byte / SECTOR))
    return true
  }

  private isPending(g: number): boolean {
    return (this.pending[g >>> 3] & (1 << (g & 7))) !== 0
  }

  /** Take a reference on every region overlapping [off, off+len) of the data area; true if a bit changed (persist needed). */
  hold(off: number, len: number): boolean {
    let changed = false
    const last = Math.floor((off + len - 1) / this.regionSize)
    for (let g = Math.floor(off / this.regionSize); g <= last; g++) {
      this.holds.set(g, (this.holds.get(g) ?? 0) + 1)
      if (this.setBit(g, true)) changed = true
    }
    return changed
  }

  /** Drop references; a region's bit clears when nobody holds it and it has nothing pending. */
  release(off: number, len: number): boolean {
    let changed = false
    const last = Math.floor((off + len - 1) / this.regionSize)
    for (let g = Math.floor(off / this.regionSize); g <= last; g++) {
      const c = (this.holds.get(g) ?? 1) - 1
      if (c > 0) { this.holds.set(g, c); continue }
      this.holds.delete(g)
      if (!this.isPending(g) && this.setBit(g, false)) changed = true
    }
    return changed
  }

  /** Data-area byte ranges of pending (dirty-at-load) regions overlapping [off, off+len). */
  pendingRanges(off: number, len: number): [number, number][] {
    return this.ranges(this.pending, off, len)
  }

  /** Data-area byte ranges of every set region (pending or held now) overlapping [off, off+len). */
  setRanges(off: number, len: number): [number, number][] {
    return this.ranges(this.bits, off, len)
  }

  private ranges(map: Buffer, off: number, len: number): [number, number][] {
    const out: [number, number][] = []
    const rs = this.regionSize
    const last = Math.min(Math.floor((off + len - 1) / rs), this.regions - 1)
    for (let g = Math.floor(off / rs); g <= last; g++) {
      if ((map[g >>> 3] & (1 << (g & 7))) === 0) continue
      const lo = Math.max(off, g * rs), hi = Math.min(off + len, (g + 1) * rs)
      const prev = out[out.length - 1]
      if (prev && prev[1] === lo) prev[1] = hi; else out.push([lo, hi])
    }
    return out
  }

  /** Forget pending state for [off, off+len) once its owner has resynced it. */
  clearPending(off: number, len: number): void {
    const last = Math.min(Math.floor((off + len - 1) / this.regionSize), this.regions - 1)
    for (let g = Math.floor(off / this.regionSize); g <= last; g++) {
      if (!this.isPending(g)) continue
      this.pending[g >>> 3] &= ~(1 << (g & 7))
      if (!this.holds.has(g)) this.setBit(g, false)
    }
  }

  /** Number of set bits in memory (tests, status). */
  dirtyCount(): number {
    let n = 0
    for (let i = 0; i < this.bits.length; i++) {
      let b = this.bits[i]
      while (b) { n += b & 1; b >>= 1 }
    }
    return n
  }

  /**
   * Write changed bitmap sectors. Writes are serialized per device (two in-flight
   * writes of one sector could land in either order); callers arriving while a write
   * runs share one follow-up write, so a burst of new regions costs two writes, not N.
   */
  persist(flush: boolean): Promise<void> {
    if (!this.writing) {
      this.writing = this.doPersist(flush).finally(() => { this.writing = null })
      return this.writing
    }
    this.queuedFlush ||= flush
    if (!this.queued) {
      this.queued = this.writing.catch(() => {}).then(() => {
        const f = this.queuedFlush
        this.queued = null
        this.queuedFlush = false
        return this.persist(f)
      })
    }
    return this.queued
  }

  private async doPersist(flush: boolean): Promise<void> {
    // a durable persist also rewrites sectors written earlier without a flush
    const todo = flush ? new Set([...this.dirtySectors, ...this.unflushed]) : this.dirtySectors
    if (todo.size === 0) return
    const sectors = [...todo].sort((a, b) => a - b)
    this.dirtySectors.clear()
    if (flush) this.unflushed.clear()
    try {
      for (const s of sectors) {
        // copy: the in-memory bits keep changing while the write is in the kernel
        const copy = Buffer.from(this.bits.subarray(s * SECTOR, (s + 1) * SECTOR))
        // durable by itself (O_DSYNC on a Device): a flush of the whole device would also
        // wait for every data write still in the page cache, tens of ms behind a burst
        if (flush) await writeDurable(this.io, copy, BITMAP_BITS_OFFSET + s * SECTOR)
        else {
          await this.io.write(copy, BITMAP_BITS_OFFSET + s * SECTOR)
          this.unflushed.add(s)
        }
      }
    } catch (e) {
      for (const s of sectors) this.dirtySectors.add(s)
      throw e
    }
  }
}
