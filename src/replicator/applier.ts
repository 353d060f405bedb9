// The secondary's half of the mechanism: takes records off a link, refuses any out of
// sequence (a duplicate is acknowledged and dropped, a gap asks for a resend), applies
// them one at a time in seq order to the replica volumes, and at each flush barrier
// (or when enough has been applied since the last) flushes the volumes, records the
// durable position in the replica state and acknowledges it. Between a resync-begin
// and its resync-end (a bitmap resync, out of write order) it saves what each record
// overwrites in the resync snapshot first, so the image as of resync-begin stays whole.
// Also owns applyRecord, which the primary's local replay uses too, so both sites
// apply a record alike.
import { crc32 } from '../native/sums'
import { BlockDev, VsmError } from '../block/blockdev'
import { BLOCK, LogRecord, readSlots, writeSlot } from './log'
import { ResyncSnapshot } from './snapshot'
import type { SecondaryLink, ToSecondary } from './wire'

/** The replica state kept in the header slots of the secondary's `repl.GROUP` volume. */
export interface ReplicaState {
  logId: string; durable: number; counter: number; group: string; volumes: string[]
  /** A bitmap resync is open: the snapshot holds the replicas as they were after applying seq `point`. */
  resync?: { point: number } | null
  /** Why these replicas no longer follow their primary's log (rolled back to a resync snapshot). */
  detached?: string
  /**
   * vsm repl takeover made this site serve the group (DRBD's new current UUID): the
   * replicas held the primary's log `parent` up to seq `point`; `generation` names
   * what this site writes from then on.
   */
  takenOver?: TakeoverGeneration | null
  /** After a takeover, a failback made this site stop serving: it is the failback's source until it follows the old primary again. */
  steppedDown?: boolean
}

export interface TakeoverGeneration { generation: string; parent: string; point: number; at: number }

const ZERO_CHUNK = 1 << 20
/** repl verify compares a crc32 per block of this many bytes. */
export const VERIFY_BLOCK = 64 << 10

/** The crc32 of each VERIFY_BLOCK of buf (both sites sum a verify record's range alike). */
export function blockSums(buf: Buffer): number[] {
  const sums: number[] = []
  for (let at = 0; at < buf.length; at += VERIFY_BLOCK) sums.push(crc32(buf.subarray(at, Math.min(buf.length, at + VERIFY_BLOCK))))
  return sums
}

/** Applies one record to the group's volumes. A zero range is written only where it is not already zero. */
export async function applyRecord(volumes: BlockDev[], r: Pick<LogRecord, 'kind' | 'vol' | 'offset' | 'length' | 'data'>): Promise<void> {
  const dev = volumes[r.vol]
  if (r.kind === 'flush') { await Promise.all(volumes.map((v) => v.flush())); return }
  if (r.kind !== 'write' && r.kind !== 'zero') return
  if (!dev) throw new VsmError('EINVAL', `record for volume ${r.vol}: the group has ${volumes.length}`)
  if (r.kind === 'write') { await dev.write(r.data!, r.offset); return }
  await zeroRange(dev, r.offset, r.length)
}

/** Makes a range read as zeros, writing only where it does not already. */
async function zeroRange(dev: BlockDev, offset: number, length: number): Promise<void> {
  for (let at = 0; at < length; at += ZERO_CHUNK) {
    const buf = Buffer.alloc(Math.min(ZERO_CHUNK, length - at))
    await dev.read(buf, offset + at)
    if (buf.some((b) => b !== 0)) await dev.write(Buffer.alloc(buf.length), offset + at)
  }
}

/**
 * A discard through a tap, logged as a zero record: the volume may keep part of the
 * range (a layout without discard keeps it all, a mirror the partial 4 KiB blocks at its
 * ends), while the secondary applies zeros; what the discard left is zeroed, so both
 * sites read the same bytes.
 */
export async function discardAsZero(dev: BlockDev, offset: number, length: number): Promise<void> {
  await dev.discard?.(offset, length)
  await zeroRange(dev, offset, length)
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
  /** The store of the resync snapshot, made when first needed (it is as large as the replicas). */
  snapshotStore?: () => Promise<BlockDev>
  onEvent?: (event: string, detail: Record<string, unknown>) => void
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
  private lastHeard = 0
  /** Applied since the last durable point. */
  private pendingCount = 0
  private queued = 0
  private idleTimer: NodeJS.Timeout | null = null
  /** Records applied by this applier (since the daemon started): each seq once. */
  applied = 0
  private snapshot: ResyncSnapshot | null = null
  /** Bumped when records taken off a link are dropped unapplied (a resync could not begin): they are asked for again. */
  private generation = 0

  constructor(private readonly volumes: BlockDev[], private readonly stateDev: BlockDev, private state: ReplicaState, private readonly opts: ApplierOptions = {}) {
    this.durable = state.durable
    this.received = state.durable + 1
  }

  get durableSeq(): number { return this.durable }
  /** The last record applied (maybe not yet durable). */
  get appliedSeq(): number { return this.durable + this.pendingCount }
  get logId(): string { return this.state.logId }
  /** The seq the replicas' consistent image is at: the snapshot's point during a resync. */
  get resyncPoint(): number | null { return this.state.resync?.point ?? null }

  /** Reads the consistent image: the resync snapshot while one is open, else the replica. */
  async readConsistent(vol: number, buf: Buffer, offset: number): Promise<void> {
    if (this.state.resync) await (await this.openSnapshot()).read(vol, buf, offset)
    else await this.volumes[vol].read(buf, offset)
  }

  private async openSnapshot(): Promise<ResyncSnapshot> {
    if (!this.opts.snapshotStore) throw new VsmError('ENOTSUP', 'this secondary has no store for a resync snapshot')
    this.snapshot ??= await ResyncSnapshot.open(await this.opts.snapshotStore(), this.volumes)
    return this.snapshot
  }

  /** Serves one link; a newer link replaces the older (the primary reconnected). */
  attach(link: SecondaryLink): void {
    this.link?.close('replaced by a new connection')
    this.link = link
    this.lastHeard = Date.now()
    this.nacked = -1
    link.onMessage((m, data) => this.onMessage(link, m, data))
    link.onClose(() => { if (this.link === link) this.link = null })
    if (this.failed) { link.send({ t: 'error', code: 'EIO', message: this.failed.message }); link.close('failed'); return }
    link.send({ t: 'welcome', next: this.received, durable: this.durable })
  }

  /** Milliseconds since the primary was last heard on the current link (an idle primary pings). */
  get silentMs(): number { return this.link ? Date.now() - this.lastHeard : Infinity }

  private onMessage(link: SecondaryLink, m: ToSecondary, data?: Buffer): void {
    if (link !== this.link) return
    this.lastHeard = Date.now()
    if (m.t === 'ping') { link.send({ t: 'ack', next: this.received, durable: this.durable }); return }
    if (m.t !== 'rec') return
    if (m.seq < this.received) { link.send({ t: 'ack', next: this.received, durable: this.durable }); return }
    // the primary's log overflowed: the records before its resync-begin are replaced by the copies that follow it
    if (m.seq > this.received && m.kind !== 'resync-begin') {
      if (this.nacked !== this.received) { this.nacked = this.received; link.send({ t: 'nack', next: this.received }) }
      return
    }
    if (m.kind === 'write' && (!data || data.length !== m.length)) { link.close('write record without its data'); return }
    this.received = m.seq + 1
    this.queued++
    if (this.idleTimer) { clearTimeout(this.idleTimer); this.idleTimer = null }
    const rec = { ...m, data }
    const gen = this.generation
    this.applying = this.applying.then(() => (gen === this.generation ? this.apply(rec) : undefined)).then(() => this.whenIdle()).catch((e) => {
      this.queued--
      if ((e as VsmError).code === 'ENOSPC') {
        // no room for the snapshot: nothing of the resync is applied; the primary asks again after it reconnects
        this.generation++
        this.received = this.appliedSeq + 1
        this.opts.onEvent?.('resync-refused', { reason: (e as Error).message })
      } else this.failed ??= e as Error
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
    if (r.kind === 'resync-begin' ? r.seq < this.durable + 1 + this.pendingCount : r.seq !== this.durable + 1 + this.pendingCount) throw new VsmError('EIO', `applier out of order at ${r.seq}`)
    if (r.kind === 'resync-begin') { await this.beginResync(r.seq); return }
    if (r.kind === 'resync-end') { await this.endResync(r.seq); return }
    if (this.state.resync && (r.kind === 'write' || r.kind === 'zero')) await (await this.openSnapshot()).protect(r.vol, r.offset, r.length)
    await applyRecord(this.volumes, r)
    if (r.kind === 'verify') {
      const buf = Buffer.alloc(r.length)
      await this.volumes[r.vol].read(buf, r.offset)
      this.link?.send({ t: 'sums', seq: r.seq, sums: blockSums(buf) })
    }
    this.pendingCount++
    this.applied++
    this.opts.onApplied?.(r.seq)
    this.sinceDurable += r.kind === 'write' ? r.length : BLOCK
    this.sinceAck++
    if (r.kind === 'flush' || this.sinceDurable >= (this.opts.durableEvery ?? 8 << 20)) await this.makeDurable(r.seq, r.kind !== 'flush')
    else if (this.sinceAck >= (this.opts.ackEvery ?? 16)) { this.sinceAck = 0; this.link?.send({ t: 'ack', next: this.received, durable: this.durable }) }
  }

  /**
   * Makes what was applied durable, then (unless one is open already: an overflow
   * during a resync keeps the first snapshot, the last consistent image) starts an
   * empty snapshot and records the open resync with the point it keeps.
   */
  private async beginResync(seq: number): Promise<void> {
    await Promise.all(this.volumes.map((v) => v.flush()))
    const point = this.appliedSeq
    if (!this.state.resync) {
      if (!this.opts.snapshotStore) throw new VsmError('ENOTSUP', 'this secondary has no store for a resync snapshot')
      this.snapshot = await ResyncSnapshot.begin(await this.opts.snapshotStore(), this.volumes)
    }
    await this.makeDurable(seq, false, { resync: this.state.resync ?? { point } })
    this.applied++
    this.opts.onApplied?.(seq)
    this.opts.onEvent?.('resync-begin', { seq, point: this.state.resync!.point })
  }

  /** Everything the resync copied is durable: the replicas are consistent again and the snapshot is dropped. */
  private async endResync(seq: number): Promise<void> {
    const had = this.state.resync
    await this.makeDurable(seq, true, { resync: null })
    this.snapshot = null
    this.applied++
    this.opts.onApplied?.(seq)
    if (had) this.opts.onEvent?.('resync-end', { seq })
  }

  private async makeDurable(seq: number, flushFirst: boolean, change: Partial<ReplicaState> = {}): Promise<void> {
    if (flushFirst) await Promise.all(this.volumes.map((v) => v.flush()))
    this.state = { ...this.state, ...change, durable: seq, counter: this.state.counter + 1 }
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

/**
 * Takes the replicas back to their resync snapshot (the primary is gone mid-resync and
 * this site must serve): restores the saved chunks, then records the point and that
 * the replicas no longer follow the log. Idempotent until that record is written.
 */
export async function rollbackResync(stateDev: BlockDev, volumes: BlockDev[], store: BlockDev): Promise<{ point: number; restoredBytes: number } | null> {
  const state = await loadReplicaState(stateDev)
  if (!state?.resync) return null
  const restoredBytes = await (await ResyncSnapshot.open(store, volumes)).rollback()
  const point = state.resync.point
  const next: ReplicaState = { ...state, resync: null, durable: point, counter: state.counter + 1, detached: `rolled back to the snapshot taken before a bitmap resync (seq ${point})` }
  await writeSlot(stateDev, next)
  return { point, restoredBytes }
}

/** A fresh replica state for a log this secondary has not seen. */
export async function initReplicaState(dev: BlockDev, s: Omit<ReplicaState, 'counter' | 'durable'>): Promise<ReplicaState> {
  const state: ReplicaState = { ...s, durable: 0, counter: 1 }
  await writeSlot(dev, state)
  await writeSlot(dev, { ...state, counter: 2 })
  return { ...state, counter: 2 }
}
