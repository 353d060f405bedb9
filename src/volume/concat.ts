// Concatenation: members laid end to end. Requests crossing a member boundary are
// split and the pieces issued concurrently.
import { BlockDev, VsmError, checkRange } from '../block/blockdev'
import { readLength } from './slice'

const noop = () => {}

export class ConcatDev implements BlockDev {
  readonly size: number
  /** starts[i] = volume offset of members[i]; starts[n] = size. Binary-searched per request. */
  private readonly starts: number[]

  constructor(readonly members: BlockDev[], private readonly onClose?: () => void) {
    if (members.length === 0) throw new VsmError('EINVAL', 'concat needs at least one member')
    this.starts = [0]
    for (const m of members) this.starts.push(this.starts[this.starts.length - 1] + m.size)
    this.size = this.starts[members.length]
  }

  private find(offset: number): number {
    let lo = 0, hi = this.members.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.starts[mid] <= offset) lo = mid; else hi = mid - 1
    }
    return lo
  }

  private run(buf: Buffer, offset: number, op: (m: BlockDev, b: Buffer, off: number) => Promise<unknown>): Promise<unknown> {
    let i = this.find(offset)
    const end = offset + buf.length
    // common case: the whole request is inside one member
    if (end <= this.starts[i + 1]) return op(this.members[i], buf, offset - this.starts[i])
    const parts: Promise<unknown>[] = []
    let pos = offset
    while (pos < end) {
      const stop = Math.min(end, this.starts[i + 1])
      parts.push(op(this.members[i], buf.subarray(pos - offset, stop - offset), pos - this.starts[i]))
      pos = stop
      i++
    }
    return Promise.all(parts).then(noop)
  }

  async read(buf: Buffer, offset: number): Promise<number> {
    const n = readLength(this, buf, offset)
    if (n > 0) await this.run(n === buf.length ? buf : buf.subarray(0, n), offset, readOp)
    return n
  }

  write(buf: Buffer, offset: number): Promise<void> {
    try {
      checkRange(this, offset, buf.length)
    } catch (e) {
      return Promise.reject(e)
    }
    // no async wrapper: one promise less per request on the hot path
    return (buf.length > 0 ? this.run(buf, offset, writeOp) : Promise.resolve()) as Promise<void>
  }

  async flush(): Promise<void> {
    await Promise.all(this.members.map((m) => m.flush()))
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.close()))
    this.onClose?.()
  }
}

export const readOp = (m: BlockDev, b: Buffer, off: number) => m.read(b, off)
export const writeOp = (m: BlockDev, b: Buffer, off: number) => m.write(b, off)
