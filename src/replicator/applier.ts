// The secondary's half of the mechanism: takes records off a link, refuses any out of
// sequence (a duplicate is acknowledged and dropped, a gap asks for a resend), applies
// them one at a time in seq order to the replica volumes, and at each flush barrier
// (or when enough has been applied since the last) flushes the volumes, records the
// durable position in the replica state and acknowledges it. Also owns applyRecord,
// which the primary's local replay uses too, so both sites apply a record alike.
import { BlockDev, VsmError } from '../block/blockdev'
import { BLOCK, LogRecord, readSlots, writeSlot } from './log'
import type { SecondaryLink, ToSecondary } from './wire'

/** The replica state kept in the header slots of the secondary's `repl.GROUP` volume. */
export interface ReplicaState { logId: string; durable: number; counter: number; group: string; volumes: string[] }

const ZERO_CHUNK = 1 << 20

/** Applies one record to the group's volumes. A zero range is written only where it is not already zero. */
export async function applyRecord(volumes: BlockDev[], r: Pick<LogRecord, 'kind' | 'vol' | 'offset' | 'length' | 'data'>): Promise<void> {
  const dev = volumes[r.vol]
  if (r.kind === 'flush') { await Promise.all(volumes.map((v) => v.flush())); return }
  if (!dev) throw new VsmError('EINVAL', `record for volume ${r.vol}: the group has ${volumes.length}`)
  if (r.kind === 'write') { await dev.write(r.data!, r.offset); return }
  for (let at = 0; at < r.length; at += ZERO_CHUNK) {
    const buf = Buffer.alloc(Math.min(ZERO_CHUNK, r.length - at))
    await dev.read(buf, r.offset + at)
    if (buf.some((b) => b !== 0)) await dev.write(Buffer.alloc(buf.length), r.offset + at)
  }
}

export async function loadReplicaState(dev: BlockDev): Promise<ReplicaState | null> { return readSlots<ReplicaState>(dev) }

export interface ApplierOptions {
  /** Flush and acknowledge after this many applied bytes without a barrier. */
  durableEvery?: number
  /** Acknowledge receipt (not durability) after this many records, so the shipper's window moves. */
  ackEvery?: number
  /** With records applied and none waiting, make them durable after this long (async mode's lag drains to 0 when idle). */
  idleDurableMs?: number
  /** Observes each applied record (tests check order and that nothing is applied twice). */
  onApplied?: (seq: number) => void
}

export class Applier {
  /** The next seq accepted off the link. */
  private received: number
  private durable: number
  private applying: Promise<void> = Promise.resolve()
  private sinceDurable = 0
  private sinceAck = 0
  private nacked = -1
  private link: SecondaryLink | null = null
  private failed: Error | null = null
  /** Applied since the last durable point. */
  private pendingCount = 0
  private queued = 0
  private idleTimer: NodeJS.Timeout | null = null
  /** Records applied by this applier (since the daemon started): each seq once. */
  applied = 0

  constructor(private readonly volumes: BlockDev[], private readonly stateDev: BlockDev, private state: ReplicaState, private readonly opts: ApplierOptions = {}) {
    this.durable = state.durable
    this.received = state.durable + 1
  }

  get durableSeq(): number { return this.durable }
  /** The last record applied (maybe not yet durable). */
  get appliedSeq(): number { return this.durable + this.pendingCount }
  get logId(): string { return this.state.logId }

  /** Serves one link; a newer link replaces the older (the primary reconnected). */
  attach(link: SecondaryLink): void {
    this.link?.close('replaced by a new connection')
    this.link = link
    this.nacked = -1
    link.onMessage((m, data) => this.onMessage(link, m, data))
    link.onClose(() => { if (this.link === link) this.link = null })
    if (this.failed) { link.send({ t: 'error', code: 'EIO', message: this.failed.message }); link.close('failed'); return }
    link.send({ t: 'welcome', next: this.received, durable: this.durable })
  }

  private onMessage(link: SecondaryLink, m: ToSecondary, data?: Buffer): void {
    if (link !== this.link) return
    if (m.t === 'ping') { link.send({ t: 'ack', next: this.received, durable: this.durable }); return }
    if (m.t !== 'rec') return
    if (m.seq < this.received) { link.send({ t: 'ack', next: this.received, durable: this.durable }); return }
    if (m.seq > this.received) {
      if (this.nacked !== this.received) { this.nacked = this.received; link.send({ t: 'nack', next: this.received }) }
      return
    }
    if (m.kind === 'write' && (!data || data.length !== m.length)) { link.close('write record without its data'); return }
    this.received++
    this.queued++
    if (this.idleTimer) { clearTimeout(this.idleTimer); this.idleTimer = null }
    const rec = { ...m, data }
    this.applying = this.applying.then(() => this.apply(rec)).then(() => this.whenIdle()).catch((e) => {
      this.failed ??= e as Error
      this.link?.send({ t: 'error', code: (e as VsmError).code ?? 'EIO', message: (e as Error).message })
      this.link?.close('apply failed')
    })
  }

  private whenIdle(): void {
    if (--this.queued > 0 || this.pendingCount === 0 || this.failed) return
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null
      if (this.queued > 0 || this.pendingCount === 0) return
      this.applying = this.applying.then(() => (this.queued === 0 && this.pendingCount > 0 ? this.makeDurable(this.durable + this.pendingCount, true) : undefined)).catch((e) => { this.failed ??= e as Error })
    }, this.opts.idleDurableMs ?? 200)
  }

  private async apply(r: LogRecord): Promise<void> {
    if (this.failed) return
    if (r.seq !== this.durable + 1 + this.pendingCount) throw new VsmError('EIO', `applier out of order at ${r.seq}`)
    await applyRecord(this.volumes, r)
    this.pendingCount++
    this.applied++
    this.opts.onApplied?.(r.seq)
    this.sinceDurable += r.kind === 'write' ? r.length : BLOCK
    this.sinceAck++
    if (r.kind === 'flush' || this.sinceDurable >= (this.opts.durableEvery ?? 8 << 20)) await this.makeDurable(r.seq, r.kind !== 'flush')
    else if (this.sinceAck >= (this.opts.ackEvery ?? 16)) { this.sinceAck = 0; this.link?.send({ t: 'ack', next: this.received, durable: this.durable }) }
  }

  private async makeDurable(seq: number, flushFirst: boolean): Promise<void> {
    if (flushFirst) await Promise.all(this.volumes.map((v) => v.flush()))
    this.state = { ...this.state, durable: seq, counter: this.state.counter + 1 }
    await writeSlot(this.stateDev, this.state)
    this.durable = seq
    this.pendingCount = 0
    this.sinceDurable = 0
    this.sinceAck = 0
    this.link?.send({ t: 'ack', next: this.received, durable: this.durable })
  }

  /** Waits for what was accepted to be applied, then makes it durable. */
  async close(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.link?.close('secondary closing')
    await this.applying
    if (!this.failed && this.pendingCount > 0) await this.makeDurable(this.durable + this.pendingCount, true)
  }
}

/** A fresh replica state for a log this secondary has not seen. */
export async function initReplicaState(dev: BlockDev, s: Omit<ReplicaState, 'counter' | 'durable'>): Promise<ReplicaState> {
  const state: ReplicaState = { ...s, durable: 0, counter: 1 }
  await writeSlot(dev, state)
  await writeSlot(dev, { ...state, counter: 2 })
  return { ...state, counter: 2 }
}
