// The BlockDev a replicated volume is opened through: reads go straight to the
// volume; writes, zeroing discards and flushes go to the group it belongs to (which
// logs them before they reach the volume). With no group it passes everything through,
// so the fs can be mounted on taps before any group exists. Also owns the range lock
// that keeps overlapping writes (and the initial sync's reads) in log order.
import { BlockDev, WriteAck } from '../block/blockdev'

export interface GroupIO {
  write(tap: ReplicatedVolume, buf: Buffer, offset: number): Promise<void>
  zero(tap: ReplicatedVolume, offset: number, length: number): Promise<void>
  flush(): Promise<void>
}

export class ReplicatedVolume implements BlockDev {
  group: GroupIO | null = null
  /** Position of this volume in its group (the `vol` of its records). */
  index = -1
  readonly locks = new RangeLock()
  discard?: (offset: number, length: number) => Promise<void>

  /**
   * `written`: the ranges of the volume that may hold data (the rest reads as zeros and
   * was never written); without it, the whole volume.
   */
  constructor(readonly name: string, readonly inner: BlockDev, private readonly writtenRanges?: () => Promise<[number, number][]>) {
    if (inner.discard) {
      this.discard = (offset, length) => (this.group ? this.group.zero(this, offset, length) : inner.discard!(offset, length))
    }
  }

  get size(): number { return this.inner.size }
  written(): Promise<[number, number][]> { return this.writtenRanges ? this.writtenRanges() : Promise.resolve([[0, this.size]]) }
  read(buf: Buffer, offset: number): Promise<number> { return this.inner.read(buf, offset) }
  /** A replicated write is over once logged (or shipped): the group keeps `ack`. */
  write(buf: Buffer, offset: number, ack?: WriteAck): Promise<void> { return this.group ? this.group.write(this, buf, offset) : this.inner.write(buf, offset, ack) }
  flush(): Promise<void> { return this.group ? this.group.flush() : this.inner.flush() }
  close(): Promise<void> { return this.inner.close() }
}

/** Exclusive byte ranges, granted in the order asked for when they overlap. */
export class RangeLock {
  private held: Array<{ start: number; end: number; done: Promise<void> }> = []

  async lock(offset: number, length: number): Promise<() => void> {
    const start = offset, end = offset + length
    const mine = { start, end, done: Promise.resolve() }
    let release!: () => void
    mine.done = new Promise<void>((r) => { release = r })
    const before = this.held.filter((h) => h.start < end && start < h.end).map((h) => h.done)
    this.held.push(mine)
    await Promise.all(before)
    return () => {
      this.held = this.held.filter((h) => h !== mine)
      release()
    }
  }
}
