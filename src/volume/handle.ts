// What the pool hands out for an open volume: a stable BlockDev whose layout underneath
// can be swapped while it is in use (grow, move, relayout), so the file system above
// keeps one handle for the volume's whole life and never notices the change.
import type { BlockDev } from '../block/blockdev'

export class VolumeHandle implements BlockDev {
  constructor(public inner: BlockDev, private readonly onClose: () => void) {}

  get size(): number { return this.inner.size }
  read(buf: Buffer, offset: number): Promise<number> { return this.inner.read(buf, offset) }
  write(buf: Buffer, offset: number): Promise<void> { return this.inner.write(buf, offset) }
  flush(): Promise<void> { return this.inner.flush() }

  async close(): Promise<void> {
    try { await this.inner.close() } finally { this.onClose() }
  }
}
