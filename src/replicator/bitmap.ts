// The overflow bitmap of a replicated group (VVR's DCM, DRBD's out-of-sync bitmap):
// one bit per region of the group's volumes, kept in the area at the end of the log
// volume. A bit set on disk means the region may differ on the secondary. Owns the
// bits in memory, the regions being copied, and writing pages so that a region's bit
// is durable before its writer touches the volume and is cleared on disk only once
// its copy is durable in the log. When to mark, copy or clear is group.ts's.
import { BlockDev } from '../block/blockdev'
import { BLOCK } from './log'

export const MIN_REGION = 64 << 10

/** The smallest power-of-two region (at least 64 KiB) whose bits for all volumes fit in bytes. */
export function regionSizeFor(volumeSizes: number[], bytes: number): number {
  let region = MIN_REGION
  const regions = () => volumeSizes.reduce((n, s) => n + Math.ceil(s / region), 0)
  while (regions() > bytes * 8) region *= 2
  return region
}

export interface Region { vol: number; offset: number; length: number }

export class RegionBitmap {
  private readonly bases: number[] = []
  private readonly total: number
  /** Bits wanted: set by writes, cleared when a copy is taken. */
  private readonly mem: Uint8Array
  /** What the last completed page writes put on disk. */
  private readonly disk: Uint8Array
  /** Regions whose copy is taken but not yet durable in the log: kept set on disk. */
  private readonly copying = new Set<number>()
  private queued: { pages: Set<number>; done: Promise<void>; resolve: () => void; reject: (e: Error) => void } | null = null
  private persisting: Promise<void> = Promise.resolve()
  private dirty = 0

  private constructor(private readonly dev: BlockDev, private readonly offset: number, bytes: number, readonly regionSize: number, private readonly sizes: number[]) {
    let n = 0
    for (const s of sizes) { this.bases.push(n); n += Math.ceil(s / regionSize) }
    this.total = n
    this.mem = new Uint8Array(bytes)
    this.disk = new Uint8Array(bytes)
  }

  /** Reads the area; with live=false (the log is not in bitmap mode) its bits are stale and start cleared in memory. */
  static async open(area: { dev: BlockDev; offset: number; bytes: number }, regionSize: number, volumeSizes: number[], live: boolean): Promise<RegionBitmap> {
    const b = new RegionBitmap(area.dev, area.offset, area.bytes, regionSize, volumeSizes)
    if (b.total > area.bytes * 8) throw new Error(`${b.total} regions do not fit a ${area.bytes}-byte bitmap`)
    const buf = Buffer.alloc(area.bytes)
    await area.dev.read(buf, area.offset)
    b.disk.set(buf)
    if (live) {
      b.mem.set(buf)
      for (let r = 0; r < b.total; r++) if (b.has(r)) b.dirty++
    }
    return b
  }

  get regions(): number { return this.total }
  /** Regions marked and not yet taken for copying. */
  get dirtyRegions(): number { return this.dirty }
  get dirtyBytes(): number { return this.dirty * this.regionSize }

  private has(r: number): boolean { return (this.mem[r >> 3] & (1 << (r & 7))) !== 0 }
  private onDisk(r: number): boolean { return (this.disk[r >> 3] & (1 << (r & 7))) !== 0 }

  private range(vol: number, offset: number, length: number): [number, number] {
    const first = this.bases[vol] + Math.floor(offset / this.regionSize)
    const last = this.bases[vol] + Math.floor((offset + Math.max(length, 1) - 1) / this.regionSize)
    return [first, last]
  }

  /** The volume range of region r. */
  region(r: number): Region {
    let vol = this.bases.length - 1
    while (this.bases[vol] > r) vol--
    const offset = (r - this.bases[vol]) * this.regionSize
    return { vol, offset, length: Math.min(this.regionSize, this.sizes[vol] - offset) }
  }

  /** Sets the bits of a range in memory only (persistAll follows). */
  set(vol: number, offset: number, length: number): void {
    const [first, last] = this.range(vol, offset, length)
    for (let r = first; r <= last; r++) if (!this.has(r)) { this.mem[r >> 3] |= 1 << (r & 7); this.dirty++ }
  }

  /** Sets the bits of a range; resolves once they are on disk (at once when they already were). */
  mark(vol: number, offset: number, length: number): Promise<void> {
    this.set(vol, offset, length)
    const [first, last] = this.range(vol, offset, length)
    const pages = new Set<number>()
    for (let r = first; r <= last; r++) if (!this.onDisk(r)) pages.add(r >> 15)
    return pages.size ? this.schedule(pages) : Promise.resolve()
  }

  /** Writes every page as memory has it (entering bitmap mode). */
  persistAll(): Promise<void> {
    const pages = new Set<number>()
    for (let p = 0; p < this.mem.length / BLOCK; p++) pages.add(p)
    return this.schedule(pages)
  }

  /** The next marked region at or after from, or -1. */
  next(from: number): number {
    for (let r = from; r < this.total; r++) {
      if (this.mem[r >> 3] === 0) { r |= 7; continue }
      if (this.has(r)) return r
    }
    return -1
  }

  /** Clears every bit, durably. */
  clearAll(): Promise<void> {
    this.mem.fill(0)
    this.dirty = 0
    this.copying.clear()
    return this.persistAll()
  }

  /** Every region marked (or being copied), as volume ranges. */
  marked(): Region[] {
    const out: Region[] = []
    for (let r = this.next(0); r >= 0; r = this.next(r + 1)) out.push(this.region(r))
    for (const r of this.copying) out.push(this.region(r))
    return out
  }

  /** Takes region r for copying: cleared in memory (a write from now on marks it again), kept on disk until settled. */
  take(r: number): void {
    if (this.has(r)) { this.mem[r >> 3] &= ~(1 << (r & 7)); this.dirty-- }
    this.copying.add(r)
  }

  /** The copies of these regions are durable in the log: their bits may go from disk unless marked again. */
  settle(regions: number[]): Promise<void> {
    const pages = new Set<number>()
    for (const r of regions) { this.copying.delete(r); pages.add(r >> 15) }
    return pages.size ? this.schedule(pages) : Promise.resolve()
  }

  /** Page writes coalesce: a batch not yet started takes more pages; each writes the bits wanted when it runs. */
  private schedule(pages: Set<number>): Promise<void> {
    if (!this.queued) {
      let resolve!: () => void, reject!: (e: Error) => void
      const done = new Promise<void>((res, rej) => { resolve = res; reject = rej })
      const batch = { pages: new Set<number>(), done, resolve, reject }
      this.queued = batch
      this.persisting = this.persisting.then(() => this.write(batch)).then(batch.resolve, batch.reject)
    }
    for (const p of pages) this.queued.pages.add(p)
    return this.queued.done
  }

  private async write(batch: { pages: Set<number> }): Promise<void> {
    if (this.queued === batch) this.queued = null
    const written: Array<[number, Uint8Array]> = []
    for (const p of [...batch.pages].sort((a, b) => a - b)) {
      const page = Uint8Array.from(this.mem.subarray(p * BLOCK, (p + 1) * BLOCK))
      for (const r of this.copying) if (r >> 15 === p) page[(r >> 3) - p * BLOCK] |= 1 << (r & 7)
      await this.dev.write(Buffer.from(page), this.offset + p * BLOCK)
      written.push([p, page])
    }
    await this.dev.flush()
    for (const [p, page] of written) this.disk.set(page, p * BLOCK)
  }
}
