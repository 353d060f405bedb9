// A replicated volume group on the primary: its log, the taps of its volumes, the
// shipper and the link keeper. A write is logged (durably) before it reaches its
// volume; a flush flushes every volume of the group, then logs a barrier; space is
// reclaimed for records both flushed here and durable on the secondary. At open the
// retained records are replayed onto the volumes, so a volume never lacks a write the
// secondary will get. The initial sync reads each volume through the same log.
import { VsmError } from '../block/blockdev'
import type { Jobs } from '../control/jobs'
import { applyRecord } from './applier'
import { LogRecord, MAX_RECORD_DATA, ReplicationLog } from './log'
import { flushWaitsForSecondary, KeeperOptions, LinkKeeper, Mode, stateOf } from './policy'
import { Shipper, ShipperOptions } from './shipper'
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
}

export interface GroupOptions extends ShipperOptions {
  connect: () => Promise<PrimaryLink>
  onEvent?: (event: string, detail: Record<string, unknown>) => void
  backoff?: KeeperOptions<PrimaryLink>['backoff']
}

const SYNC_CHUNK = 1 << 20

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

  private constructor(readonly config: GroupConfig, private readonly log: ReplicationLog, readonly taps: ReplicatedVolume[], private readonly opts: GroupOptions) {
    this.localDurable = log.headSeq
    this.shipper = new Shipper(log, opts)
    this.keeper = new LinkKeeper<PrimaryLink>({
      connect: opts.connect,
      backoff: opts.backoff,
      session: (link, up) => this.shipper.session(link, {
        hello: { group: config.group, logId: log.logId, volumes: taps.map((t) => ({ name: t.name, size: t.size })) },
        onDurable: (seq) => this.onRemoteDurable(seq),
        onWelcome: () => { up(); this.setConnected(true, null) },
      }).then((why) => { this.setConnected(false, why); return why }),
      onEvent: (what, detail, retryInMs) => { this.lastError = detail; this.event(what, { detail, retryInMs }) },
    })
    taps.forEach((t, i) => { t.group = this; t.index = i })
  }

  /** A new group: formats its log on logDev's volume, then starts the initial sync and shipping. */
  static async create(log: ReplicationLog, taps: ReplicatedVolume[], opts: GroupOptions, jobs?: Jobs): Promise<PrimaryGroup> {
    const g = new PrimaryGroup(log.config as unknown as GroupConfig, log, taps, opts)
    g.start(jobs)
    return g
  }

  /** An existing group at daemon start: replays the retained records onto the volumes before anyone reads them. */
  static async open(log: ReplicationLog, records: LogRecord[], taps: ReplicatedVolume[], opts: GroupOptions, jobs?: Jobs): Promise<PrimaryGroup> {
    const inner = taps.map((t) => t.inner)
    for (const r of records) await applyRecord(inner, r)
    await Promise.all(inner.map((v) => v.flush()))
    const g = new PrimaryGroup(log.config as unknown as GroupConfig, log, taps, opts)
    g.start(jobs)
    return g
  }

  private start(jobs?: Jobs): void {
    if (!this.config.synced) {
      if (jobs) this.syncJob = jobs.start('repl-sync', (signal, progress) => this.initialSync(signal, progress))
      else void this.initialSync(new AbortController().signal, () => undefined).catch((e) => { this.lastError = (e as Error).message })
    }
    this.keeper.start(this.config.paused)
  }

  private event(event: string, detail: Record<string, unknown>): void { this.opts.onEvent?.(event, { group: this.config.group, ...detail }) }

  private setConnected(up: boolean, why: string | null): void {
    if (this.connected === up) return
    this.connected = up
    if (up) this.lastError = null
    this.event(up ? 'connected' : 'disconnected', why ? { why } : {})
  }

  // ---- the data path (GroupIO) ----

  private nextWriteId = 0

  private enter(): number {
    const id = this.nextWriteId++
    this.floors.set(id, this.log.headSeq + 1)
    return id
  }

  async write(tap: ReplicatedVolume, buf: Buffer, offset: number): Promise<void> {
    if (this.closed) throw new VsmError('EIO', `replication group ${this.config.group} is closed`)
    const release = await tap.locks.lock(offset, buf.length)
    const id = this.enter()
    try {
      const appends: Promise<number>[] = []
      for (let at = 0; at < buf.length; at += MAX_RECORD_DATA) {
        const part = buf.subarray(at, Math.min(buf.length, at + MAX_RECORD_DATA))
        appends.push(this.log.append({ kind: 'write', vol: tap.index, offset: offset + at, length: part.length, data: part }))
      }
      await Promise.all(appends)
      await this.log.sync()
      this.shipper.kick()
      await tap.inner.write(buf, offset)
    } finally {
      this.floors.delete(id)
      release()
    }
  }

  async zero(tap: ReplicatedVolume, offset: number, length: number): Promise<void> {
    const release = await tap.locks.lock(offset, length)
    const id = this.enter()
    try {
      await this.log.append({ kind: 'zero', vol: tap.index, offset, length })
      await this.log.sync()
      this.shipper.kick()
      await tap.inner.discard!(offset, length)
    } finally {
      this.floors.delete(id)
      release()
    }
  }

  async flush(): Promise<void> {
    let covered = this.log.headSeq
    for (const f of this.floors.values()) covered = Math.min(covered, f - 1)
    await Promise.all(this.taps.map((t) => t.inner.flush()))
    const seq = await this.log.append({ kind: 'flush', vol: 0, offset: 0, length: 0 })
    await this.log.sync()
    this.localDurable = Math.max(this.localDurable, covered)
    this.reclaim()
    this.shipper.kick()
    if (flushWaitsForSecondary(this.config.mode, this.config.paused)) await this.remoteAt(seq)
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
    if (!this.config.synced && this.syncJob === null && this.syncEnd > 0 && seq >= this.syncEnd) this.event('synced', {})
  }

  private reclaim(): void { this.log.reclaim(Math.min(this.localDurable, this.remoteDurable)) }

  // ---- initial sync ----

  /** Sends every volume's contents through the log, a chunk at a time under the range lock (zero chunks as zero records). */
  private async initialSync(signal: AbortSignal, progress: (done: number, total?: number) => void): Promise<void> {
    const total = this.taps.reduce((n, t) => n + t.size, 0)
    let done = 0
    for (const tap of this.taps) {
      for (let off = 0; off < tap.size; off += SYNC_CHUNK) {
        if (signal.aborted || this.closed) throw new VsmError('ECANCELED', 'initial sync stopped')
        const len = Math.min(SYNC_CHUNK, tap.size - off)
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
    this.event('sync-done', { seq: this.syncEnd })
  }

  // ---- control ----

  async setPaused(paused: boolean): Promise<void> {
    this.config.paused = paused
    await this.log.setConfig(this.config as unknown as Record<string, unknown>)
    this.keeper.setPaused(paused)
    this.event(paused ? 'paused' : 'resumed', {})
    // a sync-mode flush that was waiting does not wait for a paused link
    if (paused) { const w = this.remoteWaiters; this.remoteWaiters = []; for (const x of w) x.resolve() }
  }

  /** Drops the link now; the keeper reconnects (tests, and an operator forcing a reconnect). */
  dropLink(why: string): void { this.keeper.drop(why) }

  status() {
    const lagSince = this.log.timeAfter(this.remoteDurable)
    return {
      group: this.config.group,
      role: 'primary',
      mode: this.config.mode,
      state: stateOf({ failed: false, paused: this.config.paused, synced: this.config.synced && this.remoteDurable >= this.syncEnd, connected: this.connected }),
      target: this.config.target,
      volumes: this.config.volumes,
      lagBytes: this.log.bytesAfter(this.remoteDurable),
      lagSeconds: lagSince === null ? 0 : Math.max(0, (Date.now() - lagSince) / 1000),
      logFill: this.log.usedBytes / this.log.capacity,
      logBytes: this.log.capacity,
      headSeq: this.log.headSeq,
      secondaryDurableSeq: this.remoteDurable,
      syncJob: this.syncJob,
      lastError: this.lastError,
    }
  }

  async close(): Promise<void> {
    this.closed = true
    await this.keeper.stop()
    for (const t of this.taps) t.group = null
    await this.log.close()
  }
}
