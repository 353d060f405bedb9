// Reusable I/O buffers for the FUSE view's reads. A fresh 1 MiB buffer per request is
// memory V8 counts as external, and at hundreds of requests a second that set off a
// full mark-compact every few tens of ms (--trace-gc under 1 MiB sequential reads).
// A buffer comes back only when no device call was stranded while it was out: an
// abandoned device's read may still land in it later (blockdev.ts strandedCalls).
import { strandedCalls } from './blockdev'

const MIN_CLASS = 4096
/** Buffers kept per size class: one per request in flight at the queue depths the view sees. */
const KEEP = 16

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>()

  /** A buffer of exactly `size` bytes (its contents are stale) and the ticket to give it back with. */
  take(size: number): { buf: Buffer; ticket: Ticket } {
    const cls = sizeClass(size)
    const whole = this.free.get(cls)?.pop() ?? Buffer.allocUnsafeSlow(cls)
    return { buf: whole.subarray(0, size), ticket: { whole, stranded: strandedCalls() } }
  }

  /** The I/O on a taken buffer settled and nothing reads it any more. */
  give(t: Ticket): void {
    if (strandedCalls() !== t.stranded) return
    const list = this.free.get(t.whole.length) ?? []
    if (list.length < KEEP) list.push(t.whole)
    this.free.set(t.whole.length, list)
  }
}

export interface Ticket { readonly whole: Buffer; readonly stranded: number }

function sizeClass(size: number): number {
  let c = MIN_CLASS
  while (c < size) c *= 2
  return c
}
