// The daemon's log file: appends the logger's lines without ever holding the daemon up.
// A log on a full or failing file system must not stop the storage it describes. With
// pino.destination (sonic-boom), ENOSPC on the log became an 'error' event nobody
// handled, so an uncaught exception, whose handler's flushSync then retried the write
// for ever, asleep on the main thread: FUSE requests and the control socket stopped
// with it. Here a failed write keeps its lines queued (up to a bound; past it, lines are
// dropped and counted) and is retried every second; once the file takes writes again
// the owner is told how many lines were lost.
import { write, writeSync } from 'fs'

const RETRY_MS = 1000

export interface LogFileEvents {
  /** The first failed write after a working one (or since the start). */
  failing(err: NodeJS.ErrnoException): void
  /** Writes work again after failing; `dropped` lines were lost meanwhile (over the bound). */
  recovered(dropped: number, reason: string): void
}

export class LogFile {
  private queue: Buffer[] = []
  private queued = 0
  private writing = false
  private retry: NodeJS.Timeout | null = null
  private failure: string | null = null
  private dropped = 0
  private waiters: (() => void)[] = []

  constructor(private readonly fd: number, private readonly on: LogFileEvents, private readonly maxQueued = 4 << 20) {}

  /** pino's stream interface: one or more whole lines. */
  write(line: string): boolean {
    const b = Buffer.from(line)
    if (this.queued + b.length > this.maxQueued) {
      this.dropped++
      return true
    }
    this.queue.push(b)
    this.queued += b.length
    if (!this.writing && !this.retry) this.next()
    return true
  }

  /**
   * Resolves once every line so far is written, or writing them has failed (they then
   * wait for room): a graceful exit awaits this before flushSync, which cannot tell
   * whether a write in flight landed.
   */
  drained(): Promise<void> {
    if (this.idle()) return Promise.resolve()
    return new Promise((r) => this.waiters.push(r))
  }

  private idle(): boolean { return !this.writing && (!this.queue.length || this.retry !== null) }

  /**
   * For exits: one attempt to write what is queued, giving up at the first error (what
   * is left stays queued; the error was reported when writes began failing).
   */
  flushSync(): void {
    if (!this.queue.length) return
    const buf = Buffer.concat(this.take())
    let at = 0
    try {
      while (at < buf.length) at += writeSync(this.fd, buf, at)
    } catch {
      this.requeue(buf.subarray(at))
    }
  }

  private take(): Buffer[] {
    const q = this.queue
    this.queue = []
    this.queued = 0
    return q
  }

  private next(): void {
    if (this.writing || !this.queue.length) return
    const buf = Buffer.concat(this.take())
    this.writing = true
    write(this.fd, buf, 0, buf.length, null, (err, n) => {
      this.writing = false
      if (err) this.failed(err, buf)
      else {
        if (n < buf.length) this.requeue(buf.subarray(n))
        if (this.failure !== null) {
          const { dropped, failure } = this
          this.failure = null
          this.dropped = 0
          this.on.recovered(dropped, failure)
        }
        this.next()
      }
      if (this.idle()) for (const w of this.waiters.splice(0)) w()
    })
  }

  private failed(err: NodeJS.ErrnoException, buf: Buffer): void {
    this.requeue(buf)
    // armed before `failing`, whose own log line must only join the queue
    this.retry = setTimeout(() => { this.retry = null; this.next() }, RETRY_MS)
    this.retry.unref()
    if (this.failure === null) {
      this.failure = err.message
      this.on.failing(err)
    }
  }

  /** Back at the head of the queue, kept even past the bound (it was already counted in). */
  private requeue(b: Buffer): void {
    this.queue.unshift(b)
    this.queued += b.length
  }
}
