// The primary's half of the wire mechanism: one session per link. Says hello, learns
// from the secondary's welcome where it stands, then sends the log's durable records
// in seq order within a window, rewinds on a nack or when acknowledgements stop
// coming (a lost record), and reports each durable position the secondary
// acknowledges. A secondary behind the log's tail but within the gap an overflow left
// resumes at the tail (the resync-begin). Holds what it sends to the group's --rate
// (a token bucket). It never decides when to connect or to give up: that is policy.ts.
import { VsmError } from '../block/blockdev'
import type { ReplicationLog } from './log'
import type { PrimaryLink, ToPrimary, VolumeSpec } from './wire'

export interface ShipperOptions {
  /** Records sent and not yet acknowledged as received. */
  window?: number
  /** With records outstanding and no acknowledgement for this long, send again from the last acknowledged. */
  retransmitMs?: number
  /** Bytes per second the link may carry (records' data and headers); 0 or absent: unlimited. */
  rate?: number
}

/** Bytes a frame costs besides a record's data (framing and JSON), for the rate limit. */
const FRAME_COST = 160

/**
 * A token bucket: `rate` bytes per second, at most one second's worth saved up, so
 * an idle link does not earn a burst larger than that.
 */
export class Pacer {
  private allowance: number
  private last = Date.now()

  constructor(private readonly rate: number) { this.allowance = rate }

  /** Takes n bytes; resolves when they may go. */
  async take(n: number): Promise<void> {
    const now = Date.now()
    this.allowance = Math.min(this.rate, this.allowance + ((now - this.last) * this.rate) / 1000)
    this.last = now
    this.allowance -= n
    if (this.allowance < 0) await new Promise((r) => setTimeout(r, (-this.allowance / this.rate) * 1000))
  }
}

export interface SessionHooks {
  hello: { group: string; logId: string; volumes: VolumeSpec[] }
  /** The secondary holds everything up to seq durably. */
  onDurable(seq: number): void
  /** The welcome arrived: the session is up. */
  onWelcome(): void
  /** The secondary's checksums for a verify record. */
  onSums(seq: number, sums: number[]): void
  /** The secondary answered that it took the group over: no record goes to it again. */
  onTakenOver(m: Extract<ToPrimary, { t: 'taken-over' }>): void
}

export class Shipper {
  private link: PrimaryLink | null = null
  private sendNext = 0
  private ackedNext = 0
  private ackedDurable = 0
  private pumping = false
  private lastProgress = Date.now()
  private timer: NodeJS.Timeout | null = null
  private hooks: SessionHooks | null = null
  private pacer: Pacer | null
  /** Bytes sent, records' data and frames (status shows the throughput). */
  sentBytes = 0

  constructor(private readonly log: ReplicationLog, private readonly opts: ShipperOptions = {}) {
    this.pacer = opts.rate ? new Pacer(opts.rate) : null
  }

  get connected(): boolean { return this.link !== null && this.sendNext > 0 }

  /** vsm repl set --rate: bytes per second from now on (undefined: unlimited). */
  setRate(rate: number | undefined): void { this.pacer = rate ? new Pacer(rate) : null }

  /** Runs a session over link until it closes; resolves with why. Rejects the session when the secondary is behind the log's tail. */
  session(link: PrimaryLink, hooks: SessionHooks): Promise<string> {
    return new Promise((resolve) => {
      this.link = link
      this.hooks = hooks
      this.sendNext = 0
      let ended = false
      const end = (why: string) => {
        if (ended) return
        ended = true
        clearTimeout(helloTimer)
        if (this.timer) clearInterval(this.timer)
        this.timer = null
        if (this.link === link) this.link = null
        resolve(why)
      }
      // a hello or welcome lost on the way (or a remote that hangs, or a link that closed before this session
      // listened) must not hold the session forever: it ends here even if the link never reports its close
      const helloTimer = setTimeout(() => {
        if (this.sendNext > 0) return
        link.close('no welcome from the secondary')
        end('no welcome from the secondary')
      }, 4 * (this.opts.retransmitMs ?? 5000))
      link.onClose(end)
      link.onMessage((m) => this.onMessage(link, m))
      link.send({ t: 'hello', ...hooks.hello })
    })
  }

  /** New durable records in the log: send what the window allows. */
  kick(): void { void this.pump() }

  private onMessage(link: PrimaryLink, m: ToPrimary): void {
    if (link !== this.link) return
    // before the welcome, an ack or nack (the secondary acknowledging an earlier link's records) says nothing about this session
    if (this.sendNext === 0 && (m.t === 'ack' || m.t === 'nack')) return
    switch (m.t) {
      case 'welcome':
        if (this.sendNext > 0) return // a duplicate
        if (this.resumeAt(m.next) === null) {
          link.close(`the secondary is at ${m.next - 1}, behind the log's tail ${this.log.tailSeq}: it needs a full resync`)
          return
        }
        if (m.next > this.log.headSeq + 1) {
          link.close(`the secondary holds records up to ${m.next - 1} that this log (head ${this.log.headSeq}) never had: split brain or another primary`)
          return
        }
        this.sendNext = this.ackedNext = this.resumeAt(m.next)!
        this.ackedDurable = m.durable
        this.lastProgress = Date.now()
        this.hooks!.onDurable(m.durable)
        this.hooks!.onWelcome()
        this.timer = setInterval(() => this.checkStalled(), Math.max(50, (this.opts.retransmitMs ?? 5000) / 4))
        void this.pump()
        return
      case 'ack':
        if (m.next > this.ackedNext || m.durable > this.ackedDurable) this.lastProgress = Date.now()
        this.ackedNext = Math.max(this.ackedNext, m.next)
        this.ackedDurable = Math.max(this.ackedDurable, m.durable)
        if (this.sendNext < this.ackedNext) this.sendNext = this.ackedNext
        this.hooks!.onDurable(m.durable)
        void this.pump()
        return
      case 'nack': {
        const next = this.resumeAt(m.next) ?? m.next
        if (next >= this.ackedNext && next < this.sendNext) this.sendNext = next
        this.ackedNext = Math.max(this.ackedNext, next)
        this.lastProgress = Date.now()
        void this.pump()
        return
      }
      case 'sums':
        this.hooks!.onSums(m.seq, m.sums)
        return
      case 'taken-over':
        this.hooks!.onTakenOver(m)
        link.close(`the secondary took group ${this.hooks!.hello.group} over (generation ${m.generation}) holding records up to ${m.point}`)
        return
      case 'error':
        link.close(`secondary: ${m.message}`)
    }
  }

  /** Where to send from for a secondary whose next is `next`, or null when the log no longer has what it lacks. */
  private resumeAt(next: number): number | null {
    if (next >= this.log.tailSeq) return next
    const gap = this.log.gapFrom
    return gap !== null && next >= gap ? this.log.tailSeq : null
  }

  /** Runs every retransmitMs/4. Nothing heard for a while: records sent and not received are sent again; sent and not yet durable, the secondary is asked where it stands (its ack may have been lost). */
  private checkStalled(): void {
    const waiting = this.sendNext - 1 > this.ackedDurable
    if (!this.link || !waiting) {
      this.lastProgress = Date.now()
      // the heartbeat of an idle link: the secondary tells a quiet primary from a lost one
      this.link?.send({ t: 'ping' })
      return
    }
    if (Date.now() - this.lastProgress < (this.opts.retransmitMs ?? 5000)) return
    this.lastProgress = Date.now()
    if (this.sendNext > this.ackedNext) { this.sendNext = this.ackedNext; void this.pump() } else this.link.send({ t: 'ping' })
  }

  private async pump(): Promise<void> {
    if (this.pumping) return
    this.pumping = true
    try {
      const window = this.opts.window ?? 64
      while (this.link && this.sendNext > 0 && this.sendNext <= this.log.durableSeq && this.sendNext - this.ackedNext < window) {
        const link = this.link
        if (this.sendNext < this.log.tailSeq) {
          // the log overflowed during this session: on from its resync-begin
          const at = this.resumeAt(this.sendNext)
          if (at === null) { link.close(`record ${this.sendNext} left the log before the secondary had it`); return }
          this.sendNext = this.ackedNext = at
          continue
        }
        const seq = this.sendNext
        const r = await this.log.read(seq)
        const cost = FRAME_COST + (r.data?.length ?? 0)
        await this.pacer?.take(cost)
        if (link !== this.link || seq !== this.sendNext) continue
        this.sentBytes += cost
        link.send({ t: 'rec', seq, kind: r.kind, vol: r.vol, offset: r.offset, length: r.length, time: r.time }, r.data)
        this.sendNext = seq + 1
      }
    } catch (e) {
      this.link?.close(e instanceof VsmError ? e.message : String(e))
    } finally {
      this.pumping = false
    }
  }
}
