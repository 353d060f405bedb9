// A window (offset+size) onto another BlockDev: how a volume member sees its extent
// of a device's data area. It does not own the device, so close() leaves it open.
import { BlockDev, VsmError, WriteAck, checkRange, rejectBadRange, writeDurable, zeroRange } from '../block/blockdev'

/** Shared by every layout: refuse starts past the end, shorten reads that cross it. */
export function readLength(dev: { size: number }, buf: Buffer, offset: number): number {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > dev.size) checkRange(dev, offset, buf.length)
  return Math.min(buf.length, dev.size - offset)
}

export class SliceDev implements BlockDev {
  constructor(readonly inner: BlockDev, readonly offset: number, readonly size: number) {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(size) || size <= 0 ||
        offset + size > inner.size) {
      throw new VsmError('EINVAL', `slice ${offset}+${size} does not fit a ${inner.size}-byte device`)
    }
  }

  async read(buf: Buffer, offset: number): Promise<number> {
    const n = readLength(this, buf, offset)
    await this.inner.read(n === buf.length ? buf : buf.subarray(0, n), this.offset + offset)
    return n
  }

  write(buf: Buffer, offset: number, ack?: WriteAck): Promise<void> {
    checkRange(this, offset, buf.length)
    return this.inner.write(buf, this.offset + offset, ack)
  }

  writeDurable(buf: Buffer, offset: number): Promise<void> {
    return rejectBadRange(this, offset, buf.length) ?? writeDurable(this.inner, buf, this.offset + offset)
  }

  flush(): Promise<void> { return this.inner.flush() }

  async discard(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length)
    await zeroRange(this.inner, this.offset + offset, length)
  }

  async close(): Promise<void> {}
}
