// What the pool hands out for an open volume: a stable BlockDev whose layout underneath
// can be swapped while it is in use (grow, move, relayout), so the file system above
// keeps one handle for the volume's whole life and never notices the change. Writes
// are counted per layout, so a swap can tell when the last write sent to the layout
// it replaced has landed (a copy must not read a range such a write is still changing).
import type { BlockDev, WriteAck } from '../block/blockdev'

interface Epoch { writes: number; idle: (() => void) | null }

export class VolumeHandle implements BlockDev {
  private epoch: Epoch = { writes: 0, idle: null }

  constructor(private layout: BlockDev, private readonly onClose: () => void) {}

  get inner(): BlockDev { return this.layout }

  get size(): number { return this.inner.size }
  read(buf: Buffer, offset: number): Promise<number> { return this.inner.read(buf, offset) }

  write(buf: Buffer, offset: number, ack?: WriteAck): Promise<void> {
    const e = this.epoch
    e.writes++
    return this.counted(e, this.layout.write(buf, offset, ack))
  }

  /** A layout that cannot discard (raid5: its parity would go stale) keeps the range as it is. */
  discard(offset: number, length: number): Promise<void> {
    if (!this.layout.discard) return Promise.resolve()
    const e = this.epoch
    e.writes++
    return this.counted(e, this.layout.discard(offset, length))
  }

  private counted(e: Epoch, p: Promise<void>): Promise<void> {
    const done = () => { if (--e.writes === 0 && e.idle) e.idle() }
    p.then(done, done)
    return p
  }

  flush(): Promise<void> { return this.inner.flush() }

  /** Put next underneath at once; resolves when the writes sent to the layout before it have landed. */
  swap(next: BlockDev): Promise<void> {
    const e = this.epoch
    this.epoch = { writes: 0, idle: null }
    this.layout = next
    return e.writes === 0 ? Promise.resolve() : new Promise<void>((r) => { e.idle = r })
  }

  async close(): Promise<void> {
    try { await this.inner.close() } finally { this.onClose() }
  }
}
