// Layouts that send each byte to exactly one member (concat, stripe). They differ
// only in how a volume offset maps to a member and an offset in it; reading, writing,
// flushing and closing are the same and live here.
import { BlockDev, VsmError, rejectBadRange } from '../block/blockdev'
import { readLength } from './slice'

export type MemberOp = (m: BlockDev, b: Buffer, off: number) => Promise<unknown>
export const readOp: MemberOp = (m, b, off) => m.read(b, off)
export const writeOp: MemberOp = (m, b, off) => m.write(b, off)
export const noop = () => {}

export interface RoutedOptions {
  /** Bytes addressable, when less than the members hold (a relaid-out volume keeps its size). */
  size?: number
  onClose?: () => void
}

/** The addressable size: what the members hold, or the smaller size asked for. */
export function usableSize(capacity: number, size?: number): number {
  if (size === undefined) return capacity
  if (!Number.isSafeInteger(size) || size <= 0 || size > capacity) throw new VsmError('EINVAL', `size ${size} does not fit members holding ${capacity} bytes`)
  return size
}

export abstract class RoutedDev implements BlockDev {
  abstract readonly size: number

  constructor(readonly members: BlockDev[], private readonly onClose?: () => void) {}

  /** Applies op to each member piece of [offset, offset + buf.length), concurrently. */
  protected abstract route(buf: Buffer, offset: number, op: MemberOp): Promise<unknown>

  async read(buf: Buffer, offset: number): Promise<number> {
    const n = readLength(this, buf, offset)
    if (n > 0) await this.route(n === buf.length ? buf : buf.subarray(0, n), offset, readOp)
    return n
  }

  write(buf: Buffer, offset: number): Promise<void> {
    // no async wrapper: one promise less per request on the hot path
    return (rejectBadRange(this, offset, buf.length) ?? (buf.length > 0 ? this.route(buf, offset, writeOp) : Promise.resolve())) as Promise<void>
  }

  async flush(): Promise<void> {
    await Promise.all(this.members.map((m) => m.flush()))
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.close()))
    this.onClose?.()
  }
}
