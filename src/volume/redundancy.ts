// What the pool asks of an open redundant layout, whatever its kind: fail a member,
// take one out for a replacement, bring a stale member up to date (a rebuild run with
// its total and checkpoints), scrub. Indexes are the volume's member indexes; each
// adapter maps them onto its layout objects (mirror.ts, raid5.ts), which own the
// mechanism. The pool never reaches into a layout's state: it goes through here.
import type { LogMember } from './drl'
import type { MemberConfig } from './config'
import type { ChecksumTable } from './checksum'
import type { SliceDev } from './slice'
import { MirrorDev } from './mirror'
import { Raid5Dev } from './raid5'
import { intersectRanges, mergeRanges, rangesBytes } from '../block/ranges'

/** A member's data window and, on a checksummed volume, its checksum table. */
export interface MemberIo { data: SliceDev; sums: ChecksumTable | null }

export type OnChunk = (done: number, pos: number) => Promise<void>
export type ScrubProgress = (pos: number, read: number) => Promise<void>

/** A scrub's findings in member terms (the pool names the devices). */
export interface ScrubFindings {
  checkedBytes: number
  /** Bytes never written (by the checksum tables), so not read. */
  skippedBytes: number
  repaired: { member: number; offset: number }[]
  /** Blocks no copy of which verifies (member: where parity could not repair it). */
  unrecoverable: { member?: number; offset: number }[]
  parityRowsFixed: number
}

/** A stale member being brought up to date. */
export interface RebuildRun {
  /** Bytes the copy will write. */
  total: number
  /** Bytes it needed that no member's table says were ever written: left as never written, not copied. */
  skipped: number
  copy(onChunk: OnChunk): Promise<number>
  /** Make what the copy has done below pos durable; the resume point to record, or null if this kind of copy keeps none. */
  checkpoint(pos: number): Promise<number | null>
}

export interface Redundancy {
  /** Take member i out of service as an I/O error would: the layout reports it to the pool. */
  failMember(i: number, err: unknown): Promise<void>
  /** Take member i out unreported (the pool is replacing it): never read again, a rebuild onto it stops. */
  takeOut(i: number): void
  /** Start bringing stale member i (config m) up to date, attaching it write-only if it is not yet. */
  rebuild(i: number, m: MemberConfig, io: MemberIo, log: LogMember | null): Promise<RebuildRun>
  /** onChunk gets the volume offset reached and the bytes read so far (what a rate limit holds). */
  scrub(onChunk: ScrubProgress): Promise<ScrubFindings>
  /**
   * Volume byte ranges (sorted, disjoint) that may have been written, by the members'
   * checksum tables: a superset, the whole volume where a table cannot tell.
   */
  usedRanges(): Promise<[number, number][]>
}

/** Volume ranges of stripe rows of rowBytes that hold any of member ranges rs (units of unit bytes per row per member). */
function rowsToVolume(rs: [number, number][], unit: number, rowBytes: number, size: number): [number, number][] {
  return mergeRanges(rs.map(([lo, hi]) => [Math.floor(lo / unit) * rowBytes, Math.min(size, Math.ceil(hi / unit) * rowBytes)]))
}

export { mergeRanges }

/**
 * mirror: one group of all members; raid10: one group per stripe column, striped by
 * stripeUnit. idx maps a group's copy to the volume's member.
 */
export class MirrorGroups implements Redundancy {
  constructor(readonly groups: { mirror: MirrorDev; idx: number[] }[], private readonly stripeUnit = 0) {}

  private find(i: number): { mirror: MirrorDev; k: number } | null {
    for (const g of this.groups) {
      const k = g.idx.indexOf(i)
      if (k >= 0) return { mirror: g.mirror, k }
    }
    return null
  }

  failMember(i: number, err: unknown): Promise<void> {
    const at = this.find(i)
    return at ? at.mirror.failMember(at.k, err) : Promise.resolve()
  }

  takeOut(i: number): void {
    const at = this.find(i)
    at?.mirror.takeOut(at.k)
  }

  async rebuild(i: number, m: MemberConfig, io: MemberIo, log: LogMember | null): Promise<RebuildRun> {
    const { mirror, k } = this.find(i)!
    if (!mirror.writeOnly[k]) mirror.attach(k, io.data, log, io.sums)
    // a full rebuild resumed after a crash: the rest, plus whatever was written meanwhile
    const resumeAt = m.resync === 'full' ? m.rebuilt ?? 0 : 0
    const needed = (m.resync === 'delta' ? mirror.missedRanges() : mergeRanges([...(resumeAt > 0 ? mirror.missedRanges() : []), [resumeAt, mirror.size]]))
      .map(([lo, hi]): [number, number] => [lo, Math.min(hi, mirror.size)])
    // asked once the new copy takes every write: what no table marks now is never written on
    // any copy, and the new copy's own table (stale from an earlier stay here, or blank) counts too
    const ranges = intersectRanges(needed, await mirror.usedRanges(k))
    return {
      total: rangesBytes(ranges),
      skipped: rangesBytes(needed) - rangesBytes(ranges),
      copy: (onChunk) => mirror.copyRanges(k, ranges, { onChunk }),
      // ranges are copied in address order, so everything below pos is on the new copy
      checkpoint: async (pos) => (m.resync === 'full' ? Math.max(resumeAt, pos) : null),
    }
  }

  async scrub(onChunk: ScrubProgress): Promise<ScrubFindings> {
    const out: ScrubFindings = { checkedBytes: 0, skippedBytes: 0, repaired: [], unrecoverable: [], parityRowsFixed: 0 }
    let base = 0
    for (const g of this.groups) {
      const r = await g.mirror.scrub({ onChunk: (read, pos) => onChunk(base + pos, out.checkedBytes + read) })
      base += g.mirror.size
      out.checkedBytes += r.checkedBytes
      out.skippedBytes += r.skippedBytes
      for (const x of r.repaired) out.repaired.push({ member: g.idx[x.copy], offset: x.offset })
      for (const off of r.unrecoverable) out.unrecoverable.push({ offset: off })
    }
    return out
  }

  async usedRanges(): Promise<[number, number][]> {
    if (this.groups.length === 1) return this.groups[0].mirror.usedRanges()
    const all: [number, number][] = []
    const row = this.stripeUnit * this.groups.length, size = this.groups.length * this.groups[0].mirror.size
    for (const g of this.groups) all.push(...rowsToVolume(await g.mirror.usedRanges(), this.stripeUnit, row, size))
    return mergeRanges(all)
  }
}

export class Raid5Members implements Redundancy {
  constructor(readonly r5: Raid5Dev, private readonly stripeUnit: number) {}

  failMember(i: number, err: unknown): Promise<void> { return this.r5.failMember(i, err) }

  takeOut(i: number): void { this.r5.takeOut(i) }

  /**
   * Put stale member i back to be rebuilt: the rows it missed (delta) or all rows
   * (full), from its checkpoint on, and the rows the last replay rewrote without it (a
   * crash after the checkpoint may have lost them on it).
   */
  attach(i: number, m: MemberConfig, io: MemberIo, log: LogMember | null): void {
    const r5 = this.r5
    const from = Math.floor((m.rebuilt ?? 0) / this.stripeUnit)
    const need = m.resync === 'delta' ? r5.missedRows() : [[0, r5.rows] as [number, number]]
    const rows = mergeRanges([
      ...need.map(([lo, hi]) => [Math.max(lo, from), hi] as [number, number]).filter(([lo, hi]) => lo < hi),
      ...r5.replayedRows.map((r) => [r, r + 1] as [number, number]),
    ])
    r5.attach(i, io.data, rows, io.sums, log)
  }

  async rebuild(i: number, m: MemberConfig, io: MemberIo, log: LogMember | null): Promise<RebuildRun> {
    if (!this.r5.rebuilding) this.attach(i, m, io, log)
    const skipped = await this.r5.skipUnwritten()
    return {
      total: this.r5.rebuildLeft,
      skipped,
      copy: (onChunk) => this.r5.rebuild(i, { onChunk }),
      // every row it needs below pos is written: durable before the config says so
      checkpoint: async (pos) => {
        await this.r5.flush()
        return pos
      },
    }
  }

  async scrub(onChunk: ScrubProgress): Promise<ScrubFindings> {
    const r = await this.r5.scrub({ onChunk: (read, pos) => onChunk(pos, read) })
    return {
      checkedBytes: r.checkedBytes, skippedBytes: r.skippedBytes,
      repaired: r.repaired.map((x) => ({ member: x.member, offset: x.offset })),
      unrecoverable: r.unrecoverable.map((x) => ({ member: x.member, offset: x.offset })),
      parityRowsFixed: r.parityRows.length,
    }
  }

  async usedRanges(): Promise<[number, number][]> {
    const row = this.stripeUnit * (this.r5.members.length - 1)
    return rowsToVolume(await this.r5.usedRows(), 1, row, this.r5.size)
  }
}
