// Mirroring (RAID-1) over N copies. Writes go to every healthy copy concurrently;
// reads go to one healthy copy, alternating to spread load, and are retried on the
// next copy on error. A copy that fails is marked failed and the volume keeps
// serving from the rest (degraded); the pool is told through onMemberFailed and the
// write is not acknowledged until that is recorded, so a restart never trusts a
// stale copy. The last healthy copy is never failed: its errors go to the caller.
import { BlockDev, VsmError, checkRange } from '../block/blockdev'
import { readLength } from './slice'
import { DirtyRegionLog, LogMember, LogHost } from './drl'

export interface MirrorOptions {
  /** Volume size (default: the smallest present copy). */
  size?: number
  /** Write-intent bitmap location of each copy (null for a copy without one). */
  log?: (LogMember | null)[]
  /** Record a copy's failure durably (pool config); awaited before acknowledging. */
  onMemberFailed?: (index: number, err: unknown) => Promise<void>
  onClose?: () => void
}

const RESYNC_CHUNK = 1 << 20

export class MirrorDev implements BlockDev, LogHost {
  readonly size: number
  readonly failed: boolean[]
  readonly errors: (string | undefined)[]
  readonly log?: DirtyRegionLog
  /** Bytes copied by the last resync (dirty regions after an unclean stop). */
  resyncedBytes = 0
  private next = 0
  private failing: Promise<void> = Promise.resolve()
  private closed = false

  /** A null member is a copy that is absent (missing device, or failed earlier). */
  constructor(readonly members: (BlockDev | null)[], private readonly opts: MirrorOptions = {}) {
    if (members.length < 1) throw new VsmError('EINVAL', 'mirror needs at least one copy')
    this.failed = members.map((m) => m === null)
    this.errors = members.map((m) => (m === null ? 'absent' : undefined))
    const present = members.filter((m): m is BlockDev => m !== null)
    if (present.length === 0) throw new VsmError('ENODEV', 'mirror has no copy present')
    this.size = opts.size ?? Math.min(...present.map((m) => m.size))
    for (const m of present) {
      if (m.size < this.size) throw new VsmError('EINVAL', `mirror copy of ${m.size} bytes is smaller than the volume (${this.size})`)
    }
    if (opts.log) this.log = new DirtyRegionLog(this.size, opts.log, this)
  }

  get healthyCount(): number {
    let n = 0
    for (const f of this.failed) if (!f) n++
    return n
  }

  isHealthy(i: number): boolean { return !this.failed[i] }

  /** Fail copy i unless it is the last healthy one; resolves once the failure is recorded. */
  failMember(i: number, err: unknown): Promise<void> {
    if (this.failed[i]) return this.failing
    if (this.healthyCount <= 1) return Promise.resolve()
    this.failed[i] = true
    this.errors[i] = (err as Error)?.message ?? String(err)
    const report = this.opts.onMemberFailed
    const prev = this.failing
    this.failing = prev.then(() => (report ? report(i, err) : undefined)).catch(() => {})
    return this.failing
  }

  async read(buf: Buffer, offset: number): Promise<number> {
    const n = readLength(this, buf, offset)
    if (n === 0) return 0
    const target = n === buf.length ? buf : buf.subarray(0, n)
    const count = this.members.length
    const start = this.next
    this.next = start + 1 === count ? 0 : start + 1
    let lastErr: unknown
    for (let k = 0; k < count; k++) {
      const i = (start + k) % count
      if (this.failed[i]) continue
      try {
        await this.members[i]!.read(target, offset)
        return n
      } catch (e) {
        lastErr = e
        await this.failMember(i, e)
      }
    }
    throw new VsmError('EIO', `mirror read failed on every copy at ${offset}: ${(lastErr as Error)?.message ?? 'no healthy copy'}`)
  }

  write(buf: Buffer, offset: number): Promise<void> {
    try {
      checkRange(this, offset, buf.length)
    } catch (e) {
      return Promise.reject(e)
    }
    if (buf.length === 0) return Promise.resolve()
    const log = this.log
    if (!log) return this.writeCopies(buf, offset)
    const rs = log.regionSize
    const r0 = Math.floor(offset / rs), r1 = Math.floor((offset + buf.length - 1) / rs)
    const intent = log.begin(r0, r1)
    const p = intent ? intent.then(() => this.writeCopies(buf, offset)) : this.writeCopies(buf, offset)
    return p.then(() => log.end(r0, r1), (e) => { log.end(r0, r1); throw e })
  }

  // Hand-rolled fan-out (no async wrapper, no per-copy promise array): this runs for
  // every guest write on a mirror.
  private writeCopies(buf: Buffer, offset: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const n = this.members.length
      let pending = 1, ok = 0, sawFail = false
      let lastErr: unknown
      const end = () => ok > 0 ? resolve() : reject(new VsmError('EIO',
        `mirror write failed on every copy at ${offset}: ${(lastErr as Error)?.message ?? 'no healthy copy'}`))
      const finish = () => {
        if (--pending > 0) return
        // a copy failed: acknowledge only once the failure is recorded
        if (sawFail) this.failing.then(end); else end()
      }
      const good = () => { ok++; finish() }
      for (let i = 0; i < n; i++) {
        if (this.failed[i]) continue
        pending++
        this.members[i]!.write(buf, offset).then(good, (e) => {
          lastErr = e
          sawFail = true
          this.failMember(i, e)
          finish()
        })
      }
      finish()
    })
  }

  async flush(): Promise<void> {
    const e = this.log?.flushStart() ?? 0
    let ok = 0
    let lastErr: unknown
    await Promise.all(this.members.map((m, i) => this.failed[i] ? undefined :
      m!.flush().then(() => { ok++ }, (err) => { lastErr = err; return this.failMember(i, err) })))
    if (ok === 0) throw new VsmError('EIO', `mirror flush failed on every copy: ${(lastErr as Error)?.message ?? 'no healthy copy'}`)
    this.log?.flushDone(e)
  }

  /**
   * Make the copies identical where an unclean stop may have left them different:
   * copy the log's pending regions from the first healthy copy to the others.
   * Must run before the volume serves I/O. Returns (and records) bytes copied.
   */
  async resync(): Promise<number> {
    this.resyncedBytes = 0
    if (!this.log) return 0
    const ranges = this.log.pendingRanges()
    const src = this.failed.indexOf(false)
    if (ranges.length && this.healthyCount > 1) {
      const chunk = Buffer.allocUnsafe(RESYNC_CHUNK)
      for (const [lo, hi] of ranges) {
        for (let pos = lo; pos < Math.min(hi, this.size); pos += RESYNC_CHUNK) {
          const b = chunk.subarray(0, Math.min(RESYNC_CHUNK, hi - pos, this.size - pos))
          // the first copy that reads is the source; one that cannot read is failed
          let from = -1
          for (let i = src; i < this.members.length && from < 0; i++) {
            if (this.failed[i]) continue
            try { await this.members[i]!.read(b, pos); from = i } catch (e) { await this.failMember(i, e); if (this.healthyCount <= 1 && !this.failed[i]) throw e }
          }
          if (from < 0) throw new VsmError('EIO', `resync: no copy could be read at ${pos}`)
          await Promise.all(this.members.map((m, i) => (i === from || this.failed[i]) ? undefined :
            m!.write(b, pos).catch((e) => this.failMember(i, e))))
          this.resyncedBytes += b.length
        }
      }
      await this.flush()
    }
    await this.log.clearPending()
    return this.resyncedBytes
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    try {
      await this.flush()
      await this.log?.releaseAll()
    } finally {
      await Promise.all(this.members.map((m) => m?.close()))
      this.opts.onClose?.()
    }
  }
}
