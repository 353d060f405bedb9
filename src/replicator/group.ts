// A replicated volume group on the primary: its log, its overflow bitmap, the taps of
// its volumes, the shipper and the link keeper. A write is logged (durably) before it
// reaches its volume; a flush flushes every volume of the group, then logs a barrier;
// space is reclaimed for records both flushed here and durable on the secondary. At
// open the retained records are replayed onto the volumes, so a volume never lacks a
// write the secondary will get. The initial sync reads each volume through the same log.
// When the log would overflow, the group logs to its bitmap instead (a write marks its
// regions durably before it reaches the volume) and, with the link up, copies the
// marked regions through the log until none is left, then logs again.
import { VsmError } from '../block/blockdev'
import { rangesBytes } from '../block/ranges'
import type { Jobs } from '../control/jobs'
import { applyRecord, blockSums, discardAsZero, VERIFY_BLOCK } from './applier'
import { RegionBitmap, regionSizeFor } from './bitmap'
import { BITMAP_BYTES, LogRecord, MAX_RECORD_DATA, recordsToReplay, ReplicationLog } from './log'
import { failBack, FailbackResult, mergeRanges, requestStepDown } from './failback'
import { checkTuning, flushWaitsForSecondary, KeeperOptions, LinkKeeper, Mode, stateOf, within } from './policy'
import type { Schedule } from './points'
import { Pacer, Shipper, ShipperOptions } from './shipper'
import { GroupIO, ReplicatedVolume } from './tap'
import type { PrimaryLink } from './wire'

export interface GroupConfig {
  group: string
  volumes: string[]
  /** ssh://USER@HOST[:PORT]/REMOTE_HOME */
  target: string
  mode: Mode
  identity?: string
  knownHosts?: string
  remoteVsm?: string
  /** The initial sync finished (every volume's contents went through the log). */
  synced: boolean
  paused: boolean
  /** Bytes per bit of the overflow bitmap, fixed when the group is made. */
  regionSize?: number
  /** --rate: bytes per second shipping and a failback's copy may use (absent: unlimited). */
  rate?: number
  /** sync-fallback: how long a flush waits for the secondary before the group goes async. */
  syncTimeoutMs?: number
  /** The secondary took the group over (learned from it, kept durably): nothing ships, this site must not serve the volumes. */
  takenOver?: TakenOver
  /** A failback the other site agreed to, run at the next start; copied: the copy is done and the records after the point dropped. */
  failback?: { requestedAt: number; copied: boolean }
  lastFailback?: FailbackResult & { generation: string }
  /** vsm repl schedule: a consistent point every everyMs, the newest keep kept (points.ts). */
  schedule?: Schedule
  /** Each kept point's last log record: the secondary holds the point once it holds that record. */
  points?: Record<string, number>
}

/** A point taken while the log overflowed into the bitmap: held by the secondary only once that resync ends. */
const AFTER_RESYNC = Number.MAX_SAFE_INTEGER

/**
 * What the old primary learned when its secondary answered `taken-over` (DRBD's
 * generation identifiers): the other site's new generation, born from this log at
 * seq `point`. This site changed `localChangedBytes` after that point and the other
 * `peerChangedBytes` since: both non-zero is a split brain, which is never resolved
 * here by guessing (vsm repl failback, after its --dry-run, discards this side).
 */
export interface TakenOver { generation: string; point: number; at: number; learnedAt: number; localChangedBytes: number; peerChangedBytes: number; splitBrain: boolean }

/** Ranges of a group's volumes this site would discard in a failback. */
export interface DiscardReport {
  group: string
  discardBytes: number
  ranges: Array<{ volume: string; offset: number; length: number }>
  /** false when records after the takeover point already left the log (a bitmap resync the other site rolled back): the ranges then miss some. */
  complete: boolean
}

export interface GroupOptions extends ShipperOptions {
  connect: () => Promise<PrimaryLink>
  onEvent?: (event: string, detail: Record<string, unknown>) => void
  backoff?: KeeperOptions<PrimaryLink>['backoff']
}

const SYNC_CHUNK = 1 << 20
const DEFAULT_SYNC_TIMEOUT_MS = 10_000
/** How long a clean stop waits for the secondary to hold the log's head. */
const DRAIN_MS = 10_000
/** repl verify compares this much per verify record; an answer not back in VERIFY_WAIT_MS is asked for again. */
const VERIFY_CHUNK = 4 << 20
const VERIFY_WAIT_MS = 30_000
/** A paused group's probe of its secondary at start gives up after this long. */
const PROBE_WAIT_MS = 5_000

export interface VerifyReport { group: string; comparedBytes: number; differentBytes: number; differences: Array<{ volume: string; offset: number; length: number }> }
/** A bitmap resync makes its copies durable in the log and settles their bits after this many bytes. */
const RESYNC_BATCH = 8 << 20

export class PrimaryGroup implements GroupIO {
  private readonly shipper: Shipper
  private readonly keeper: LinkKeeper<PrimaryLink>
  /** Lowest seq each write in progress can have got: records at or above it may not be in their volume yet. */
  private floors = new Map<number, number>()
  private localDurable: number
  private remoteDurable = 0
  private remoteWaiters: Array<{ seq: number; resolve: () => void }> = []
  private connected = false
  private lastError: string | null = null
  private syncJob: number | null = null
  private syncEnd = 0
  private closed = false
  private overflowing: Promise<void> | null = null
  private resyncing: Promise<void> | null = null
  /** seq of the last resync-end: a sync-mode flush made while logging to the bitmap waits for the secondary to have it. */
  private resyncEnd = 0
  private resyncedBytes = 0
  private afterResync: Array<() => void> = []
  private linkWaiters: Array<() => void> = []
  /** Held while a resync ends: new writes wait here so none lands between the last copy and resync-end. */
  private gate: Promise<void> | null = null
  private idleWaiters: Array<() => void> = []
  private sumWaiters = new Map<number, (sums: number[]) => void>()
  /** sync-fallback: acknowledging without the secondary since a flush waited past the timeout, until it catches up. */
  private fallenBack = false
  private contacted!: () => void
  /** Resolves once the secondary welcomed this site, said it took over, or could not be reached. */
  readonly firstContact = new Promise<void>((r) => { this.contacted = r })

  private constructor(readonly config: GroupConfig, private readonly log: ReplicationLog, private readonly bitmap: RegionBitmap, readonly taps: ReplicatedVolume[], private readonly opts: GroupOptions) {
    this.localDurable = log.headSeq
    this.shipper = new Shipper(log, opts)
    this.keeper = new LinkKeeper<PrimaryLink>({
      connect: opts.connect,
      backoff: opts.backoff,
      session: (link, up) => this.shipper.session(link, {
        hello: this.hello(),
        onDurable: (seq) => this.onRemoteDurable(seq),
        onWelcome: () => { up(); this.setConnected(true, null) },
        onSums: (seq, sums) => { this.sumWaiters.get(seq)?.(sums); this.sumWaiters.delete(seq) },
        onTakenOver: (m) => this.learnTakeover(m),
      }).then((why) => { this.setConnected(false, why); return why }),
      onEvent: (what, detail, retryInMs) => { this.lastError = detail; this.event(what, { detail, retryInMs }); void this.saving.then(this.contacted) },
    })
    taps.forEach((t, i) => { t.group = this; t.index = i })
  }

  /** A new group: formats its log on logDev's volume, then starts the initial sync and shipping. */
  static async create(log: ReplicationLog, taps: ReplicatedVolume[], opts: GroupOptions, jobs?: Jobs): Promise<PrimaryGroup> {
    const g = new PrimaryGroup(log.config as unknown as GroupConfig, log, await PrimaryGroup.bitmapOf(log, taps), taps, opts)
    g.start(jobs)
    return g
  }

  /**
   * An existing group at daemon start: replays the retained records onto the volumes
   * before anyone reads them (not a resync's copies: the volumes may be newer), and in
   * bitmap mode resumes the resync.
   */
  static async open(log: ReplicationLog, records: LogRecord[], taps: ReplicatedVolume[], opts: GroupOptions, jobs?: Jobs): Promise<PrimaryGroup> {
    const inner = taps.map((t) => t.inner)
    for (const r of recordsToReplay(records, log.mode)) await applyRecord(inner, r)
    await Promise.all(inner.map((v) => v.flush()))
    // a crash between dropping the records and appending resync-begin (nothing retained; with records retained, the
    // first is the resync-begin or the secondary holds it): a secondary behind the tail must find one there
    if (log.mode === 'bitmap' && records.length === 0) await log.append({ kind: 'resync-begin', vol: 0, offset: 0, length: 0 })
    const g = new PrimaryGroup(log.config as unknown as GroupConfig, log, await PrimaryGroup.bitmapOf(log, taps), taps, opts)
    if (g.config.takenOver && g.config.failback) await g.finishFailback()
    g.start(jobs)
    return g
  }

  private saveConfig(): Promise<void> { return this.log.setConfig(this.config as unknown as Record<string, unknown>) }

  /**
   * vsm repl failback: the other site is asked to step down (refused while its disks are
   * open, unless force); once it agreed, the failback is recorded and runs at this
   * site's next start (the caller restarts it), before the fs mounts.
   */
  async requestFailback(force: boolean): Promise<void> {
    if (!this.config.takenOver) throw new VsmError('EINVAL', `group ${this.config.group} was not taken over by its secondary: there is nothing to fail back`)
    await requestStepDown(this.opts.connect, { t: 'hello', ...this.hello() }, force)
    this.config.failback = { requestedAt: Date.now(), copied: this.config.failback?.copied ?? false }
    await this.saveConfig()
    this.event('failback-requested', { force, reason: 'the other site stepped down' })
  }

  /** Copies back what differs and hands back; on failure the group stays taken over (a copy not finished is redone next time). */
  private async finishFailback(): Promise<void> {
    const t = this.config.takenOver!, f = this.config.failback!
    const pacer = this.config.rate ? new Pacer(this.config.rate) : null
    this.event('failback-started', { copiedBefore: f.copied, reason: f.copied ? 'the copy is done: handing back' : 'copying back what either site changed since the takeover' })
    try {
      const r = await failBack({
        connect: this.opts.connect, hello: { t: 'hello', ...this.hello() }, log: this.log, bitmap: this.bitmap,
        volumes: this.taps.map((x) => x.inner), point: t.point, copied: f.copied,
        markCopied: async () => { f.copied = true; await this.saveConfig() },
        pace: pacer ? (n) => pacer.take(n) : undefined,
      })
      delete this.config.takenOver
      delete this.config.failback
      this.config.lastFailback = { ...r, generation: t.generation }
      await this.saveConfig()
      this.event('failed-back', { copiedBytes: r.copiedBytes, ranges: r.ranges, reason: 'this site serves the group again; the other follows its log' })
    } catch (e) {
      this.lastError = `failback: ${(e as Error).message}`
      if (!f.copied) delete this.config.failback
      await this.saveConfig()
      this.event('failback-failed', { error: (e as Error).message })
    }
  }

  private static bitmapOf(log: ReplicationLog, taps: ReplicatedVolume[]): Promise<RegionBitmap> {
    const sizes = taps.map((t) => t.size)
    const cfg = log.config as unknown as GroupConfig
    return RegionBitmap.open(log.bitmapArea, cfg.regionSize ?? regionSizeFor(sizes, BITMAP_BYTES), sizes, log.mode === 'bitmap')
  }

  private start(jobs?: Jobs): void {
    if (this.config.takenOver) { this.contacted(); return }
    if (!this.config.synced) {
      if (jobs) this.syncJob = jobs.start('repl-sync', (signal, progress) => this.initialSync(signal, progress))
      else void this.initialSync(new AbortController().signal, () => undefined).catch((e) => { this.lastError = (e as Error).message })
    }
    this.keeper.start(this.config.paused)
    if (this.config.paused) void this.probe().finally(() => this.saving.then(this.contacted))
    if (this.log.mode === 'bitmap') this.startResync()
  }

  private hello() { return { group: this.config.group, logId: this.log.logId, volumes: this.taps.map((t) => ({ name: t.name, size: t.size })) } }

  /** A paused group ships nothing, but must still hear whether its secondary took over: one hello, the first answer, closed. */
  private async probe(): Promise<void> {
    let link: PrimaryLink
    try { link = await this.opts.connect() } catch { return }
    await new Promise<void>((done) => {
      const timer = setTimeout(() => link.close('no answer to the probe'), PROBE_WAIT_MS)
      link.onClose(() => { clearTimeout(timer); done() })
      link.onMessage((m) => {
        if (m.t === 'taken-over') this.learnTakeover(m)
        link.close('probed')
      })
      link.send({ t: 'hello', ...this.hello() })
    })
  }

  private event(event: string, detail: Record<string, unknown>): void { this.opts.onEvent?.(event, { group: this.config.group, ...detail }) }

  private setConnected(up: boolean, why: string | null): void {
    if (this.connected === up) return
    this.connected = up
    if (up) this.lastError = null
    this.event(up ? 'connected' : 'disconnected', why ? { why } : {})
    if (up) { this.wakeLinkWaiters(); this.contacted() }
  }

  private saving: Promise<void> = Promise.resolve()

  /**
   * The secondary took the group over: what this site changed after the takeover point
   * (its records since, and what the overflow bitmap marks) decides between taken-over
   * and split brain. Recorded durably; shipping stops for good.
   */
  private learnTakeover(m: { generation: string; parent: string; point: number; at: number; changedBytes: number }): void {
    if (this.config.takenOver || m.parent !== this.log.logId) return
    const local = this.discard(m.point).discardBytes
    const takenOver: TakenOver = { generation: m.generation, point: m.point, at: m.at, learnedAt: Date.now(), localChangedBytes: local, peerChangedBytes: m.changedBytes, splitBrain: local > 0 && m.changedBytes > 0 }
    this.config.takenOver = takenOver
    void this.keeper.stop()
    this.saving = this.log.setConfig(this.config as unknown as Record<string, unknown>).catch((e) => { this.lastError = `recording the takeover: ${(e as Error).message}` })
    void this.saving.then(this.contacted)
    this.releaseWaiters()
    this.event(takenOver.splitBrain ? 'split-brain' : 'taken-over', {
      generation: m.generation, takenOverAtSeq: m.point, localChangedBytes: local, peerChangedBytes: m.changedBytes,
      reason: takenOver.splitBrain ? 'both sites wrote after the takeover: nothing is resolved until vsm repl failback' : 'the secondary serves the group now',
    })
  }

  /**
   * What a failback would discard here: every write or zero logged after seq `point`
   * (the records the other site never applied), and the regions the overflow bitmap
   * marks, merged per volume.
   */
  discard(point = this.config.takenOver?.point ?? this.log.headSeq): DiscardReport {
    const merged = mergeRanges([
      ...this.log.changesAfter(point).map((c) => [c.vol, c.offset, c.length] as [number, number, number]),
      ...this.bitmap.marked().map((r) => [r.vol, r.offset, r.length] as [number, number, number]),
    ])
    const ranges = merged.map(([vol, offset, length]) => ({ volume: this.taps[vol].name, offset, length }))
    return { group: this.config.group, discardBytes: ranges.reduce((n, r) => n + r.length, 0), ranges, complete: this.log.tailSeq <= point + 1 || this.log.gapFrom !== null }
  }


  private wakeLinkWaiters(): void { for (const w of this.linkWaiters.splice(0)) w() }

  /** Resolves once the link is up and not paused, or the group closes. */
  private linkUp(): Promise<void> {
    if ((this.connected && !this.config.paused) || this.closed) return Promise.resolve()
    return new Promise((r) => this.linkWaiters.push(r))
  }

  // ---- the data path (GroupIO) ----

  private nextWriteId = 0

  private enter(): number {
    const id = this.nextWriteId++
    this.floors.set(id, this.log.headSeq + 1)
    return id
  }

  private leave(id: number): void {
    this.floors.delete(id)
    if (this.floors.size === 0) for (const w of this.idleWaiters.splice(0)) w()
  }

  /**
   * Runs a write or zero of range [offset, offset+length) of tap: logged when the log
   * takes it (the records durable before the volume is touched), else marked in the
   * bitmap (durably, before the volume is touched); an overflow happens on the way.
   */
  private async change(tap: ReplicatedVolume, offset: number, length: number, records: Array<Parameters<ReplicationLog['tryAppend']>[0]>, apply: () => Promise<void>): Promise<void> {
    if (this.closed) throw new VsmError('EIO', `replication group ${this.config.group} is closed`)
    while (this.gate) await this.gate
    const release = await tap.locks.lock(offset, length)
    const id = this.enter()
    try {
      let seqs = await Promise.all(records.map((r) => this.log.tryAppend(r)))
      if (this.log.mode === 'log' && seqs.every((s) => s === null)) {
        // the log may be full of records the secondary has and only a local flush keeps: make room first
        await this.flushLocal()
        seqs = await Promise.all(records.map((r) => this.log.tryAppend(r)))
      }
      if (seqs.every((s) => s !== null)) {
        await this.log.sync()
        this.shipper.kick()
      } else {
        await this.overflow()
        await this.bitmap.mark(tap.index, offset, length)
      }
      await apply()
    } finally {
      this.leave(id)
      release()
    }
  }

  write(tap: ReplicatedVolume, buf: Buffer, offset: number): Promise<void> {
    const records = []
    for (let at = 0; at < buf.length; at += MAX_RECORD_DATA) {
      const part = buf.subarray(at, Math.min(buf.length, at + MAX_RECORD_DATA))
      records.push({ kind: 'write' as const, vol: tap.index, offset: offset + at, length: part.length, data: part })
    }
    return this.change(tap, offset, buf.length, records, () => tap.inner.write(buf, offset))
  }

  zero(tap: ReplicatedVolume, offset: number, length: number): Promise<void> {
    return this.change(tap, offset, length, [{ kind: 'zero', vol: tap.index, offset, length }], () => discardAsZero(tap.inner, offset, length))
  }

  /** Flushes the volumes: every record appended before, whose write has reached its volume, need not be replayed; reclaims. */
  private async flushLocal(): Promise<void> {
    let covered = this.log.headSeq
    for (const f of this.floors.values()) covered = Math.min(covered, f - 1)
    await Promise.all(this.taps.map((t) => t.inner.flush()))
    this.localDurable = Math.max(this.localDurable, covered)
    this.reclaim()
  }

  async flush(): Promise<void> {
    await this.flushLocal()
    const seq = await this.log.tryAppend({ kind: 'flush', vol: 0, offset: 0, length: 0 })
    const waits = () => flushWaitsForSecondary(this.config, this.fallenBack)
    if (seq === null) {
      // logging to the bitmap: the marks were durable before the writes; a sync-mode flush waits for the resync to end
      await this.overflow()
      if (this.log.mode === 'bitmap' && waits()) await this.syncWait(new Promise<void>((r) => this.afterResync.push(r)))
      if (waits()) await this.syncWait(this.remoteAt(this.resyncEnd))
      return
    }
    await this.log.sync()
    this.shipper.kick()
    if (waits()) await this.syncWait(this.remoteAt(seq))
  }

  /** sync-fallback: a flush that waits on the secondary longer than --sync-timeout turns the group async until it catches up. */
  private async syncWait(p: Promise<void>): Promise<void> {
    if (this.config.mode !== 'sync-fallback') return p
    if (!(await within(p, this.config.syncTimeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS))) this.fallBack()
  }

  private fallBack(): void {
    if (this.fallenBack) return
    this.fallenBack = true
    this.event('sync-fallback', { reason: `a flush waited ${(this.config.syncTimeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS) / 1000} s for the secondary${this.connected ? '' : ' (link down)'}: acknowledging without it until it catches up`, lagBytes: this.log.bytesAfter(this.remoteDurable) })
    this.releaseWaiters()
  }

  /** Flushes waiting for the secondary return now (paused, fallen back to async, or taken over). */
  private releaseWaiters(): void {
    const w = this.remoteWaiters; this.remoteWaiters = []; for (const x of w) x.resolve()
    for (const x of this.afterResync.splice(0)) x()
  }

  // ---- log overflow and the bitmap resync ----

  /**
   * The log is full (or already in bitmap mode): marks the retained records the
   * secondary does not hold durably in the bitmap, drops them and starts logging to
   * the bitmap. Every caller waits until that is on disk, since its own write then
   * reaches the volume with only a bitmap mark behind it.
   */
  private overflow(): Promise<void> {
    if (this.log.mode === 'bitmap' && !this.overflowing) return Promise.resolve()
    this.overflowing ??= (async () => {
      const lagBytes = this.log.bytesAfter(this.remoteDurable)
      const seq = await this.log.overflow(async (retained) => {
        const held = this.remoteDurable
        for (const r of retained) if (r.seq > held && (r.kind === 'write' || r.kind === 'zero')) this.bitmap.set(r.vol, r.offset, r.length)
        await this.bitmap.persistAll()
        return held + 1
      }, () => this.bitmap.dirtyBytes)
      this.event('logging-to-bitmap', { reason: `the log (${this.log.capacity} bytes) is full with ${lagBytes} bytes the secondary lacks`, dirtyBytes: this.bitmap.dirtyBytes, resyncBeginSeq: seq })
      this.startResync()
    })().finally(() => { this.overflowing = null })
    return this.overflowing
  }

  private startResync(): void {
    this.resyncing ??= this.resync().catch((e) => {
      if (this.closed) return
      this.lastError = (e as Error).message
      this.event('resync-failed', { error: (e as Error).message })
    }).finally(() => { this.resyncing = null })
  }

  /**
   * While the link is up: copies each marked region into the log (read under its range
   * lock, its bit taken at once so a later write marks it again), makes a batch of
   * copies durable, then lets their bits go from disk; ends when a pass finds none.
   */
  private async resync(): Promise<void> {
    let cursor = 0
    let announced = false
    while (!this.closed && this.log.mode === 'bitmap') {
      await this.linkUp()
      if (this.closed) return
      if (!announced) { announced = true; this.event('resync-started', { dirtyBytes: this.bitmap.dirtyBytes }) }
      const taken: number[] = []
      let bytes = 0
      while (bytes < RESYNC_BATCH) {
        let r = this.bitmap.next(cursor)
        if (r < 0 && cursor > 0) r = this.bitmap.next(cursor = 0)
        if (r < 0) break
        cursor = r + 1
        taken.push(r)
        bytes += await this.copyRegion(r)
      }
      if (taken.length) {
        await this.log.sync()
        this.shipper.kick()
        await this.bitmap.settle(taken)
        this.resyncedBytes += bytes
        continue
      }
      if (await this.endResync()) return
    }
  }

  /** Appends a copy of region r; it is shipped once durable, without waiting for the batch (the log may have room only for part of one). */
  private async copyRegion(r: number): Promise<number> {
    const { vol, offset, length } = this.bitmap.region(r)
    const tap = this.taps[vol]
    const buf = Buffer.alloc(length)
    const release = await tap.locks.lock(offset, length)
    try {
      this.bitmap.take(r)
      await tap.inner.read(buf, offset)
    } finally { release() }
    const appends: Promise<number>[] = []
    for (let at = 0; at < length; at += MAX_RECORD_DATA) {
      const part = buf.subarray(at, Math.min(length, at + MAX_RECORD_DATA))
      const zero = !part.some((b) => b !== 0)
      appends.push(this.log.append(zero ? { kind: 'zero', vol, offset: offset + at, length: part.length } : { kind: 'write', vol, offset: offset + at, length: part.length, data: part }))
    }
    await Promise.all(appends)
    this.log.sync().then(() => this.shipper.kick(), () => undefined)
    return length
  }

  /** With writes held off and none in flight: if nothing is marked, resync-end goes in the log and the group logs again. */
  private async endResync(): Promise<boolean> {
    let open!: () => void
    this.gate = new Promise((r) => { open = r })
    try {
      if (this.floors.size) await new Promise<void>((r) => this.idleWaiters.push(r))
      if (this.bitmap.dirtyRegions > 0) return false
      this.resyncEnd = await this.log.endOverflow()
      this.localDurable = Math.max(this.localDurable, this.resyncEnd)
      this.shipper.kick()
      for (const w of this.afterResync.splice(0)) w()
      this.event('resync-done', { resyncEndSeq: this.resyncEnd, copiedBytes: this.resyncedBytes })
      const points = this.config.points ?? {}
      for (const n of Object.keys(points)) if (points[n] === AFTER_RESYNC) points[n] = this.resyncEnd
      await this.saveConfig()
      return true
    } finally {
      this.gate = null
      open()
    }
  }

  private remoteAt(seq: number): Promise<void> {
    if (this.remoteDurable >= seq) return Promise.resolve()
    return new Promise((resolve) => this.remoteWaiters.push({ seq, resolve }))
  }

  private onRemoteDurable(seq: number): void {
    if (seq <= this.remoteDurable) return
    this.remoteDurable = seq
    this.reclaim()
    const ready = this.remoteWaiters.filter((w) => w.seq <= seq)
    this.remoteWaiters = this.remoteWaiters.filter((w) => w.seq > seq)
    for (const w of ready) w.resolve()
    if (this.fallenBack && this.log.mode === 'log' && seq >= this.log.headSeq) {
      this.fallenBack = false
      this.event('sync-restored', { reason: 'the secondary caught up: flushes wait for it again' })
    }
    if (!this.config.synced && this.syncJob === null && this.syncEnd > 0 && seq >= this.syncEnd) this.event('synced', {})
  }

  /** Records both flushed here (a resync's copies need not be: they came from the volumes) and durable on the secondary. */
  private reclaim(): void { this.log.reclaim(Math.min(this.log.mode === 'bitmap' ? this.log.headSeq : this.localDurable, this.remoteDurable)) }

  // ---- initial sync ----

  /**
   * Sends the volumes' contents through the log, a chunk at a time under the range lock
   * (zero chunks as zero records); only the ranges each volume may have written. The
   * rest is already zeros on the secondary: a group's replicas are new volumes there (it
   * refuses to adopt one it has), and whatever is written after the ranges are asked
   * for reaches the log anyway.
   */
  private async initialSync(signal: AbortSignal, progress: (done: number, total?: number) => void): Promise<{ copiedBytes: number; skippedBytes: number }> {
    const plan = await Promise.all(this.taps.map(async (tap) => ({ tap, ranges: await tap.written() })))
    const total = plan.reduce((n, p) => n + rangesBytes(p.ranges), 0)
    let done = 0
    for (const { tap, ranges } of plan) {
      for (const [lo, hi] of ranges) for (let off = lo; off < hi; off += SYNC_CHUNK) {
        if (signal.aborted || this.closed) throw new VsmError('ECANCELED', 'initial sync stopped')
        const len = Math.min(SYNC_CHUNK, hi - off)
        const release = await tap.locks.lock(off, len)
        try {
          const buf = Buffer.alloc(len)
          await tap.inner.read(buf, off)
          const zero = !buf.some((b) => b !== 0)
          await this.log.append(zero ? { kind: 'zero', vol: tap.index, offset: off, length: len } : { kind: 'write', vol: tap.index, offset: off, length: len, data: buf })
        } finally {
          release()
        }
        await this.log.sync()
        this.shipper.kick()
        if (this.log.usedBytes > this.log.capacity / 2) await this.flushLocal()
        done += len
        progress(done, total)
      }
    }
    // a barrier closes the sync: the secondary makes it all durable and says so
    this.syncEnd = await this.log.append({ kind: 'flush', vol: 0, offset: 0, length: 0 })
    await this.log.sync()
    this.shipper.kick()
    await this.log.setConfig({ ...this.config, synced: true } as unknown as Record<string, unknown>)
    this.config.synced = true
    this.syncJob = null
    const result = { copiedBytes: done, skippedBytes: this.taps.reduce((n, t) => n + t.size, 0) - done }
    this.event('sync-done', { seq: this.syncEnd, ...result })
    return result
  }

  // ---- online verify ----

  /**
   * Compares every volume with the secondary, VERIFY_CHUNK at a time: reads the chunk
   * and appends a verify record under the chunk's range lock, so the secondary sums the
   * chunk exactly as it held it then (every earlier write to it before, every later one
   * after); compares a crc32 per VERIFY_BLOCK and reports the ranges that differ.
   */
  async verify(signal: AbortSignal, progress: (done: number, total?: number) => void): Promise<VerifyReport> {
    const total = this.taps.reduce((n, t) => n + t.size, 0)
    const differences: VerifyReport['differences'] = []
    let done = 0
    for (const tap of this.taps) {
      for (let off = 0; off < tap.size; off += VERIFY_CHUNK) {
        const len = Math.min(VERIFY_CHUNK, tap.size - off)
        const [mine, theirs] = await this.verifyChunk(tap, off, len, signal)
        mine.forEach((sum, i) => {
          if (sum === theirs[i]) return
          const at = off + i * VERIFY_BLOCK, length = Math.min(VERIFY_BLOCK, off + len - at)
          const last = differences[differences.length - 1]
          if (last && last.volume === tap.name && last.offset + last.length === at) last.length += length
          else differences.push({ volume: tap.name, offset: at, length })
        })
        done += len
        progress(done, total)
      }
    }
    const report = { group: this.config.group, comparedBytes: done, differentBytes: differences.reduce((n, d) => n + d.length, 0), differences }
    this.event('verified', { comparedBytes: report.comparedBytes, differentBytes: report.differentBytes, ranges: differences.length })
    return report
  }

  private async verifyChunk(tap: ReplicatedVolume, off: number, len: number, signal: AbortSignal): Promise<[number[], number[]]> {
    for (;;) {
      if (signal.aborted || this.closed) throw new VsmError('ECANCELED', 'verify stopped')
      await this.linkUp()
      const buf = Buffer.alloc(len)
      const release = await tap.locks.lock(off, len)
      let seq: number | null
      try {
        await tap.inner.read(buf, off)
        seq = await this.log.tryAppend({ kind: 'verify', vol: tap.index, offset: off, length: len })
      } finally { release() }
      if (seq === null) throw new VsmError('EBUSY', `group ${this.config.group} is logging to its bitmap: verify once the resync is done (vsm repl status)`)
      const answer = new Promise<number[] | null>((resolve) => {
        const timer = setTimeout(() => { this.sumWaiters.delete(seq!); resolve(null) }, VERIFY_WAIT_MS)
        this.sumWaiters.set(seq!, (sums) => { clearTimeout(timer); resolve(sums) })
      })
      await this.log.sync()
      this.shipper.kick()
      const theirs = await answer
      if (theirs) return [blockSums(buf), theirs]
    }
  }

  // ---- control ----

  /**
   * vsm repl set: mode, rate (0: unlimited) and sync-fallback's timeout of a running group.
   * A flush that waited for the secondary under the old mode returns once the new one
   * would not make it wait.
   */
  async set(c: { mode?: Mode; rate?: number; syncTimeoutMs?: number }): Promise<void> {
    if (this.config.takenOver) throw new VsmError('EINVAL', `group ${this.config.group} was taken over by its secondary: nothing ships from here until vsm repl failback`)
    checkTuning(c.mode ?? this.config.mode, c.rate || undefined, c.syncTimeoutMs)
    if (c.mode !== undefined && c.mode !== this.config.mode) {
      this.config.mode = c.mode
      this.fallenBack = false
    }
    if (c.rate !== undefined) {
      if (c.rate) this.config.rate = c.rate
      else delete this.config.rate
      this.shipper.setRate(this.config.rate)
    }
    if (c.syncTimeoutMs !== undefined) this.config.syncTimeoutMs = c.syncTimeoutMs
    await this.saveConfig()
    this.event('changed', { mode: this.config.mode, rate: this.config.rate ?? null, syncTimeoutMs: this.config.syncTimeoutMs ?? null })
    if (!flushWaitsForSecondary(this.config, this.fallenBack)) this.releaseWaiters()
  }

  async setSchedule(s: Schedule | null): Promise<void> {
    if (s) this.config.schedule = s
    else delete this.config.schedule
    await this.saveConfig()
    this.event('schedule', s ? { ...s } : { off: true })
  }

  async pointTaken(name: string): Promise<void> {
    (this.config.points ??= {})[name] = this.log.mode === 'bitmap' ? AFTER_RESYNC : this.log.headSeq
    await this.saveConfig()
  }

  onSecondary(name: string): boolean | null {
    const seq = this.config.points?.[name]
    return seq === undefined ? null : this.remoteDurable >= seq
  }

  async forgetPoints(names: string[]): Promise<void> {
    if (!names.length) return
    for (const n of names) delete this.config.points?.[n]
    await this.saveConfig()
  }

  async setPaused(paused: boolean): Promise<void> {
    this.config.paused = paused
    await this.saveConfig()
    this.keeper.setPaused(paused)
    this.event(paused ? 'paused' : 'resumed', {})
    // a sync-mode flush that was waiting does not wait for a paused link
    if (paused) this.releaseWaiters()
  }

  /** Drops the link now; the keeper reconnects (tests, and an operator forcing a reconnect). */
  dropLink(why: string): void { this.keeper.drop(why) }

  status() {
    const lagSince = this.log.timeAfter(this.remoteDurable)
    const t = this.config.takenOver
    return {
      group: this.config.group,
      role: 'primary',
      mode: this.config.mode,
      state: stateOf({ failed: false, paused: this.config.paused, bitmap: this.log.mode === 'bitmap', synced: this.config.synced && this.remoteDurable >= this.syncEnd, connected: this.connected, takenOver: t ? { splitBrain: t.splitBrain } : null }),
      lastFailback: this.config.lastFailback ?? null,
      ...(t ? {
        takenOver: t,
        next: `the secondary took this group over${t.splitBrain ? ' and both sites wrote since (split brain)' : ''}; this site does not serve it. Run vsm repl failback ${this.config.group} --dry-run to see what this site would discard, then vsm repl failback ${this.config.group}`,
      } : {}),
      target: this.config.target,
      volumes: this.config.volumes,
      lagBytes: this.log.bytesAfter(this.remoteDurable) + this.bitmap.dirtyBytes,
      /** Bytes of regions marked in the overflow bitmap and not yet copied. */
      bitmapDirtyBytes: this.bitmap.dirtyBytes,
      resyncedBytes: this.resyncedBytes,
      lagSeconds: lagSince === null ? 0 : Math.max(0, (Date.now() - lagSince) / 1000),
      logFill: this.log.usedBytes / this.log.capacity,
      rate: this.config.rate ?? null,
      schedule: this.config.schedule ?? null,
      ...(this.config.mode === 'sync-fallback' ? { syncTimeoutMs: this.config.syncTimeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS, fallenBack: this.fallenBack } : {}),
      sentBytes: this.shipper.sentBytes,
      logBytes: this.log.capacity,
      headSeq: this.log.headSeq,
      secondaryDurableSeq: this.remoteDurable,
      syncJob: this.syncJob,
      lastError: this.lastError,
    }
  }

  async close(): Promise<void> {
    // a clean stop ships what the link takes within DRAIN_MS (the fs's last commit comes just before), so the
    // secondary is not left behind until the next start; a link that is down or slow does not hold the stop
    if (this.connected && !this.config.paused && !this.config.takenOver && this.log.mode === 'log') {
      await this.log.sync().then(() => {
        this.shipper.kick()
        return within(this.remoteAt(this.log.headSeq), DRAIN_MS)
      }).catch(() => undefined)
    }
    this.closed = true
    this.wakeLinkWaiters()
    await this.keeper.stop()
    for (const t of this.taps) t.group = null
    await this.log.close()
    await this.resyncing
  }
}
