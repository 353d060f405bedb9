// The replication log (VVR's SRL): one ordered, circular log of the writes, zero
// ranges and flush barriers of a volume group, kept on a pool volume so it is as
// redundant as the pool makes it. Owns the on-volume format (two header slots, then a
// ring of 4 KiB-aligned records, then an area the group keeps its overflow bitmap in),
// append with group commit, the scan that finds the retained records after a crash,
// reclaiming space, and the switch to and from bitmap mode (overflow discards the
// retained records once the group has marked them in its bitmap). Who ships records,
// when space may be reclaimed and what the bitmap holds is decided elsewhere
// (group.ts, shipper.ts, bitmap.ts).
import { crc32 } from '../native/sums'
import { BlockDev, VsmError, writeDurable } from '../block/blockdev'

export const BLOCK = 4096
const HEADER_SLOTS = 2
const RING_START = HEADER_SLOTS * BLOCK
const HEADER_MAGIC = 'VSMRLOG1'
const REC_MAGIC = 0x52454331 // 'REC1'
export const REC_HEADER = 64
/** Larger writes are split into records of at most this many bytes. */
export const MAX_RECORD_DATA = 1 << 20
/** The end of the log volume is the group's overflow bitmap (bitmap.ts). */
export const BITMAP_BYTES = 128 << 10

/**
 * verify: the secondary answers with the checksums of the range as it holds it at
 * this point of the stream (repl verify).
 * resync-begin: the log overflowed and the records since the header's gapFrom were
 * replaced by a bitmap; what follows up to resync-end are copies of dirty regions
 * (read from the volumes, so never replayed onto them). The secondary keeps a
 * snapshot from resync-begin until resync-end is durable.
 */
export type RecordKind = 'write' | 'zero' | 'flush' | 'resync-begin' | 'resync-end' | 'verify'
const KIND_CODE: Record<RecordKind | 'pad', number> = { write: 1, zero: 2, flush: 3, pad: 4, 'resync-begin': 5, 'resync-end': 6, verify: 7 }
const CODE_KIND = ['', 'write', 'zero', 'flush', 'pad', 'resync-begin', 'resync-end', 'verify'] as const
export type LogMode = 'log' | 'bitmap'

export interface LogRecord {
  seq: number
  kind: RecordKind
  /** Index of the volume in the group. */
  vol: number
  offset: number
  length: number
  /** ms since the epoch when appended: the secondary's lag in seconds is measured from it. */
  time: number
  /** The bytes of a write record. */
  data?: Buffer
}

export type NewRecord = Omit<LogRecord, 'seq' | 'time'>

/** What the header slots hold besides the ring position: the group's configuration. */
export interface LogHeader {
  logId: string
  /** Opens of this log; records carry it so a scan never takes a record left by an earlier life. */
  epoch: number
  tailLsn: number
  tailSeq: number
  counter: number
  config: Record<string, unknown>
  /** bitmap: writes go to the group's bitmap, not the log (absent in a log that never overflowed). */
  mode?: LogMode
  /** A secondary whose next seq is at least this may skip to the tail: what it lacks is in the bitmap. */
  gapFrom?: number
}

interface Entry { seq: number; lsn: number; size: number; kind: RecordKind; vol: number; offset: number; length: number; time: number }
/** Where a retained record wrote (what overflow must mark in the bitmap). */
export type RetainedRecord = Pick<Entry, 'seq' | 'kind' | 'vol' | 'offset' | 'length'>

/**
 * The records a primary replays onto its volumes at open: not the copies of a bitmap
 * resync (they were read from the volumes, which may hold newer data since), i.e. no
 * write or zero in bitmap mode, and none before the last resync-end otherwise.
 */
export function recordsToReplay(records: LogRecord[], mode: LogMode): LogRecord[] {
  if (mode === 'bitmap') return []
  let end = -1
  records.forEach((r, i) => { if (r.kind === 'resync-end') end = i })
  return records.slice(end + 1)
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m

function tagOf(logId: string): number { return crc32(Buffer.from(logId)) }

export function recordSize(kind: RecordKind, length: number): number {
  return roundUp(REC_HEADER + (kind === 'write' ? length : 0), BLOCK)
}

export function encodeRecord(r: LogRecord | (Omit<LogRecord, 'kind'> & { kind: 'pad' }), epoch: number, tag: number): Buffer {
  const dataLen = r.kind === 'write' ? r.length : 0
  const buf = Buffer.alloc(roundUp(REC_HEADER + dataLen, BLOCK))
  buf.writeUInt32LE(REC_MAGIC, 0)
  buf.writeUInt8(KIND_CODE[r.kind], 4)
  buf.writeUInt32LE(r.vol, 8)
  buf.writeUInt32LE(epoch, 12)
  buf.writeBigUInt64LE(BigInt(r.seq), 16)
  buf.writeBigUInt64LE(BigInt(r.offset), 24)
  buf.writeUInt32LE(r.length, 32)
  buf.writeUInt32LE(tag, 36)
  buf.writeBigUInt64LE(BigInt(r.time), 40)
  if (r.kind === 'write') {
    r.data!.copy(buf, REC_HEADER)
    buf.writeUInt32LE(crc32(r.data!), 48)
  }
  buf.writeUInt32LE(crc32(buf.subarray(0, 60)), 60)
  return buf
}

interface DecodedHeader { kind: RecordKind | 'pad'; vol: number; epoch: number; seq: number; offset: number; length: number; tag: number; time: number; dataCrc: number }

function decodeHeader(b: Buffer): DecodedHeader | null {
  if (b.readUInt32LE(0) !== REC_MAGIC || crc32(b.subarray(0, 60)) !== b.readUInt32LE(60)) return null
  const kind = CODE_KIND[b.readUInt8(4)]
  if (!kind) return null
  return {
    kind, vol: b.readUInt32LE(8), epoch: b.readUInt32LE(12), seq: Number(b.readBigUInt64LE(16)),
    offset: Number(b.readBigUInt64LE(24)), length: b.readUInt32LE(32), tag: b.readUInt32LE(36),
    time: Number(b.readBigUInt64LE(40)), dataCrc: b.readUInt32LE(48),
  }
}

/** A header slot: magic, crc, JSON. Also the secondary's replica state (applier.ts). */
export function encodeSlot(h: object): Buffer {
  const json = Buffer.from(JSON.stringify(h))
  if (json.length > BLOCK - 16) throw new VsmError('E2BIG', 'replication log header too large')
  const buf = Buffer.alloc(BLOCK)
  buf.write(HEADER_MAGIC, 0, 'latin1')
  buf.writeUInt32LE(json.length, 12)
  json.copy(buf, 16)
  buf.writeUInt32LE(crc32(buf.subarray(12, 16 + json.length)), 8)
  return buf
}

function decodeSlot<T>(buf: Buffer): T | null {
  if (buf.toString('latin1', 0, 8) !== HEADER_MAGIC) return null
  const len = buf.readUInt32LE(12)
  if (len > BLOCK - 16 || crc32(buf.subarray(12, 16 + len)) !== buf.readUInt32LE(8)) return null
  try { return JSON.parse(buf.toString('utf8', 16, 16 + len)) as T } catch { return null }
}

/** Reads both header slots; the valid one with the higher counter wins (a torn slot write leaves the other). */
export async function readSlots<T extends { counter: number }>(dev: BlockDev): Promise<T | null> {
  const buf = Buffer.alloc(RING_START)
  await dev.read(buf, 0)
  let best: T | null = null
  for (let i = 0; i < HEADER_SLOTS; i++) {
    const h = decodeSlot<T>(buf.subarray(i * BLOCK, (i + 1) * BLOCK))
    if (h && (!best || h.counter > best.counter)) best = h
  }
  return best
}

/** Writes a slot object (its counter already bumped) into the slot its counter names, durably. */
export function writeSlot(dev: BlockDev, h: { counter: number }): Promise<void> {
  return writeDurable(dev, encodeSlot(h), (h.counter % HEADER_SLOTS) * BLOCK)
}

export class ReplicationLog {
  private readonly ring: number
  private readonly tag: number
  /** Retained records, oldest first; seqs are contiguous. */
  private entries: Entry[] = []
  private headLsn: number
  private nextSeq: number
  /** Where reclaim has got to in memory; the header may still say an older tail. */
  private memTail: { lsn: number; seq: number }
  private allocChain: Promise<unknown> = Promise.resolve()
  private inflight = new Map<number, Promise<void>>()
  private durable: number
  private flushing: Promise<void> | null = null
  private spaceWaiters: Array<() => void> = []
  private headerWrite: Promise<void> = Promise.resolve()
  private failed: Error | null = null
  private closing = false

  private constructor(private readonly dev: BlockDev, private header: LogHeader) {
    this.ring = Math.floor((dev.size - RING_START - BITMAP_BYTES) / BLOCK) * BLOCK
    this.tag = tagOf(header.logId)
    this.headLsn = header.tailLsn
    this.nextSeq = header.tailSeq
    this.memTail = { lsn: header.tailLsn, seq: header.tailSeq }
    this.durable = header.tailSeq - 1
  }

  /** Makes a new, empty log on dev; anything there before is gone. */
  static async format(dev: BlockDev, logId: string, config: Record<string, unknown>): Promise<ReplicationLog> {
    const min = RING_START + BITMAP_BYTES + 4 * MAX_RECORD_DATA
    if (dev.size < min) throw new VsmError('EINVAL', `a replication log needs at least ${Math.ceil(min / (1 << 20))} MiB`)
    const header: LogHeader = { logId, epoch: 0, tailLsn: 0, tailSeq: 1, counter: 0, config, mode: 'log' }
    const log = new ReplicationLog(dev, header)
    await log.persistHeader()
    await log.persistHeader() // both slots valid, so a torn first update leaves this one
    return log
  }

  /**
   * Opens the log and scans its retained records from the header's tail: a record
   * counts only with the right magic, log tag, seq, a non-decreasing epoch and good
   * crcs, so a torn last record or one left from an earlier lap or life ends the log.
   * Returns the log and every retained record (with data) for local replay.
   */
  static async open(dev: BlockDev): Promise<{ log: ReplicationLog; records: LogRecord[] }> {
    const header = await readSlots<LogHeader>(dev)
    if (!header) throw new VsmError('EIO', 'no valid replication log header')
    const log = new ReplicationLog(dev, header)
    const records: LogRecord[] = []
    let lsn = header.tailLsn
    let seq = header.tailSeq
    let epoch = 0
    const hdr = Buffer.alloc(BLOCK)
    for (;;) {
      if (lsn - header.tailLsn >= log.ring) break
      await dev.read(hdr, log.phys(lsn))
      const h = decodeHeader(hdr)
      if (!h || h.tag !== log.tag || h.seq !== seq || h.epoch < epoch || h.epoch > header.epoch) break
      epoch = h.epoch
      if (h.kind === 'pad') { lsn = log.nextLap(lsn); continue }
      const size = recordSize(h.kind, h.length)
      let data: Buffer | undefined
      if (h.kind === 'write') {
        const whole = Buffer.alloc(size)
        await dev.read(whole, log.phys(lsn))
        data = whole.subarray(REC_HEADER, REC_HEADER + h.length)
        if (crc32(data) !== h.dataCrc) break
      }
      records.push({ seq, kind: h.kind, vol: h.vol, offset: h.offset, length: h.length, time: h.time, data })
      log.entries.push({ seq, lsn, size, kind: h.kind, vol: h.vol, offset: h.offset, length: h.length, time: h.time })
      lsn += size
      seq++
    }
    log.headLsn = lsn
    log.nextSeq = seq
    log.durable = seq - 1
    header.epoch++
    await log.persistHeader()
    return { log, records }
  }

  get config(): Record<string, unknown> { return this.header.config }
  get mode(): LogMode { return this.header.mode ?? 'log' }
  /** Where on the log volume the group's bitmap lives. */
  get bitmapArea(): { dev: BlockDev; offset: number; bytes: number } { return { dev: this.dev, offset: this.dev.size - BITMAP_BYTES, bytes: BITMAP_BYTES } }
  /** A secondary at next >= gapFrom (and behind the tail) resumes at the tail's resync-begin. */
  get gapFrom(): number | null { return this.header.gapFrom ?? null }
  get logId(): string { return this.header.logId }
  /** The seq the next append gets. */
  get headSeq(): number { return this.nextSeq - 1 }
  /** Oldest retained seq (everything before was reclaimed). */
  get tailSeq(): number { return this.memTail.seq }
  /** Highest seq such that it and all before are on stable storage in the log. */
  get durableSeq(): number { return this.durable }
  get capacity(): number { return this.ring }
  get usedBytes(): number { return this.headLsn - this.memTail.lsn }

  /** Bytes of records after seq (what a secondary at seq still lacks). */
  bytesAfter(seq: number): number {
    const i = this.indexOf(seq + 1)
    return i < 0 ? 0 : this.headLsn - this.entries[i].lsn
  }

  /** The ranges of the retained write and zero records after seq, in seq order. */
  changesAfter(seq: number): Array<{ vol: number; offset: number; length: number }> {
    return this.entries.filter((e) => e.seq > seq && (e.kind === 'write' || e.kind === 'zero')).map(({ vol, offset, length }) => ({ vol, offset, length }))
  }

  /** Append time of the oldest record after seq, or null. */
  timeAfter(seq: number): number | null {
    const i = this.indexOf(seq + 1)
    return i < 0 ? null : this.entries[i].time
  }

  async setConfig(config: Record<string, unknown>): Promise<void> {
    this.header = { ...this.header, config }
    await this.persistHeader()
  }

  /**
   * Appends a record in seq order, waiting for space when the ring is full (a
   * background copier; the group's own writes use tryAppend). Resolves with the seq
   * once the record is written (not yet durable: sync()).
   */
  append(rec: NewRecord): Promise<number> {
    return this.add(rec, true) as Promise<number>
  }

  /**
   * Appends a write, zero or flush of the group's users, or resolves null, appending
   * nothing, when the ring has no room or the log is in bitmap mode: the group then
   * overflows to its bitmap instead of stalling the writer.
   */
  tryAppend(rec: NewRecord): Promise<number | null> {
    return this.add(rec, false)
  }

  private add(rec: NewRecord, wait: boolean): Promise<number | null> {
    if (this.failed) return Promise.reject(this.failed)
    if (rec.kind === 'write' && (!rec.data || rec.data.length !== rec.length)) throw new VsmError('EINVAL', 'a write record needs its data')
    if (rec.length > MAX_RECORD_DATA && rec.kind === 'write') throw new VsmError('EINVAL', `a record holds at most ${MAX_RECORD_DATA} bytes`)
    const placed = this.allocChain.then(() => (wait || this.mode === 'log' ? this.allocate(rec, wait) : null))
    this.allocChain = placed.catch(() => undefined)
    return placed.then((at) => (at ? this.place(rec, at) : null))
  }

  private async place(rec: NewRecord, { seq, lsn, padLsn, time }: { seq: number; lsn: number; padLsn: number | null; time: number }): Promise<number> {
    const write = (async () => {
      if (padLsn !== null) await this.dev.write(encodeRecord({ seq, kind: 'pad', vol: 0, offset: 0, length: 0, time }, this.header.epoch, this.tag), this.phys(padLsn))
      await this.dev.write(encodeRecord({ ...rec, seq, time }, this.header.epoch, this.tag), this.phys(lsn))
    })()
    const done = write.catch((e) => { this.failed ??= e as Error; throw e })
    this.inflight.set(seq, done.catch(() => undefined))
    try { await done } finally { this.inflight.delete(seq) }
    return seq
  }

  private async allocate(rec: NewRecord, wait: boolean): Promise<{ seq: number; lsn: number; padLsn: number | null; time: number } | null> {
    const size = recordSize(rec.kind, rec.length)
    for (;;) {
      if (this.failed) throw this.failed
      if (this.closing) throw new VsmError('ECANCELED', 'the replication log is closing')
      let lsn = this.headLsn
      let padLsn: number | null = null
      if (this.phys(lsn) + size > RING_START + this.ring) { padLsn = lsn; lsn = this.nextLap(lsn) }
      // never overwrite what the persisted header still points at: a scan starts there
      if (lsn + size - this.header.tailLsn <= this.ring) {
        const seq = this.nextSeq++
        const time = Date.now()
        this.entries.push({ seq, lsn, size, kind: rec.kind, vol: rec.vol, offset: rec.offset, length: rec.length, time })
        this.headLsn = lsn + size
        return { seq, lsn, padLsn, time }
      }
      if (this.memTail.lsn > this.header.tailLsn) { await this.persistHeader(); continue }
      if (!wait) return null
      await new Promise<void>((r) => this.spaceWaiters.push(r))
    }
  }

  /**
   * Overflow: in order with appends, switches to bitmap mode, lets mark() record the
   * retained records in the group's bitmap (durably), then drops them, and appends a
   * resync-begin. Appends of the group's writes are refused from here on, so each is
   * either marked by mark() or refused and marked by its writer. mark() says gapFrom:
   * a secondary there or later resumes at the resync-begin. Resolves with its seq.
   */
  overflow(mark: (retained: RetainedRecord[]) => Promise<number>, dirtyBytes: () => number): Promise<number> {
    const op = this.allocChain.then(async () => {
      this.header = { ...this.header, mode: 'bitmap' }
      const gapFrom = await mark(this.entries.map(({ seq, kind, vol, offset, length }) => ({ seq, kind, vol, offset, length })))
      this.memTail = { lsn: this.headLsn, seq: this.nextSeq }
      this.entries = []
      this.header = { ...this.header, gapFrom }
      await this.persistHeader()
      const rec: NewRecord = { kind: 'resync-begin', vol: 0, offset: 0, length: Math.min(dirtyBytes(), 0xffffffff) }
      return this.place(rec, (await this.allocate(rec, true))!)
    })
    this.allocChain = op.catch(() => undefined)
    return op
  }

  /**
   * A failback copied the other site's data over every range the retained records
   * touch: they all go (none is replayed or shipped again), durably, and the log is in
   * log mode with no gap; the next record follows the head.
   */
  async dropAll(): Promise<void> {
    await this.sync()
    this.entries = []
    this.memTail = { lsn: this.headLsn, seq: this.nextSeq }
    const { gapFrom: _gone, ...rest } = this.header
    this.header = { ...rest, mode: 'log' }
    await this.persistHeader()
  }

  /** The end of a bitmap resync (nothing left to copy): appends resync-end, then records log mode. Resolves with its seq. */
  endOverflow(): Promise<number> {
    const op = this.allocChain.then(async () => {
      const rec: NewRecord = { kind: 'resync-end', vol: 0, offset: 0, length: 0 }
      const seq = await this.place(rec, (await this.allocate(rec, true))!)
      await this.sync()
      // a crash before this header write leaves bitmap mode and a resync-end: the group ends the resync again, harmlessly
      this.header = { ...this.header, mode: 'log' }
      await this.persistHeader()
      return seq
    })
    this.allocChain = op.catch(() => undefined)
    return op
  }

  /** Group commit: resolves once every record appended before the call is durable in the log. */
  async sync(): Promise<void> {
    const target = this.headSeq
    if (this.durable >= target) return
    await Promise.all([...this.inflight.entries()].filter(([s]) => s <= target).map(([, p]) => p))
    if (this.failed) throw this.failed
    while (this.durable < target) {
      if (!this.flushing) {
        const upto = this.writtenUpTo()
        this.flushing = this.dev.flush().then(() => { this.durable = Math.max(this.durable, upto) }).finally(() => { this.flushing = null })
      }
      await this.flushing
    }
  }

  private writtenUpTo(): number {
    let low = this.nextSeq
    for (const s of this.inflight.keys()) low = Math.min(low, s)
    return low - 1
  }

  /** A retained record with its data, read back from the log. */
  async read(seq: number): Promise<LogRecord> {
    const i = this.indexOf(seq)
    if (i < 0) throw new VsmError('ENOENT', `record ${seq} is not in the log (retained ${this.tailSeq}..${this.headSeq})`)
    const e = this.entries[i]
    const rec: LogRecord = { seq, kind: e.kind, vol: 0, offset: 0, length: e.length, time: e.time }
    const buf = Buffer.alloc(e.size)
    await this.dev.read(buf, this.phys(e.lsn))
    const h = decodeHeader(buf)
    if (!h || h.seq !== seq) throw new VsmError('EIO', `record ${seq} does not read back`)
    rec.vol = h.vol
    rec.offset = h.offset
    if (e.kind === 'write') rec.data = buf.subarray(REC_HEADER, REC_HEADER + e.length)
    return rec
  }

  /** Frees the records up to and including seq (the caller knows nobody needs them). */
  reclaim(seq: number): void {
    let n = 0
    while (n < this.entries.length && this.entries[n].seq <= seq && this.entries[n].seq <= this.durable) n++
    if (n === 0) return
    const next = this.entries[n] ?? null
    this.memTail = next ? { lsn: next.lsn, seq: next.seq } : { lsn: this.headLsn, seq: this.nextSeq }
    this.entries = this.entries.slice(n)
    // the header is rewritten lazily: when a quarter of the ring is reclaimable, or an append waits
    if (this.memTail.lsn - this.header.tailLsn >= this.ring / 4 || this.spaceWaiters.length) void this.persistHeader().catch(() => undefined)
  }

  /** Writes the header (tail as reclaimed so far) into the slot the last write did not use. */
  persistHeader(): Promise<void> {
    this.headerWrite = this.headerWrite.then(async () => {
      const next: LogHeader = { ...this.header, tailLsn: this.memTail.lsn, tailSeq: this.memTail.seq, counter: this.header.counter + 1 }
      await writeSlot(this.dev, next)
      this.header = next
      const waiters = this.spaceWaiters
      this.spaceWaiters = []
      for (const w of waiters) w()
    })
    return this.headerWrite
  }

  async close(): Promise<void> {
    // a copier waiting for space gives up: the retained records wait for the next open
    this.closing = true
    for (const w of this.spaceWaiters.splice(0)) w()
    await this.allocChain
    await Promise.all(this.inflight.values())
    if (!this.failed) {
      await this.sync()
      await this.persistHeader()
    }
  }

  private indexOf(seq: number): number {
    if (this.entries.length === 0) return -1
    const i = seq - this.entries[0].seq
    return i >= 0 && i < this.entries.length ? i : -1
  }

  private phys(lsn: number): number { return RING_START + (lsn % this.ring) }
  private nextLap(lsn: number): number { return (Math.floor(lsn / this.ring) + 1) * this.ring }
}
