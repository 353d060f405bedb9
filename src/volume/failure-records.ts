// A redundant layout's member failures on their way into the pool's configuration. A
// layout stops writing to a failed member at once, but a write it then lands on the
// others alone may be acknowledged only once the failure is durable: otherwise, after
// a restart, the pool would trust the stale member as in sync. Recording can fail (the
// configuration cannot be written: seen with the home's file system full); until it
// succeeds every write and flush of the volume fails, and recording is retried at most
// once a second by the writes that come.
import { VsmError } from '../block/blockdev'

export class FailureRecords {
  private chain: Promise<void> = Promise.resolve()
  private readonly unrecorded = new Map<number, unknown>()
  private lastError: unknown
  private lastTry = 0

  constructor(private readonly report?: (index: number, err: unknown) => Promise<void>, private readonly retryMs = 1000) {}

  /** Is a failure not (yet) recorded? Writes check this first: it is their fast path. */
  get pending(): boolean { return this.unrecorded.size > 0 }

  /** Records member i's failure after those before it; settles (never rejects) once tried. */
  add(i: number, err: unknown): Promise<void> {
    this.unrecorded.set(i, err)
    this.lastTry = Date.now()
    this.chain = this.chain.then(() => this.record(i, err))
    return this.chain
  }

  /**
   * Settles once every failure so far has been tried: null when all are recorded, else
   * the error to fail a write or flush with. Failures left are tried again first, at
   * most once per retryMs.
   */
  settled(): Promise<VsmError | null> {
    if (this.unrecorded.size && Date.now() - this.lastTry >= this.retryMs) {
      this.lastTry = Date.now()
      for (const [i, err] of this.unrecorded) this.chain = this.chain.then(() => this.record(i, err))
    }
    return this.chain.then(() => {
      if (!this.unrecorded.size) return null
      const which = [...this.unrecorded.keys()].join(', ')
      return new VsmError('EIO', `member ${which} failed and the pool configuration could not record it (${(this.lastError as Error)?.message ?? this.lastError}): writes are refused until it can`)
    })
  }

  /** Settles once every failure so far has been tried, recorded or not. */
  tried(): Promise<void> { return this.settled().then(() => undefined) }

  /** For the end of a write or flush: throws while a failure is not recorded (after a retry when due). */
  async check(): Promise<void> {
    const bad = await this.settled()
    if (bad) throw bad
  }

  private async record(i: number, err: unknown): Promise<void> {
    if (!this.unrecorded.has(i)) return
    try {
      await this.report?.(i, err)
      this.unrecorded.delete(i)
    } catch (e) {
      this.lastError = e
    }
  }
}
