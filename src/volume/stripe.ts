// Striping (RAID-0): the volume is cut into stripe units dealt round-robin across
// equal-sized members. Pieces of one request run concurrently on different members.
import { BlockDev, VsmError } from '../block/blockdev'
import { MemberOp, RoutedDev, RoutedOptions, noop, usableSize } from './routed'

export const DEFAULT_STRIPE_UNIT = 64 * 1024

export class StripeDev extends RoutedDev {
  readonly size: number
  private readonly n: number

  constructor(members: BlockDev[], readonly stripeUnit = DEFAULT_STRIPE_UNIT, opts: RoutedOptions = {}) {
    super(members, opts.onClose)
    this.n = members.length
    if (this.n === 0) throw new VsmError('EINVAL', 'stripe needs at least one member')
    if (!Number.isSafeInteger(stripeUnit) || stripeUnit <= 0) throw new VsmError('EINVAL', `bad stripe unit ${stripeUnit}`)
    const per = Math.min(...members.map((m) => m.size))
    // only whole stripe rows are addressable, so every member holds the same amount
    const rows = Math.floor(per / stripeUnit)
    if (rows === 0) throw new VsmError('EINVAL', `members smaller than one stripe unit (${stripeUnit})`)
    this.size = usableSize(rows * stripeUnit * this.n, opts.size)
  }

  protected route(buf: Buffer, offset: number, op: MemberOp): Promise<unknown> {
    const su = this.stripeUnit, n = this.n
    const end = offset + buf.length
    let unit = Math.floor(offset / su)
    let inUnit = offset - unit * su
    if (inUnit + buf.length <= su) {
      return op(this.members[unit % n], buf, Math.floor(unit / n) * su + inUnit)
    }
    const parts: Promise<unknown>[] = []
    let pos = offset
    while (pos < end) {
      const len = Math.min(su - inUnit, end - pos)
      parts.push(op(this.members[unit % n], buf.subarray(pos - offset, pos - offset + len), Math.floor(unit / n) * su + inUnit))
      pos += len
      unit++
      inUnit = 0
    }
    return Promise.all(parts).then(noop)
  }
}
