// Dirty-region log (write-intent bitmap, as md's bitmap) for one mirror, in volume
// coordinates. A region's bit is made durable on every healthy copy's device before
// the first write into it, so after a crash only regions whose bits are set can
// differ between copies, and resync copies those, not the whole volume. The hot path
// (a write into a region already dirty) does no I/O and allocates nothing; bits are
// cleared lazily after a flush has made the region's writes durable and the region
// has stayed idle for a whole flush interval (hysteresis, so a hot region does not
// pay a bitmap write + flush after every guest flush). Only regions that are dirty or
// being written are held in memory, so it costs nothing per region of the volume.
// Idle is counted in time as well as flushes (md's bitmap waits a few daemon_sleep
// periods): a guest that flushes after every write would otherwise see each region
// cleared between its visits and pay a durable bitmap write before nearly every write.
import { VsmError } from '../block/blockdev'
import type { DeviceBitmap } from './bitmap'
import { mergeRanges } from '../block/ranges'

export interface LogMember {
  bitmap: DeviceBitmap
  /** Offset in the device's data area of this copy's byte 0. */
  base: number
}

export interface LogHost {
  isHealthy(i: number): boolean
  /** Some copy is missing writes: keep every bit set, it is the record of what to copy back. */
  readonly degraded: boolean
  /** A copy's device could not record intent: fail that copy (resolves when recorded). */
  failMember(i: number, err: unknown): Promise<void>
}

const CLEAN = 0, MARKING = 1, DIRTY = 2

interface Region {
  state: number
  /** Writes in flight in the region. */
  inflight: number
  /** Flush epoch at the last start or end of a write in the region. */
  lastEpoch: number
  /** Date.now() at the last end of a write in the region. */
  lastAt: number
}

/**
 * Policy: how long a dirty region must stay idle before a flush clears it (md: a few
 * daemon_sleep periods). Longer: fewer durable bitmap writes, more to resync after a
 * crash or to copy back to a copy that was away. VSM_DRL_CLEAR_MS, read at each open.
 */
export const drlClearAfterMs = (): number => Number(process.env.VSM_DRL_CLEAR_MS ?? 5000)

export class DirtyRegionLog {
  readonly regionSize: number
  readonly regions: number
  /** Regions not clean or with writes in flight; a region absent is clean and idle. */
  private readonly live = new Map<number, Region>()
  private readonly marking = new Map<number, Promise<void>>()
  private readonly dirty = new Set<number>()
  private epoch = 1
  /** Epoch of the last flush that completed on every copy: writes ended before it began are on all of them. */
  private flushed = 0

  constructor(readonly size: number, private readonly members: (LogMember | null)[], private readonly host: LogHost,
    /** Idle time before a flush may clear a region (tests shorten it). */
    public clearAfterMs = drlClearAfterMs()) {
    let rs = 0
    for (const m of members) if (m) rs = Math.max(rs, m.bitmap.regionSize)
    if (rs === 0) throw new VsmError('EINVAL', 'dirty-region log needs at least one member bitmap')
    this.regionSize = rs
    this.regions = Math.ceil(size / rs)
  }

  /**
   * A copy was put in (replacement): record its intent bits from now on, and take the
   * regions dirty now too. Writes into those mark nothing, so without them a crash
   * that leaves this copy the only one in service would resync none of them (and its
   * sums, written at flush, would not match data written since).
   */
  setMember(i: number, m: LogMember | null): void {
    const old = this.members[i]
    for (const [r, g] of this.live) {
      if (g.state === CLEAN) continue
      const [lo, len] = this.span(r)
      m?.bitmap.hold(m.base + lo, len)
      old?.bitmap.release(old.base + lo, len)
    }
    this.members[i] = m
  }

  /** Make copy i's bits durable: before a copy put in by setMember goes into service. */
  async persistMember(i: number): Promise<void> {
    const m = this.members[i]
    if (m && this.host.isHealthy(i)) await m.bitmap.persist(true).catch((e) => this.host.failMember(i, e))
  }

  /** Regions currently marked dirty (tests, status). */
  get dirtyRegions(): number { return this.dirty.size }

  private span(r: number): [number, number] {
    const lo = r * this.regionSize
    return [lo, Math.min(this.regionSize, this.size - lo)]
  }

  /**
   * Called before a write to regions r0..r1. Returns undefined when they are all
   * already dirty (the hot path); otherwise a promise that resolves once their bits
   * are durable. The caller must call end(r0, r1) afterwards whatever happens.
   */
  begin(r0: number, r1: number): Promise<unknown> | undefined {
    let wait: Promise<void> | undefined
    let more: Promise<void>[] | undefined
    for (let r = r0; r <= r1; r++) {
      let g = this.live.get(r)
      if (!g) this.live.set(r, g = { state: CLEAN, inflight: 0, lastEpoch: 0, lastAt: 0 })
      g.inflight++
      g.lastEpoch = this.epoch
      if (g.state === DIRTY) continue
      const p = this.marking.get(r) ?? this.mark(r)
      if (!wait) wait = p
      else (more ??= [wait]).push(p)
    }
    return more ? Promise.all(more) : wait
  }

  end(r0: number, r1: number): void {
    const now = Date.now()
    for (let r = r0; r <= r1; r++) {
      const g = this.live.get(r)!
      g.inflight--
      g.lastEpoch = this.epoch
      g.lastAt = now
      if (g.state === CLEAN && g.inflight === 0) this.live.delete(r)
    }
  }

  /** Region r has a write starting (begin holds it in live until end). */
  private mark(r: number): Promise<void> {
    const g = this.live.get(r)!
    g.state = MARKING
    const p = this.doMark(r).then(
      () => { g.state = DIRTY; this.dirty.add(r); this.marking.delete(r) },
      (e) => { g.state = CLEAN; this.marking.delete(r); this.releaseRegion(r); throw e },
    )
    this.marking.set(r, p)
    return p
  }

  private async doMark(r: number): Promise<void> {
    const [lo, len] = this.span(r)
    // hold on every copy (in memory), so release stays symmetric even if a copy fails later
    for (const m of this.members) if (m) m.bitmap.hold(m.base + lo, len)
    let ok = 0
    let lastErr: unknown
    await Promise.all(this.members.map((m, i) => {
      if (!m || !this.host.isHealthy(i)) return undefined
      return m.bitmap.persist(true).then(() => { ok++ }, (e) => { lastErr = e; return this.host.failMember(i, e) })
    }))
    if (ok === 0) throw new VsmError('EIO', `cannot record write intent on any copy: ${(lastErr as Error)?.message ?? 'no healthy copy'}`)
  }

  private releaseRegion(r: number): void {
    const [lo, len] = this.span(r)
    for (const m of this.members) if (m) m.bitmap.release(m.base + lo, len)
  }

  /** Dirty region r, idle, is clean again. */
  private clean(r: number): void {
    this.live.delete(r)
    this.dirty.delete(r)
    this.releaseRegion(r)
  }

  /** Call before flushing the copies; pass the result to flushDone afterwards. */
  flushStart(): number {
    return ++this.epoch
  }

  /** The copies are flushed: clear regions idle since before the previous flush began, and for clearAfterMs. */
  flushDone(e: number): void {
    if (this.host.degraded) return
    this.flushed = e
    if (this.dirty.size === 0) return
    let cleared = false
    const before = Date.now() - this.clearAfterMs
    for (const r of this.dirty) {
      const g = this.live.get(r)!
      if (g.inflight !== 0 || g.lastEpoch >= e - 1 || g.lastAt > before) continue
      this.clean(r)
      cleared = true
    }
    // clearing is advisory (a stale set bit only costs resync time): write it, don't flush it
    if (cleared) for (const m of this.members) if (m) m.bitmap.persist(false).catch(() => {})
  }

  /**
   * A copy is about to leave: from now on set bits are the record of what it misses, so
   * clear first the regions the hysteresis kept set though their writes are on every
   * copy (idle since before the last complete flush), or it would be sent them again.
   */
  forgetSynced(): void {
    if (this.host.degraded) return
    let cleared = false
    for (const r of this.dirty) {
      const g = this.live.get(r)!
      if (g.inflight !== 0 || g.lastEpoch >= this.flushed) continue
      this.clean(r)
      cleared = true
    }
    if (cleared) for (const m of this.members) if (m) m.bitmap.persist(false).catch(() => {})
  }

  /** Clean shutdown after a successful flush: clear every bit and make that durable. */
  async releaseAll(): Promise<void> {
    if (!this.host.degraded) for (const r of this.dirty) if (this.live.get(r)!.inflight === 0) this.clean(r)
    await Promise.all(this.members.map((m, i) =>
      m && this.host.isHealthy(i) ? m.bitmap.persist(true).catch(() => {}) : undefined))
  }

  /** Volume byte ranges that were dirty when the devices were last loaded (unclean stop). */
  pendingRanges(): [number, number][] {
    return this.collect((m) => m.bitmap.pendingRanges(m.base, this.size))
  }

  private collect(get: (m: LogMember) => [number, number][]): [number, number][] {
    const all: [number, number][] = []
    this.members.forEach((m, i) => {
      if (!m || !this.host.isHealthy(i)) return
      for (const [lo, hi] of get(m)) all.push([lo - m.base, hi - m.base])
    })
    return mergeRanges(all)
  }

  /** Volume byte ranges whose bits are set now on healthy copies: what a returning copy may have missed. */
  missedRanges(): [number, number][] {
    return this.collect((m) => m.bitmap.setRanges(m.base, this.size))
  }

  /** The pending ranges have been resynced and flushed. */
  async clearPending(): Promise<void> {
    for (const m of this.members) if (m) m.bitmap.clearPending(m.base, this.size)
    await Promise.all(this.members.map((m, i) =>
      m && this.host.isHealthy(i) ? m.bitmap.persist(false).catch(() => {}) : undefined))
  }
}
