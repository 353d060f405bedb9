// The copy of a volume onto its new layout during a grow, move or relayout: a two-copy
// mirror [old layout, target] with the target write-only, and write intent recorded in
// a log of its own (a dirty-region log over a bitmap in a small extent allocated with
// the target), so that a copy stopped by a crash resumes from its last checkpoint
// instead of from zero.
//
// Why that is sound: the owner saves a checkpoint only after flushing the target, so
// below it the target holds what the old layout held, except where a write was in
// flight at the crash and reached one layout and not the other. Such a write's region
// bit was made durable before the write was issued, and bits clear only after a flush
// has made a region's writes durable on both layouts (never while the target is
// failed, when the target misses writes). The resumed copy takes those regions again
// from the old layout, which its own resync or journal replay has made consistent at
// open, and everything from the checkpoint on.
//
// A log that cannot be written costs the checkpoint, never a write: the owner is told
// (and drops the checkpoint durably) before any write goes on unlogged.
import { BlockDev, VsmError, rejectBadRange } from '../block/blockdev'
import { MirrorDev, CopyOptions } from './mirror'
import { DirtyRegionLog, LogHost, LogMember } from './drl'

export class ReshapeDev implements BlockDev, LogHost {
  readonly mirror: MirrorDev
  private readonly log: DirtyRegionLog | null
  /** Set once the log failed: resolves when the owner has recorded that the checkpoint is gone. */
  private lost: Promise<void> | null = null

  constructor(readonly old: BlockDev, readonly target: BlockDev, private readonly logAt: LogMember | null,
      private readonly onLogLost: (err: unknown) => Promise<void>) {
    this.mirror = new MirrorDev([old, null], { size: old.size })
    this.mirror.attach(1, target)
    this.log = logAt && new DirtyRegionLog(old.size, [logAt], this)
  }

  get size(): number { return this.mirror.size }

  /** Intent is being recorded, so a checkpoint can be trusted after a crash. */
  get logged(): boolean { return this.log !== null && this.lost === null }

  get targetFailed(): boolean { return this.mirror.failed[1] }

  // LogHost: the log's one member is the log itself
  isHealthy(): boolean { return this.lost === null }
  /** While the target misses writes, bits are the record of where it does: keep them. */
  get degraded(): boolean { return this.mirror.failed[1] }
  failMember(_i: number, err: unknown): Promise<void> {
    this.lost ??= this.onLogLost(err)
    return this.lost.catch(() => {})
  }

  read(buf: Buffer, offset: number): Promise<number> { return this.mirror.read(buf, offset) }

  write(buf: Buffer, offset: number): Promise<void> {
    const log = this.log
    if (!log || buf.length === 0) return this.mirror.write(buf, offset)
    if (this.lost) return this.lost.then(() => this.mirror.write(buf, offset))
    const bad = rejectBadRange(this, offset, buf.length)
    if (bad) return bad
    const rs = log.regionSize
    const r0 = Math.floor(offset / rs), r1 = Math.floor((offset + buf.length - 1) / rs)
    const go = () => this.mirror.write(buf, offset)
    const intent = log.begin(r0, r1)
    const p = intent ? intent.then(go, (e) => (this.lost ? this.lost.then(go) : Promise.reject(e))) : go()
    return p.finally(() => log.end(r0, r1))
  }

  async flush(): Promise<void> {
    const e = this.log?.flushStart() ?? 0
    await this.mirror.flush()
    this.log?.flushDone(e)
  }

  /** Volume ranges whose bits were set when the log was loaded: where the layouts may differ. */
  pendingRanges(): [number, number][] {
    return this.log ? this.log.pendingRanges() : []
  }

  /** Copy ranges from the old layout onto the target (in address order), writes going on. */
  copy(ranges: [number, number][], opts: CopyOptions): Promise<number> {
    return this.mirror.copyRanges(1, ranges, opts)
  }

  /** Make everything copied so far durable on the target (before a checkpoint says so). */
  async flushTarget(): Promise<void> {
    if (this.targetFailed) throw new VsmError('EIO', `the new layout failed: ${this.mirror.errors[1]}`)
    try {
      await this.target.flush()
    } catch (e) {
      await this.mirror.failMember(1, e)
      throw e
    }
  }

  /** Once nothing goes through any more: let writes in flight and log writes land. */
  async settled(): Promise<void> {
    await this.mirror.settled()
    await this.logAt?.bitmap.persist(false).catch(() => {})
  }

  async close(): Promise<void> {
    try {
      await this.flush()
      await this.log?.releaseAll()
    } finally {
      await this.mirror.close()
    }
  }
}
