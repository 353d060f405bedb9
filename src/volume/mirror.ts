// Mirroring (RAID-1) over N copies. Writes go to every healthy copy concurrently;
// reads go to one healthy copy, alternating to spread load, and are retried on the
// next copy on error. A copy that fails is marked failed and the volume keeps
// serving from the rest (degraded); the pool is told through onMemberFailed and the
// write is not acknowledged until that is recorded, so a restart never trusts a
// stale copy. The last healthy copy is never failed: its errors go to the caller.
//
// A copy coming back (a returning device, a replacement) is attached write-only:
// it takes every new write at once, is never read, and copyRanges() brings the rest
// over chunk by chunk. A chunk being copied holds back writes to it and waits for
// those already in flight, so a copy never overwrites a newer write with older data.
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

interface InFlight { lo: number; hi: number; done: Promise<unknown> }

export interface CopyOptions {
  /** Called after each chunk with the bytes copied so far (progress, rate limit, checkpoints, cancel). */
  onChunk?: (done: number, pos: number) => Promise<void>
}

export class MirrorDev implements BlockDev, LogHost {
  readonly size: number
  readonly failed: boolean[]
  /** Copies being brought up to date: written, never read. */
  readonly writeOnly: boolean[]
  readonly errors: (string | undefined)[]
  readonly log?: DirtyRegionLog
  /** Bytes copied by the last resync (dirty regions after an unclean stop). */
  resyncedBytes = 0
  private next = 0
  private failing: Promise<void> = Promise.resolve()
  private closed = false
  private readonly inflight = new Set<InFlight>()
  private gate: { lo: number; hi: number; open: Promise<void> } | null = null

  /** A null member is a copy that is absent (missing device, or failed earlier). */
  constructor(readonly members: (BlockDev | null)[], private readonly opts: MirrorOptions = {}) {
    if (members.length < 1) throw new VsmError('EINVAL', 'mirror needs at least one copy')
    this.failed = members.map((m) => m === null)
    this.writeOnly = members.map(() => false)
    this.errors = members.map((m) => (m === null ? 'absent' : undefined))
    const present = members.filter((m): m is BlockDev => m !== null)
    if (present.length === 0) throw new VsmError('ENODEV', 'mirror has no copy present')
    this.size = opts.size ?? Math.min(...present.map((m) => m.size))
    for (const m of present) {
      if (m.size < this.size) throw new VsmError('EINVAL', `mirror copy of ${m.size} bytes is smaller than the volume (${this.size})`)
    }
    if (opts.log) this.log = new DirtyRegionLog(this.size, opts.log, this)
  }

  /** Copies that can be read. */
  get healthyCount(): number {
    let n = 0
    for (let i = 0; i < this.failed.length; i++) if (this.readable(i)) n++
    return n
  }

  get degraded(): boolean { return this.healthyCount < this.members.length }

  private readable(i: number): boolean { return !this.failed[i] && !this.writeOnly[i] }

  isHealthy(i: number): boolean { return !this.failed[i] }

  /** Fail copy i unless it is the last readable one; resolves once the failure is recorded. */
  failMember(i: number, err: unknown): Promise<void> {
    if (this.failed[i]) return this.failing
    if (this.readable(i) && this.healthyCount <= 1) return Promise.resolve()
    this.failed[i] = true
    this.writeOnly[i] = false
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
      if (!this.readable(i)) continue
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
    const g = this.gate
    if (g && offset < g.hi && offset + buf.length > g.lo) return g.open.then(() => this.write(buf, offset))
    const w: InFlight = { lo: offset, hi: offset + buf.length, done: this.logged(buf, offset) }
    this.inflight.add(w)
    const drop = () => { this.inflight.delete(w) }
    w.done.then(drop, drop)
    return w.done as Promise<void>
  }

  private logged(buf: Buffer, offset: number): Promise<void> {
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
      const end = () => ok > 0 && this.healthyCount > 0 ? resolve() : reject(new VsmError('EIO',
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
   * copy the log's pending regions from a readable copy to every other present one.
   * Must run before the volume serves I/O. Returns (and records) bytes copied.
   */
  async resync(): Promise<number> {
    this.resyncedBytes = 0
    if (!this.log) return 0
    const ranges = this.log.pendingRanges()
    const targets = this.members.map((_, i) => i).filter((i) => !this.failed[i])
    if (ranges.length && targets.length > 1) {
      this.resyncedBytes = await this.copy(ranges, targets)
      await this.flush()
    }
    // while a copy is missing, pending bits are the record of what it must get back
    if (!this.degraded) await this.log.clearPending()
    return this.resyncedBytes
  }

  /** Volume byte ranges a copy absent since the bits were set may have missed. */
  missedRanges(): [number, number][] {
    return this.log ? this.log.missedRanges() : [[0, this.size]]
  }

  /** Put dev in as copy i, write-only until copyRanges() has brought it up to date. */
  attach(i: number, dev: BlockDev, log?: LogMember | null): void {
    if (!this.failed[i]) throw new VsmError('EBUSY', `mirror copy ${i} is in service`)
    if (dev.size < this.size) throw new VsmError('EINVAL', `new copy of ${dev.size} bytes is smaller than the volume (${this.size})`)
    this.members[i] = dev
    this.failed[i] = false
    this.writeOnly[i] = true
    this.errors[i] = undefined
    if (log !== undefined) this.log?.setMember(i, log)
  }

  /**
   * Copy ranges from readable copies to write-only copy i while I/O goes on; once
   * done, i is flushed and readable again. Returns bytes copied.
   */
  async copyRanges(i: number, ranges: [number, number][], opts: CopyOptions = {}): Promise<number> {
    if (!this.writeOnly[i]) throw new VsmError('EINVAL', `mirror copy ${i} is not being rebuilt`)
    // writes issued before i was attached did not include it: let them land first
    await Promise.all([...this.inflight].map((w) => w.done.catch(() => {})))
    const done = await this.copy(ranges, [i], opts)
    await this.members[i]!.flush()
    if (this.failed[i]) throw new VsmError('EIO', `mirror copy ${i} failed while being rebuilt: ${this.errors[i]}`)
    this.writeOnly[i] = false
    if (!this.degraded) await this.log?.clearPending()
    return done
  }

  /** Copy ranges chunk by chunk from the first readable copy to targets (others than the source). */
  private async copy(ranges: [number, number][], targets: number[], opts: CopyOptions = {}): Promise<number> {
    const chunk = Buffer.allocUnsafe(RESYNC_CHUNK)
    let done = 0
    for (const [lo, hi] of ranges) {
      for (let pos = lo; pos < Math.min(hi, this.size); pos += RESYNC_CHUNK) {
        const b = chunk.subarray(0, Math.min(RESYNC_CHUNK, hi - pos, this.size - pos))
        let open!: () => void
        this.gate = { lo: pos, hi: pos + b.length, open: new Promise<void>((r) => { open = r }) }
        try {
          await Promise.all([...this.inflight].filter((w) => w.lo < pos + b.length && w.hi > pos).map((w) => w.done.catch(() => {})))
          const from = await this.readAny(b, pos)
          await Promise.all(targets.map((t) => (t === from || this.failed[t]) ? undefined :
            this.members[t]!.write(b, pos).catch((e) => this.failMember(t, e))))
        } finally {
          this.gate = null
          open()
        }
        done += b.length
        await opts.onChunk?.(done, pos + b.length)
      }
    }
    return done
  }

  /** Fill b from the first readable copy that can; returns its index. */
  private async readAny(b: Buffer, pos: number): Promise<number> {
    let lastErr: unknown
    for (let i = 0; i < this.members.length; i++) {
      if (!this.readable(i)) continue
      try { await this.members[i]!.read(b, pos); return i } catch (e) { lastErr = e; await this.failMember(i, e) }
    }
    throw new VsmError('EIO', `mirror: no copy could be read at ${pos}: ${(lastErr as Error)?.message ?? 'no readable copy'}`)
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
