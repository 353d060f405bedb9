// The writes of one open file, plugged for a turn of the event loop (as the kernel's
// blk_plug holds a task's requests): what is queued while the loop serves a batch of
// FUSE requests goes to the thread pool as one job (pwriteBatch), so the main thread
// pays one hand-off for the batch, not ~11 us per write. One queue per descriptor, so a
// hung device holds up its own writes only; at most MAX_JOBS jobs of it in the pool.
// The descriptor stays open while a job of the queue may use it: close waits for idle().
// An abandoned device's queued writes are dropped, never sent: if its jobs ever return,
// a write sent then could land on a copy a resync has since made current.
import { VsmError } from '../block/blockdev'
import { pwriteBatch } from '../native/sys'

/** Jobs one queue may have in the thread pool at once (bin/vsm sizes the pool at 16). */
const MAX_JOBS = 2

interface Queued { buf: Buffer; offset: number; resolve: () => void; reject: (e: unknown) => void }

export class WriteQueue {
  private queued: Queued[] = []
  private jobs = 0
  private scheduled = false
  private idleWaiters: (() => void)[] = []
  private dead: Error | null = null
  /** Jobs handed to the thread pool so far (tests, profiles). */
  batches = 0

  constructor(private readonly fd: number, private readonly path: string) {}

  write(buf: Buffer, offset: number): Promise<void> {
    if (this.dead) return Promise.reject(this.dead)
    return new Promise((resolve, reject) => {
      this.queued.push({ buf, offset, resolve, reject })
      if (!this.scheduled) { this.scheduled = true; setImmediate(this.unplug) }
    })
  }

  /** Fail every queued write with err, and every later one: the jobs in the pool are left to answer or not. */
  abandon(err: Error): void {
    this.dead ??= err
    for (const q of this.queued.splice(0)) q.reject(err)
    if (this.jobs === 0) for (const w of this.idleWaiters.splice(0)) w()
  }

  /** Resolves when no job of this queue is in the pool and nothing is queued. */
  idle(): Promise<void> {
    if (this.jobs === 0 && this.queued.length === 0) return Promise.resolve()
    return new Promise((r) => this.idleWaiters.push(r))
  }

  private readonly unplug = (): void => {
    this.scheduled = false
    if (this.dead || this.jobs >= MAX_JOBS || this.queued.length === 0) return
    const batch = this.queued
    this.queued = []
    this.jobs++
    this.batches++
    pwriteBatch(this.fd, batch.map((q) => q.buf), batch.map((q) => q.offset), (errors) => {
      this.jobs--
      for (let i = 0; i < batch.length; i++) {
        const e = errors[i]
        if (e === undefined) batch[i].resolve()
        else batch[i].reject(new VsmError(e, `write on ${this.path} at ${batch[i].offset}: ${e}`))
      }
      if (this.queued.length) this.unplug()
      else if (this.jobs === 0) for (const w of this.idleWaiters.splice(0)) w()
    })
  }
}
