// Concatenation: members laid end to end. Requests crossing a member boundary are
// split and the pieces issued concurrently.
import { BlockDev, VsmError } from '../block/blockdev'
import { MemberOp, RoutedDev, RoutedOptions, noop, usableSize } from './routed'

export class ConcatDev extends RoutedDev {
  readonly size: number
  /** starts[i] = volume offset of members[i]; starts[n] = size. Binary-searched per request. */
  private readonly starts: number[]

  constructor(members: BlockDev[], opts: RoutedOptions = {}) {
    super(members, opts.onClose)
    if (members.length === 0) throw new VsmError('EINVAL', 'concat needs at least one member')
    this.starts = [0]
    for (const m of members) this.starts.push(this.starts[this.starts.length - 1] + m.size)
    this.size = usableSize(this.starts[members.length], opts.size)
  }

  private find(offset: number): number {
    let lo = 0, hi = this.members.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.starts[mid] <= offset) lo = mid; else hi = mid - 1
    }
    return lo
  }

  protected route(buf: Buffer, offset: number, op: MemberOp): Promise<unknown> {
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
}
