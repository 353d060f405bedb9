// Small concurrency tools shared by the layouts: per-key locks (a raid5 row, a
// mirror resync chunk) and a group flush that lets concurrent callers share one.
/** Exclusive locks by key, granted in request order. */
export class RangeLocks {
  private readonly tails = new Map<number, Promise<void>>()

  async lock(key: number): Promise<() => void> {
    const prev = this.tails.get(key)
    let release!: () => void
    const mine = new Promise<void>((r) => { release = r })
    const tail = prev ? prev.then(() => mine) : mine
    this.tails.set(key, tail)
    if (prev) await prev
    return () => {
      release()
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
  }
}

/**
 * Every run() resolves after a complete call of fn that started after it; callers
 * arriving while one runs share the next, so N concurrent syncs cost two flushes.
 */
export class GroupFlush {
  private running: Promise<void> | null = null
  private queued: Promise<void> | null = null

  constructor(private readonly fn: () => Promise<void>) {}

  run(): Promise<void> {
    if (!this.running) {
      this.running = this.fn().finally(() => { this.running = null })
      return this.running
    }
    if (!this.queued) {
      this.queued = this.running.catch(() => {}).then(() => {
        this.queued = null
        return this.run()
      })
    }
    return this.queued
  }
}
