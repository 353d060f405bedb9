// Fault injection as one more BlockDev layer (QEMU's blkdebug, dm-error, dm-delay):
// wraps any BlockDev and fails, delays, tears or stops I/O by rule. Components never
// carry fault flags of their own; tests put this node where they want the fault.
import { BlockDev, VsmError, zeroRange } from './blockdev'

export interface FaultRule {
  op: 'read' | 'write' | 'flush' | 'any'
  /** Byte range the rule covers (default: the whole device). */
  offset?: number
  length?: number
  /** Fail with EIO with this probability (default 1 when the rule matches). */
  probability?: number
  /** The error code to fail with instead of EIO (ENOSPC: a thin backing file's full file system). */
  code?: string
  /** Add this much latency instead of (or before) failing. */
  delayMs?: number
  /** Only delay, never fail. */
  delayOnly?: boolean
}

export interface FaultOptions {
  rules?: FaultRule[]
  /** After this many writes succeed, every later operation fails (a vanished device / dead process). */
  stopAfterWrites?: number
  /** On the write that crosses stopAfterWrites, write only this many leading bytes (a torn write). */
  tearBytes?: number
  /** Deterministic source of randomness for probabilistic rules. */
  random?: () => number
}

export class FaultDev implements BlockDev {
  writes = 0
  stopped = false
  private rules: FaultRule[]

  constructor(private readonly inner: BlockDev, private readonly opts: FaultOptions = {}) {
    this.rules = opts.rules ?? []
  }

  get size() { return this.inner.size }

  setRules(rules: FaultRule[]) { this.rules = rules }

  private async apply(op: 'read' | 'write' | 'flush', offset: number, length: number) {
    if (this.stopped) throw new VsmError('EIO', `injected: device stopped (${op})`)
    for (const r of this.rules) {
      if (r.op !== 'any' && r.op !== op) continue
      const lo = r.offset ?? 0, hi = r.length === undefined ? Infinity : lo + r.length
      if (op !== 'flush' && (offset + length <= lo || offset >= hi)) continue
      if (r.delayMs) await new Promise((res) => setTimeout(res, r.delayMs))
      if (r.delayOnly) continue
      const p = r.probability ?? 1
      if ((this.opts.random ?? Math.random)() < p) throw new VsmError(r.code ?? 'EIO', `injected ${op} error at ${offset}`)
    }
  }

  async read(buf: Buffer, offset: number) {
    await this.apply('read', offset, buf.length)
    return this.inner.read(buf, offset)
  }

  async write(buf: Buffer, offset: number) {
    await this.apply('write', offset, buf.length)
    const limit = this.opts.stopAfterWrites
    if (limit !== undefined && this.writes >= limit) {
      this.stopped = true
      const tear = this.opts.tearBytes ?? 0
      if (tear > 0) await this.inner.write(buf.subarray(0, Math.min(tear, buf.length)), offset)
      throw new VsmError('EIO', 'injected: stopped after write limit')
    }
    this.writes++
    return this.inner.write(buf, offset)
  }

  async flush() {
    await this.apply('flush', 0, 0)
    return this.inner.flush()
  }

  async discard(offset: number, length: number) {
    await this.apply('write', offset, length)
    await zeroRange(this.inner, offset, length)
  }

  close() { return this.inner.close() }
}
