// RAID-5: stripe units dealt across n members with one rotating parity unit per row
// (left-symmetric, as md's default), and a stripe journal that closes the write hole.
//
// Every row update is first written, whole (the new window of each changed column
// and of the parity; no parity when every data column is in it, replay recomputes
// that), as one checksummed record into the journal area at the start of two
// members, and made durable; only then is it written in place. After a crash
// the journal is replayed, so a row is either all old or all new on every member and
// a later reconstruction from parity can never produce bytes nobody wrote (the write
// hole md closes with its journal device and ZFS with variable-width stripes).
//
// Records live in fixed slots of a ring; a slot is reused only once the record it
// held has been written in place and flushed. Each record carries the highest seq
// known durable in place at the time it was written, so replay skips what is already
// safe (and stale records on a member that has been away).
//
// With checksum tables (checksum.ts), one per member in member coordinates, every row
// update covers whole 4 KiB blocks and sets the sums of what it writes (data units
// and parity alike). Reads verify each block; a bad one is rebuilt from the other
// members (whose blocks must verify too) and rewritten. Sums reach the disk lazily, at
// the next flush: that flush is what makes a record's seq durable, so after a crash
// every update whose sums may be missing is replayed from the journal, which sets them again.
//
// A write-intent log (drl.ts) in member row coordinates (every member has the same
// rows, so one region bit per member's device bitmap) records which rows were written
// while a member was away: a returning member is rebuilt only there. The journal, not
// the log, is what makes a crash safe; the log only bounds what a stale member missed.
import { crc32 } from '../native/sums'
import { BlockDev, VsmError, checkRange } from '../block/blockdev'
import { readLength } from './slice'
import { GroupFlush, RangeLocks } from './sync'
import { ChecksumTable, SUM_BLOCK, blockSums, differs } from './checksum'
import { DirtyRegionLog, LogHost, LogMember } from './drl'
import { intersectRanges, mergeRanges, rangesBytes } from '../block/ranges'
import { xorInto } from '../native/sums'
import { FailureRecords } from './failure-records'

export interface Raid5Options {
  stripeUnit: number
  /** Bytes at the start of each member reserved for the journal. */
  journal: number
  /** Identifies this volume's records (a reused extent may hold another volume's). */
  tag: string
  size?: number
  /** Block checksum table of each member, over the member's whole window (null for a member without one). */
  sums?: (ChecksumTable | null)[]
  /** Write-intent bitmap of each member, base at the member's row 0 (null for a member without one). */
  log?: (LogMember | null)[]
  onMemberFailed?: (index: number, err: unknown) => Promise<void>
  onClose?: () => void
}

const MAGIC = Buffer.from('VSMR5J01')
const HDR = 4096
/** Journal copies per record: one member may be lost with the crash. */
const JOURNAL_COPIES = 2

interface Piece { col: number; lo: number; hi: number; src: Buffer }

export interface Raid5ScrubReport {
  /** Volume bytes in the rows read, and in the rows no member's table says were ever written (not read). */
  checkedBytes: number
  skippedBytes: number
  /** Blocks rebuilt from the other members and rewritten: member index and byte offset in the member. */
  repaired: { member: number; offset: number }[]
  /** Blocks bad on more than one member of their row: nothing to rebuild them from. */
  unrecoverable: { member: number; offset: number }[]
  /** Rows whose parity disagreed with their (verified) data and was rewritten. */
  parityRows: number[]
}

/** Is row in one of the sorted, disjoint [lo, hi) row ranges? */
function inRanges(rs: [number, number][], row: number): boolean {
  let a = 0, b = rs.length
  while (a < b) {
    const mid = (a + b) >> 1
    if (rs[mid][1] <= row) a = mid + 1; else b = mid
  }
  return a < rs.length && rs[a][0] <= row
}

export class Raid5Dev implements BlockDev, LogHost {
  readonly size: number
  readonly rows: number
  readonly failed: boolean[]
  /** Records replayed by the last open (tests, status). */
  replayed = 0
  /** Rows those records rewrote: a member absent then (stale) missed them. */
  replayedRows: number[] = []
  /**
   * Member being rebuilt, the row ranges it needs, and the first row not yet rebuilt
   * (reads of rows in the ranges from there on reconstruct).
   */
  rebuilding: { index: number; row: number; ranges: [number, number][]; touched?: Set<number> } | null = null
  readonly log?: DirtyRegionLog
  /** Bad blocks found by reads and rewritten from the other members. */
  repairedOnRead = 0
  private readonly n: number
  private readonly su: number
  private readonly slot: number
  private readonly slots: number
  private readonly tag: Buffer
  private readonly sums: (ChecksumTable | null)[]
  private readonly locks = new RangeLocks()
  /** Rows whose update holds the row lock now. */
  private readonly updating = new Set<number>()
  private seq = 0
  private durable = 0
  private doneUpTo = 0
  private readonly doneAhead = new Set<number>()
  private doneWaiters: Array<() => void> = []
  private readonly syncJournal: GroupFlush
  private readonly records: FailureRecords
  private closed = false

  constructor(readonly members: (BlockDev | null)[], private readonly opts: Raid5Options) {
    this.n = members.length
    this.su = opts.stripeUnit
    if (this.n < 3) throw new VsmError('EINVAL', 'raid5 needs at least three members')
    this.failed = members.map((m) => m === null)
    this.records = new FailureRecords(opts.onMemberFailed)
    if (this.failed.filter(Boolean).length > 1) throw new VsmError('ENODEV', 'raid5 cannot run with more than one member missing')
    const per = Math.min(...members.filter((m): m is BlockDev => !!m).map((m) => m.size)) - opts.journal
    this.rows = Math.floor(per / this.su)
    this.size = opts.size ?? this.rows * this.su * (this.n - 1)
    if (this.rows <= 0 || this.size > this.rows * this.su * (this.n - 1)) throw new VsmError('EINVAL', 'raid5 members too small for the volume')
    this.slot = HDR + this.n * this.su
    this.slots = Math.floor(opts.journal / this.slot)
    if (this.slots < 2) throw new VsmError('EINVAL', 'raid5 journal area too small')
    this.tag = Buffer.alloc(16)
    Buffer.from(opts.tag.replace(/-/g, ''), 'hex').copy(this.tag)
    this.syncJournal = new GroupFlush(() => this.flushMembers(this.journalTargets()))
    this.sums = opts.sums ?? members.map(() => null)
    if (opts.sums && (this.su % SUM_BLOCK !== 0 || opts.journal % SUM_BLOCK !== 0)) {
      throw new VsmError('EINVAL', `checksummed raid5 needs a stripe unit and journal of whole ${SUM_BLOCK}-byte blocks`)
    }
    if (opts.log?.some((m) => m)) this.log = new DirtyRegionLog(this.rows * this.su, opts.log, this)
  }

  isHealthy(i: number): boolean { return !this.failed[i] }

  /** A member is missing rows: the log keeps every bit set, the record of what it must get back. */
  get degraded(): boolean { return this.healthyCount < this.n || this.rebuilding !== null }

  private get summed(): boolean { return this.opts.sums !== undefined }

  /** [lo, hi) of a unit, widened to whole checksum blocks when there are sums. */
  private widen(lo: number, hi: number): [number, number] {
    if (!this.summed) return [lo, hi]
    return [Math.floor(lo / SUM_BLOCK) * SUM_BLOCK, Math.ceil(hi / SUM_BLOCK) * SUM_BLOCK]
  }

  /** Offsets (from lo) of the blocks of b, member m's [lo, ..) of row, that disagree with their sums. */
  private async badBlocks(m: number, row: number, lo: number, b: Buffer): Promise<number[]> {
    const t = this.sums[m]
    if (!t) return []
    const out: number[] = []
    const wants = await t.getMany((this.at(row) + lo) / SUM_BLOCK, Math.ceil(b.length / SUM_BLOCK))
    const got = blockSums(b)
    for (let k = 0; k < wants.length; k++) if (differs(wants, got, k)) out.push(k * SUM_BLOCK)
    return out
  }

  private setSums(m: number, row: number, lo: number, b: Buffer): void {
    if (!this.failed[m]) this.sums[m]?.setAll((this.at(row) + lo) / SUM_BLOCK, b)
  }

  private persistSums(): Promise<unknown> {
    return Promise.all(this.sums.map((t, i) => t && !this.failed[i] ? t.persist().catch((e) => this.failMember(i, e)) : undefined))
  }

  get healthyCount(): number { return this.failed.filter((f) => !f).length }

  private parityOf(row: number): number { return this.n - 1 - (row % this.n) }
  private memberOf(row: number, col: number): number { return (this.parityOf(row) + 1 + col) % this.n }
  /** Member byte offset of a row's unit. */
  private at(row: number): number { return this.opts.journal + row * this.su }

  /** Readable: healthy, and if being rebuilt, already rebuilt at that row. */
  private readable(i: number, row: number): boolean {
    const rb = this.rebuilding
    return !this.failed[i] && !(rb?.index === i && row >= rb.row && inRanges(rb.ranges, row))
  }

  /** Take member i out of service unreported (the pool is replacing it); a rebuild onto it stops. */
  takeOut(i: number): void {
    this.failed[i] = true
    if (this.rebuilding?.index === i) this.rebuilding = null
  }

  /**
   * Take member i out. Only the first loss is recorded with the pool: after a second
   * the volume is dead until restarted, and the next assembly should try both again.
   */
  failMember(i: number, err: unknown): Promise<void> {
    if (this.failed[i]) return this.records.tried()
    const first = this.healthyCount === this.n || this.rebuilding?.index === i
    this.log?.forgetSynced()
    this.failed[i] = true
    if (this.rebuilding?.index === i) this.rebuilding = null
    if (!first) return this.records.tried()
    return this.records.add(i, err)
  }

  private tooManyFailed(): VsmError | null {
    return this.healthyCount < this.n - 1 ? new VsmError('EIO', 'raid5 has lost more than one member') : null
  }

  async read(buf: Buffer, offset: number): Promise<number> {
    const n = readLength(this, buf, offset)
    const parts: Promise<void>[] = []
    this.split(offset, n, (row, col, lo, hi, pos) => {
      parts.push(this.readPiece(row, col, lo, hi, buf.subarray(pos, pos + hi - lo)))
    })
    await Promise.all(parts)
    return n
  }

  private split(offset: number, len: number, fn: (row: number, col: number, lo: number, hi: number, pos: number) => void): void {
    const su = this.su, d = this.n - 1
    let pos = 0
    while (pos < len) {
      const u = Math.floor((offset + pos) / su)
      const lo = offset + pos - u * su
      const hi = Math.min(su, lo + len - pos)
      fn(Math.floor(u / d), u % d, lo, hi, pos)
      pos += hi - lo
    }
  }

  private async readPiece(row: number, col: number, lo: number, hi: number, out: Buffer): Promise<void> {
    const [a, b] = this.widen(lo, hi)
    const whole = a === lo && b === hi ? out : Buffer.allocUnsafe(b - a)
    await this.readUnit(row, this.memberOf(row, col), a, b, whole, false)
    if (whole !== out) whole.copy(out, 0, lo - a, hi - a)
  }

  /**
   * Member m's bytes [lo, hi) of a row (whole blocks when summed), verified. What cannot
   * be read, or does not verify, comes from the other members, under the row lock
   * (locked: the caller holds it). Bad blocks found this way are rewritten.
   */
  private async readUnit(row: number, m: number, lo: number, hi: number, out: Buffer, locked: boolean): Promise<void> {
    let bad: number[] | null = null
    if (this.readable(m, row)) {
      try {
        await this.members[m]!.read(out, this.at(row) + lo)
        bad = await this.badBlocks(m, row, lo, out)
        if (bad.length === 0) return
      } catch (e) {
        await this.failMember(m, e)
      }
    }
    if (!locked) {
      // reconstruction reads the whole row, and a write in flight may have paired new
      // data with an old sum: look again with writers of the row kept out
      const release = await this.locks.lock(row)
      try { return await this.readUnit(row, m, lo, hi, out, true) } finally { release() }
    }
    if (!bad) return this.reconstruct(row, m, lo, hi, out)
    for (const k of bad) {
      const blk = out.subarray(k, k + SUM_BLOCK)
      await this.reconstruct(row, m, lo + k, lo + k + SUM_BLOCK, blk)
      this.repairedOnRead++
      // the sum was right and the data wrong: rewriting the data is the whole repair
      await this.members[m]!.write(Buffer.from(blk), this.at(row) + lo + k).catch((e) => this.failMember(m, e))
    }
  }

  /** Member m's bytes [lo,hi) of a row, from every other member (each verified). */
  private async reconstruct(row: number, m: number, lo: number, hi: number, out: Buffer): Promise<void> {
    out.fill(0)
    const tmp = Buffer.allocUnsafe(hi - lo)
    for (let i = 0; i < this.n; i++) {
      if (i === m) continue
      if (!this.readable(i, row)) throw new VsmError('EIO', `raid5 row ${row}: members ${m} and ${i} are both unavailable`)
      try {
        await this.members[i]!.read(tmp, this.at(row) + lo)
      } catch (e) {
        await this.failMember(i, e)
        throw new VsmError('EIO', `raid5 row ${row}: cannot reconstruct, member ${i} failed too: ${(e as Error).message}`)
      }
      const bad = await this.badBlocks(i, row, lo, tmp)
      if (bad.length) throw new VsmError('EIO', `raid5 row ${row}: checksum mismatch on member ${i} at ${this.at(row) + lo + bad[0]} too, cannot reconstruct member ${m}`)
      xorInto(out, tmp)
    }
  }

  async write(buf: Buffer, offset: number): Promise<void> {
    checkRange(this, offset, buf.length)
    if (this.closed) throw new VsmError('EIO', 'volume is closed')
    const rows = new Map<number, Piece[]>()
    this.split(offset, buf.length, (row, col, lo, hi, pos) => {
      let ps = rows.get(row)
      if (!ps) rows.set(row, ps = [])
      ps.push({ col, lo, hi, src: buf.subarray(pos, pos + hi - lo) })
    })
    await Promise.all([...rows].map(([row, ps]) => this.writeRow(row, ps)))
    if (this.records.pending) await this.records.check()
  }

  private async writeRow(row: number, pieces: Piece[]): Promise<void> {
    const log = this.log
    if (!log) return this.updateRow(row, pieces)
    const rs = log.regionSize
    const r0 = Math.floor(row * this.su / rs), r1 = Math.floor(((row + 1) * this.su - 1) / rs)
    try {
      await log.begin(r0, r1)
      await this.updateRow(row, pieces)
    } finally {
      log.end(r0, r1)
    }
  }

  private async updateRow(row: number, pieces: Piece[]): Promise<void> {
    const release = await this.locks.lock(row)
    this.updating.add(row)
    this.rebuilding?.touched?.add(row)
    try {
      const err = this.tooManyFailed()
      if (err) throw err
      // one window [lo,hi) of the unit covers every piece of this row (whole blocks when summed)
      const [lo, hi] = this.widen(Math.min(...pieces.map((p) => p.lo)), Math.max(...pieces.map((p) => p.hi)))
      const w = hi - lo
      const cols: (Buffer | null)[] = new Array(this.n - 1).fill(null)
      const changed = new Set<number>()
      for (const p of pieces) changed.add(p.col)
      await Promise.all(cols.map(async (_, col) => {
        const full = pieces.some((p) => p.col === col && p.lo === lo && p.hi === hi)
        const b = Buffer.allocUnsafe(w)
        if (!full) await this.readUnit(row, this.memberOf(row, col), lo, hi, b, true)
        cols[col] = b
      }))
      for (const p of pieces) p.src.copy(cols[p.col]!, p.lo - lo)
      const parity = Buffer.alloc(w)
      for (const c of cols) xorInto(parity, c!)
      const writes: [number, Buffer][] = [...changed].map((col) => [this.memberOf(row, col), cols[col]!])
      // a record holding every data column leaves parity out: replay recomputes it (a third less journal)
      const seq = await this.journalAppend(row, lo, changed.size === this.n - 1 ? writes.slice() : [...writes, [this.parityOf(row), parity]])
      writes.push([this.parityOf(row), parity])
      try {
        await this.writeInPlace(row, lo, writes)
      } finally {
        this.completed(seq)
      }
    } finally {
      this.updating.delete(row)
      release()
    }
  }

  /** Write a row update in place (its record is durable in the journal), with the sums of what it writes. */
  private async writeInPlace(row: number, lo: number, writes: [number, Buffer][]): Promise<void> {
    for (const [m, b] of writes) this.setSums(m, row, lo, b)
    await this.sums.find((t) => t)?.room()
    let failedNow = false
    await Promise.all(writes.map(([m, b]) => this.failed[m] ? undefined :
      this.members[m]!.write(b, this.at(row) + lo).catch((e) => { failedNow = true; return this.failMember(m, e) })))
    if (failedNow) {
      const err = this.tooManyFailed()
      if (err) throw err
    }
  }

  // ---- journal ----

  private journalTargets(): number[] {
    const out: number[] = []
    for (let i = 0; i < this.n && out.length < JOURNAL_COPIES; i++) if (!this.failed[i] && this.rebuilding?.index !== i) out.push(i)
    return out
  }

  private async flushMembers(which: number[]): Promise<void> {
    await Promise.all(which.map((i) => this.failed[i] ? undefined : this.members[i]!.flush().catch((e) => this.failMember(i, e))))
    const err = this.tooManyFailed()
    if (err) throw err
  }

  /** A record with no writes is a checkpoint: it only carries the durable seq. */
  private encode(seq: number, row: number, lo: number, writes: [number, Buffer][]): Buffer {
    const w = writes.length ? writes[0][1].length : 0
    const rec = Buffer.alloc(HDR + writes.length * w)
    MAGIC.copy(rec, 0)
    this.tag.copy(rec, 8)
    rec.writeBigUInt64LE(BigInt(seq), 24)
    rec.writeBigUInt64LE(BigInt(this.durable), 32)
    rec.writeBigUInt64LE(BigInt(row), 40)
    rec.writeUInt32LE(lo, 48)
    rec.writeUInt32LE(w, 52)
    rec.writeUInt32LE(writes.length, 56)
    writes.forEach(([m, b], k) => {
      rec.writeUInt16LE(m, 64 + 2 * k)
      b.copy(rec, HDR + k * w)
    })
    rec.writeUInt32LE(crc32(rec.subarray(HDR), crc32(rec.subarray(0, 60))), 60)
    return rec
  }

  /** Make the row's new content durable in the journal; returns its seq. */
  private async journalAppend(row: number, lo: number, writes: [number, Buffer][]): Promise<number> {
    const seq = ++this.seq
    try {
      // the slot's previous record must be durable in place before it is overwritten
      if (seq - this.slots > this.durable) await this.checkpoint(seq - this.slots)
      const rec = this.encode(seq, row, lo, writes)
      const off = (seq % this.slots) * this.slot
      let ok = 0
      await Promise.all(this.journalTargets().map((i) => this.members[i]!.write(rec, off).then(() => { ok++ }, (e) => this.failMember(i, e))))
      if (ok === 0) throw new VsmError('EIO', 'raid5: cannot write the stripe journal on any member')
      await this.syncJournal.run()
      return seq
    } catch (e) {
      this.completed(seq)
      throw e
    }
  }

  private completed(seq: number): void {
    if (seq !== this.doneUpTo + 1) { this.doneAhead.add(seq); return }
    this.doneUpTo = seq
    while (this.doneAhead.delete(this.doneUpTo + 1)) this.doneUpTo++
    const ws = this.doneWaiters
    this.doneWaiters = []
    for (const w of ws) w()
  }

  private async checkpoint(upTo: number): Promise<void> {
    while (this.doneUpTo < upTo) await new Promise<void>((r) => this.doneWaiters.push(r))
    if (this.durable >= upTo) return
    await this.flush()
  }

  async flush(): Promise<void> {
    const d = this.doneUpTo
    const e = this.log?.flushStart() ?? 0
    // the sums of every update up to d are set: written now, they are durable with it
    await this.persistSums()
    await this.flushMembers(this.members.map((_, i) => i))
    if (this.records.pending) await this.records.check()
    if (d > this.durable) this.durable = d
    this.log?.flushDone(e)
  }

  /**
   * Replay journal records not known durable in place; must run before the volume
   * serves I/O. Returns the number of records applied.
   */
  async replay(): Promise<number> {
    const recs = new Map<number, { row: number; lo: number; writes: [number, Buffer][] }>()
    let maxSeq = 0, maxDurable = 0
    const hdr = Buffer.alloc(HDR)
    for (let i = 0; i < this.n; i++) {
      if (this.failed[i]) continue
      for (let k = 0; k < this.slots; k++) {
        const off = k * this.slot
        try { await this.members[i]!.read(hdr, off) } catch (e) { await this.failMember(i, e); break }
        if (!hdr.subarray(0, 8).equals(MAGIC) || !hdr.subarray(8, 24).equals(this.tag)) continue
        const seq = Number(hdr.readBigUInt64LE(24))
        const w = hdr.readUInt32LE(52), count = hdr.readUInt32LE(56)
        if (recs.has(seq) || count > this.n || w > this.su) continue
        const rec = Buffer.alloc(HDR + count * w)
        await this.members[i]!.read(rec, off)
        if (crc32(rec.subarray(HDR), crc32(rec.subarray(0, 60))) !== rec.readUInt32LE(60)) continue
        maxSeq = Math.max(maxSeq, seq)
        maxDurable = Math.max(maxDurable, Number(rec.readBigUInt64LE(32)))
        const writes: [number, Buffer][] = []
        for (let j = 0; j < count; j++) writes.push([rec.readUInt16LE(64 + 2 * j), rec.subarray(HDR + j * w, HDR + (j + 1) * w)])
        recs.set(seq, { row: Number(rec.readBigUInt64LE(40)), lo: rec.readUInt32LE(48), writes })
      }
    }
    const todo = [...recs.keys()].filter((s) => s > maxDurable && recs.get(s)!.writes.length > 0).sort((a, b) => a - b)
    for (const s of todo) {
      const r = recs.get(s)!
      if (r.row >= this.rows || !r.writes.every(([m, b]) => m < this.n && r.lo + b.length <= this.su)) continue
      const p = this.parityOf(r.row)
      if (!r.writes.some(([m]) => m === p)) {
        if (r.writes.length !== this.n - 1) continue
        const parity = Buffer.alloc(r.writes[0][1].length)
        for (const [, b] of r.writes) xorInto(parity, b)
        r.writes.push([p, parity])
      }
      await this.writeInPlace(r.row, r.lo, r.writes)
    }
    this.seq = this.doneUpTo = this.durable = maxSeq
    if (todo.length) await this.flush()
    this.replayed = todo.length
    this.replayedRows = [...new Set(todo.map((s) => recs.get(s)!.row))]
    // bits left by a crash mean nothing here (the journal made the rows whole); while a
    // member is missing they are the record of what it must get back
    if (!this.degraded) await this.log?.clearPending()
    return todo.length
  }

  /**
   * Verify every block of every member against its sum and rebuild the bad ones from
   * the rest of their row; then check each row's parity against its data and rewrite
   * parity that disagrees (data that verifies, or has no sum, is taken as the truth).
   */
  /** onChunk gets the volume bytes read so far and the volume offset reached. */
  async scrub(opts: { onChunk?: (read: number, pos: number) => Promise<void> } = {}): Promise<Raid5ScrubReport> {
    const report: Raid5ScrubReport = { checkedBytes: 0, skippedBytes: 0, repaired: [], unrecoverable: [], parityRows: [] }
    const bufs = this.members.map(() => Buffer.allocUnsafe(this.su))
    const acc = Buffer.allocUnsafe(this.su)
    const B = this.summed ? SUM_BLOCK : this.su
    const rowBytes = this.su * (this.n - 1)
    const volBytes = (lo: number, hi: number) => Math.min(this.size, hi * rowBytes) - Math.min(this.size, lo * rowBytes)
    // a row no member ever wrote has nothing to verify, and no write has made its parity anything
    const used = await this.usedRows()
    report.checkedBytes = used.reduce((s, [lo, hi]) => s + volBytes(lo, hi), 0)
    report.skippedBytes = this.size - report.checkedBytes
    let read = 0
    for (const [lo, hi] of used) for (let row = lo; row < hi; row++) {
      const release = await this.locks.lock(row)
      try {
        if (this.healthyCount < this.n || this.rebuilding) throw new VsmError('EIO', 'raid5 scrub needs every member in service and up to date')
        // a member that cannot be read goes out, and the scrub with it: it needs them all
        for (let i = 0; i < this.n; i++) await this.members[i]!.read(bufs[i], this.at(row)).catch(async (e) => { await this.failMember(i, e); throw e })
        const bad = await Promise.all(bufs.map(async (b, i) => new Set(await this.badBlocks(i, row, 0, b))))
        let whole = true
        for (let k = 0; k < this.su; k += B) {
          const which = bad.flatMap((s, i) => (s.has(k) ? [i] : []))
          if (which.length > 1) {
            whole = false
            for (const i of which) report.unrecoverable.push({ member: i, offset: this.at(row) + k })
          } else if (which.length === 1) {
            const m = which[0], blk = bufs[m].subarray(k, k + B)
            blk.fill(0)
            for (let i = 0; i < this.n; i++) if (i !== m) xorInto(blk, bufs[i].subarray(k, k + B))
            await this.members[m]!.write(Buffer.from(blk), this.at(row) + k).catch((e) => this.failMember(m, e))
            report.repaired.push({ member: m, offset: this.at(row) + k })
          }
        }
        const p = this.parityOf(row)
        acc.fill(0)
        for (let col = 0; col < this.n - 1; col++) xorInto(acc, bufs[this.memberOf(row, col)])
        if (whole && !bufs[p].equals(acc)) {
          this.setSums(p, row, 0, acc)
          await this.members[p]!.write(Buffer.from(acc), this.at(row)).catch((e) => this.failMember(p, e))
          report.parityRows.push(row)
        }
      } finally {
        release()
      }
      read += rowBytes
      await opts.onChunk?.(read, Math.min(this.size, (row + 1) * rowBytes))
    }
    await opts.onChunk?.(read, this.size)
    if (report.repaired.length || report.parityRows.length) await this.flush()
    return report
  }

  /**
   * Row ranges (sorted, disjoint) some member in service has a sum in, by its table: a
   * row update writes parity with its data, so a row written at all is marked on two
   * members. Every row when a member cannot tell (no table, or a dense one).
   */
  async usedRows(): Promise<[number, number][]> {
    const first = this.opts.journal / SUM_BLOCK, blocks = this.rows * this.su / SUM_BLOCK
    const all: [number, number][] = []
    for (let i = 0; i < this.n; i++) {
      if (this.failed[i]) continue
      const t = this.sums[i]
      if (!t) return [[0, this.rows]]
      for (const [lo, hi] of await t.usedRanges(first, blocks)) {
        all.push([Math.floor((lo - first) * SUM_BLOCK / this.su), Math.ceil((hi - first) * SUM_BLOCK / this.su)])
      }
    }
    return mergeRanges(all)
  }

  /**
   * Drop from the rebuild under way the rows no member has written. Such a row holds
   * nothing anyone wrote (zeros on sparse members, the new one included, so its parity
   * already agrees); once dropped, the member is read directly there, and a row's first
   * update computes parity from what every member holds then. A row updated while the
   * rows are listed stays: that update may have taken this member's unit from the
   * others into parity without writing it here. Returns the member bytes dropped.
   */
  async skipUnwritten(): Promise<number> {
    const rb = this.rebuilding
    if (!rb) return 0
    rb.touched = new Set(this.updating)
    const used = await this.usedRows()
    const keep = mergeRanges([...used, ...[...rb.touched].map((r): [number, number] => [r, r + 1])])
    rb.touched = undefined
    if (this.rebuilding !== rb) return 0
    const before = rangesBytes(rb.ranges)
    rb.ranges = intersectRanges(rb.ranges, keep)
    return (before - rangesBytes(rb.ranges)) * this.su
  }

  /** Row ranges a member absent since the log's bits were set may have missed (all rows without a log). */
  missedRows(): [number, number][] {
    if (!this.log) return [[0, this.rows]]
    return this.log.missedRanges().map(([lo, hi]) => [Math.floor(lo / this.su), Math.ceil(hi / this.su)])
  }

  /**
   * Put dev in as member i: it is written at once, and its rows in ranges (sorted,
   * disjoint) are read only where rebuild() has passed them.
   */
  attach(i: number, dev: BlockDev, ranges: [number, number][], sums?: ChecksumTable | null, log?: LogMember | null): void {
    if (!this.failed[i]) throw new VsmError('EBUSY', `raid5 member ${i} is in service`)
    if (this.rebuilding) throw new VsmError('EBUSY', `raid5 member ${this.rebuilding.index} is being rebuilt`)
    this.members[i] = dev
    if (sums !== undefined) this.sums[i] = sums
    if (log !== undefined) this.log?.setMember(i, log)
    this.failed[i] = false
    this.rebuilding = { index: i, row: 0, ranges: ranges.map(([lo, hi]) => [Math.max(0, lo), Math.min(hi, this.rows)] as [number, number]).filter(([lo, hi]) => lo < hi) }
  }

  /** Member bytes the rebuild under way still has to write. */
  get rebuildLeft(): number {
    const rb = this.rebuilding
    return rb ? rb.ranges.reduce((s, [lo, hi]) => s + Math.max(0, hi - Math.max(lo, rb.row)), 0) * this.su : 0
  }

  /**
   * Recompute the attached member i's rows in its ranges from the others, row by row
   * (each row locked, so writers interleave safely), from where an interrupted run
   * stopped. onChunk gets the member bytes written and the row offset (in member
   * bytes past the journal) below which every needed row is rebuilt. Returns bytes written.
   */
  async rebuild(i: number, opts: { onChunk?: (done: number, pos: number) => Promise<void> } = {}): Promise<number> {
    const rb = this.rebuilding
    if (rb?.index !== i) throw new VsmError('EINVAL', `raid5 member ${i} is not being rebuilt`)
    // whatever its journal area holds is from another time
    const z = Buffer.alloc(HDR)
    for (let k = 0; k < this.slots; k++) await this.members[i]!.write(z, k * this.slot)
    const b = Buffer.allocUnsafe(this.su)
    const step = Math.max(1, Math.floor((1 << 20) / this.su))
    let done = 0
    for (const [lo, hi] of rb.ranges) {
      for (let row = Math.max(lo, rb.row); row < hi; row++) {
        const release = await this.locks.lock(row)
        try {
          // checked before the write too: a member taken out (replaced) must not be written any more
          if (this.rebuilding !== rb) throw new VsmError('EIO', `raid5 member ${i} failed while being rebuilt`)
          await this.reconstruct(row, i, 0, this.su, b)
          this.setSums(i, row, 0, b)
          await this.members[i]!.write(b, this.at(row)).catch(async (e) => { await this.failMember(i, e); throw e })
          if (this.rebuilding !== rb) throw new VsmError('EIO', `raid5 member ${i} failed while being rebuilt`)
          rb.row = row + 1
        } finally {
          release()
        }
        done += this.su
        if (done % (step * this.su) === 0 || row + 1 === hi) await opts.onChunk?.(done, (row + 1) * this.su)
      }
    }
    await this.log?.persistMember(i)
    await this.flush()
    this.rebuilding = null
    if (!this.degraded) await this.log?.clearPending()
    return done
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    try {
      await this.flush()
      // so the next open knows there is nothing to replay
      if (this.seq > 0) this.completed(await this.journalAppend(0, 0, []))
      await this.log?.releaseAll()
    } finally {
      await Promise.all(this.members.map((m) => m?.close()))
      this.opts.onClose?.()
    }
  }
}
