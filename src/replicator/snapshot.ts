// The secondary's snapshot during a bitmap resync: a copy-on-write store keeping the
// replicas' contents as they were when the resync began (the last crash-consistent
// image of the primary it had), because a resync copies regions out of write order.
// Owns the store's layout (a bitmap of saved chunks, then a data area laid out as the
// volumes one after another), saving a chunk durably before it is first overwritten,
// the read-only view of the snapshot, and rolling the replicas back to it. Whether a
// snapshot is in force is the replica state's (applier.ts): the saved bits count only
// while it says a resync is open.
import { BlockDev, VsmError } from '../block/blockdev'
import { BLOCK } from './log'

export const CHUNK = 64 << 10

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m

interface Geometry { bases: number[]; chunks: number; mapBytes: number; dataStart: number; size: number }

function geometry(sizes: number[]): Geometry {
  const bases: number[] = []
  let chunks = 0
  for (const s of sizes) { bases.push(chunks); chunks += Math.ceil(s / CHUNK) }
  const mapBytes = roundUp(Math.ceil(chunks / 8), BLOCK)
  const dataStart = roundUp(mapBytes, CHUNK)
  return { bases, chunks, mapBytes, dataStart, size: dataStart + chunks * CHUNK }
}

/** Bytes a store for volumes of these sizes needs. */
export function snapshotStoreSize(volumeSizes: number[]): number { return geometry(volumeSizes).size }

export class ResyncSnapshot {
  private readonly g: Geometry
  private saved: Uint8Array

  private constructor(private readonly store: BlockDev, private readonly volumes: BlockDev[]) {
    this.g = geometry(volumes.map((v) => v.size))
    if (store.size < this.g.size) throw new VsmError('EINVAL', `snapshot store of ${store.size} bytes is smaller than the ${this.g.size} its volumes need`)
    this.saved = new Uint8Array(this.g.mapBytes)
  }

  /** Opens a store whose saved bits are in force (a resync is open). */
  static async open(store: BlockDev, volumes: BlockDev[]): Promise<ResyncSnapshot> {
    const s = new ResyncSnapshot(store, volumes)
    const buf = Buffer.alloc(s.g.mapBytes)
    await store.read(buf, 0)
    s.saved.set(buf)
    return s
  }

  /** Starts an empty snapshot: no chunk saved, durably, before the replica state says a resync is open. */
  static async begin(store: BlockDev, volumes: BlockDev[]): Promise<ResyncSnapshot> {
    const s = new ResyncSnapshot(store, volumes)
    await store.write(Buffer.alloc(s.g.mapBytes), 0)
    await store.flush()
    return s
  }

  private isSaved(c: number): boolean { return (this.saved[c >> 3] & (1 << (c & 7))) !== 0 }

  /** Saves the chunks of a range not yet saved, durably, before the caller overwrites it. */
  async protect(vol: number, offset: number, length: number): Promise<void> {
    const dev = this.volumes[vol]
    const first = Math.floor(offset / CHUNK), last = Math.floor((offset + Math.max(length, 1) - 1) / CHUNK)
    const fresh: number[] = []
    for (let i = first; i <= last; i++) {
      const c = this.g.bases[vol] + i
      if (this.isSaved(c)) continue
      const buf = Buffer.alloc(Math.min(CHUNK, dev.size - i * CHUNK))
      await dev.read(buf, i * CHUNK)
      await this.store.write(buf, this.g.dataStart + c * CHUNK)
      fresh.push(c)
    }
    if (!fresh.length) return
    await this.store.flush()
    const pages = new Set<number>()
    for (const c of fresh) { this.saved[c >> 3] |= 1 << (c & 7); pages.add(c >> 15) }
    for (const p of pages) await this.store.write(Buffer.from(this.saved.subarray(p * BLOCK, (p + 1) * BLOCK)), p * BLOCK)
    await this.store.flush()
  }

  /** The snapshot's bytes of volume vol at offset: the saved chunk where one was saved, else the replica. */
  async read(vol: number, buf: Buffer, offset: number): Promise<void> {
    await this.volumes[vol].read(buf, offset)
    for (let at = offset - (offset % CHUNK); at < offset + buf.length; at += CHUNK) {
      const c = this.g.bases[vol] + at / CHUNK
      if (!this.isSaved(c)) continue
      const from = Math.max(at, offset), to = Math.min(at + CHUNK, offset + buf.length)
      await this.store.read(buf.subarray(from - offset, to - offset), this.g.dataStart + c * CHUNK + (from - at))
    }
  }

  /** Copies every saved chunk back onto its replica and flushes: the replicas are the snapshot again. Idempotent. */
  async rollback(): Promise<number> {
    let restored = 0
    for (let vol = 0; vol < this.volumes.length; vol++) {
      const dev = this.volumes[vol]
      for (let i = 0; i * CHUNK < dev.size; i++) {
        const c = this.g.bases[vol] + i
        if (!this.isSaved(c)) continue
        const buf = Buffer.alloc(Math.min(CHUNK, dev.size - i * CHUNK))
        await this.store.read(buf, this.g.dataStart + c * CHUNK)
        await dev.write(buf, i * CHUNK)
        restored += buf.length
      }
    }
    await Promise.all(this.volumes.map((v) => v.flush()))
    return restored
  }
}
