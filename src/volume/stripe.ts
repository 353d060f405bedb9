// Striping (RAID-0): the volume is cut into stripe units dealt round-robin across
// equal-sized members. Pieces of one request run concurrently on different members.
import { BlockDev, VsmError, checkRange } from '../block/blockdev'
import { readLength } from './slice'
import { readOp, writeOp } from './concat'

export const DEFAULT_STRIPE_UNIT = 64 * 1024

const noop = () => {}

export class StripeDev implements BlockDev {
  readonly size: number
  private readonly n: number

  constructor(readonly members: BlockDev[], readonly stripeUnit = DEFAULT_STRIPE_UNIT, private readonly onClose?: () => void) {
    this.n = members.length
    if (this.n === 0) throw new VsmError('EINVAL', 'stripe needs at least one member')
    if (!Number.isSafeInteger(stripeUnit) || stripeUnit <= 0) throw new VsmError('EINVAL', `bad stripe unit ${stripeUnit}`)
    const per = Math.min(...members.map((m) => m.size))
    // only whole stripe rows are addressable, so every member holds the same amount
    const rows = Math.floor(per / stripeUnit)
    if (rows === 0) throw new VsmError('EINVAL', `members smaller than one stripe unit (${stripeUnit})`)
    this.size = rows * stripeUnit * this.n
  }

  private run(buf: Buffer, offset: number, op: (m: BlockDev, b: Buffer, off: number) => Promise<unknown>): Promise<unknown> {
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
