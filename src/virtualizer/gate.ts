// Freeze and thaw: a frozen disk holds new writes (queued, never failed) while the
// ones already under way finish and the disk is flushed, so a snapshot taken while
// frozen is application-consistent. A forgotten freeze thaws itself after a timeout,
// so it can never hang a guest for good. Every write path (FUSE view, socket) enters
// through here; an unfrozen disk costs one map lookup.
import { VsmError } from '../block/blockdev'

interface Frozen {
  released: Promise<void>
  release: () => void
  timer: NodeJS.Timeout
  until: number
}

export class WriteGate {
  private frozen = new Map<number, Frozen>()
  private inflight = new Map<number, number>()
  private drained = new Map<number, () => void>()

  constructor(private readonly onAutoThaw: (ino: number) => void = () => {}) {}

  /**
   * Counts the write as under way; while the disk is frozen, returns a promise to wait
   * on first. No promise when not frozen: this runs for every guest write.
   */
  enter(ino: number): Promise<void> | undefined {
    if (this.frozen.has(ino)) return this.waitThaw(ino)
    this.inflight.set(ino, (this.inflight.get(ino) ?? 0) + 1)
    return undefined
  }

  private async waitThaw(ino: number): Promise<void> {
    for (let f = this.frozen.get(ino); f; f = this.frozen.get(ino)) await f.released
    this.inflight.set(ino, (this.inflight.get(ino) ?? 0) + 1)
  }

  leave(ino: number): void {
    const n = (this.inflight.get(ino) ?? 1) - 1
    if (n > 0) return void this.inflight.set(ino, n)
    this.inflight.delete(ino)
    this.drained.get(ino)?.()
  }

  isFrozen(ino: number): { until: number } | null {
    const f = this.frozen.get(ino)
    return f ? { until: f.until } : null
  }

  /** Holds new writes, waits for those under way, then flushes. */
  async freeze(ino: number, timeoutMs: number, flush: () => Promise<void>): Promise<{ until: number }> {
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > 3_600_000) throw new VsmError('EINVAL', 'freeze timeout must be 1 ms to 1 hour')
    if (this.frozen.has(ino)) throw new VsmError('EBUSY', 'the disk is already frozen')
    let release!: () => void
    const released = new Promise<void>((r) => { release = r })
    const until = Date.now() + timeoutMs
    const timer = setTimeout(() => { if (this.thaw(ino)) this.onAutoThaw(ino) }, timeoutMs)
    timer.unref()
    this.frozen.set(ino, { released, release, timer, until })
    try {
      if (this.inflight.get(ino)) await new Promise<void>((r) => this.drained.set(ino, r))
      this.drained.delete(ino)
      await flush()
    } catch (err) {
      this.thaw(ino)
      throw err
    }
    return { until }
  }

  /** Releases held writes; false when the disk was not frozen. */
  thaw(ino: number): boolean {
    const f = this.frozen.get(ino)
    if (!f) return false
    clearTimeout(f.timer)
    this.frozen.delete(ino)
    f.release()
    return true
  }
}
