// Replication policy, apart from the mechanism: when to (re)connect and how long to
// back off after a failed or dropped link, how long a wait may last, and which state a
// group is in for status.
// The mechanism (log, shipper, applier, wire) never sleeps or retries by itself.
import { VsmError } from '../block/blockdev'

export type Mode = 'async' | 'sync' | 'sync-fallback'
export const MODES: readonly Mode[] = ['async', 'sync', 'sync-fallback']

/** What create and set both check: a known mode, a rate of at least 64K, a sync timeout only with sync-fallback. */
export function checkTuning(mode: unknown, rate: number | undefined, syncTimeoutMs: number | undefined): void {
  if (!MODES.includes(mode as Mode)) throw new VsmError('EINVAL', `bad mode ${JSON.stringify(mode)}: ${MODES.join(' or ')}`)
  if (rate !== undefined && (!Number.isSafeInteger(rate) || rate < 64 << 10)) throw new VsmError('EINVAL', 'the rate must be at least 64K bytes per second')
  if (syncTimeoutMs !== undefined && (mode !== 'sync-fallback' || !Number.isSafeInteger(syncTimeoutMs) || syncTimeoutMs < 100)) throw new VsmError('EINVAL', '--sync-timeout goes with --mode sync-fallback and is at least 0.1 s')
}

/**
 * A secondary counts its primary as connected while it heard from it within this long
 * (an idle primary pings every 1.25 s): after a partition or the primary's death the
 * link may stay open for hours (no TCP keepalive crosses sshd to the agent), and a
 * takeover must not need --force for that.
 */
export const PRIMARY_SILENT_MS = 10_000

export type ReplState = 'syncing' | 'replicating' | 'disconnected' | 'paused' | 'failed' | 'logging-to-bitmap' | 'taken-over' | 'split-brain'

/** Exponential backoff with jitter: 0.5 s doubling to 30 s, reset once a session comes up. */
export function backoffMs(attempt: number, base = 500, max = 30_000): number {
  return Math.min(max, base * 2 ** Math.min(attempt, 16)) * (0.5 + Math.random() / 2)
}

/** Waits for p at most ms: true when p settled first. */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<false>((r) => { timer = setTimeout(() => r(false), ms) })
  try { return await Promise.race([p.then(() => true), late]) } finally { clearTimeout(timer) }
}

/**
 * In sync mode a flush waits for the secondary, except while the operator paused the
 * group or after the secondary took it over (nothing ships to it any more); in
 * sync-fallback mode also not while the group has fallen back to async.
 */
export function flushWaitsForSecondary(g: { mode: Mode; paused: boolean; takenOver?: unknown }, fallenBack = false): boolean {
  return !g.paused && !g.takenOver && (g.mode === 'sync' || (g.mode === 'sync-fallback' && !fallenBack))
}

export function stateOf(g: { failed: boolean; paused: boolean; bitmap: boolean; synced: boolean; connected: boolean; takenOver?: { splitBrain: boolean } | null }): ReplState {
  if (g.takenOver) return g.takenOver.splitBrain ? 'split-brain' : 'taken-over'
  if (g.failed) return 'failed'
  if (g.paused) return 'paused'
  if (g.bitmap) return 'logging-to-bitmap'
  if (!g.connected) return 'disconnected'
  return g.synced ? 'replicating' : 'syncing'
}

export interface KeeperOptions<L> {
  connect(): Promise<L>
  /** Runs one session; resolves with why it ended. `up()` is called once it is established. */
  session(link: L, up: () => void): Promise<string>
  onEvent(what: 'connect-failed' | 'session-ended', detail: string, retryInMs: number): void
  backoff?: (attempt: number) => number
}

/** Keeps a link up: connect, run a session, back off, again, until stopped; holds off while paused. */
export class LinkKeeper<L extends { close(why?: string): void }> {
  private stopped = false
  private paused = false
  private current: L | null = null
  private wake: (() => void) | null = null
  private loop: Promise<void> | null = null

  constructor(private readonly opts: KeeperOptions<L>) {}

  start(paused: boolean): void {
    this.paused = paused
    this.loop ??= this.run()
  }

  setPaused(paused: boolean): void {
    this.paused = paused
    if (paused) this.current?.close('paused')
    this.wake?.()
  }

  /** Drops the current link at once (tests; an operator's kick); the loop reconnects. */
  drop(why: string): void { this.current?.close(why) }

  async stop(): Promise<void> {
    this.stopped = true
    this.current?.close('stopping')
    this.wake?.()
    await this.loop
  }

  private sleep(ms: number, keepAlive = true): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(() => { this.wake = null; r() }, ms)
      if (!keepAlive) t.unref() // a paused group is no reason to keep a process alive
      this.wake = () => { clearTimeout(t); this.wake = null; r() }
    })
  }

  private async run(): Promise<void> {
    let attempt = 0
    const backoff = this.opts.backoff ?? backoffMs
    while (!this.stopped) {
      if (this.paused) { await this.sleep(3_600_000, false); continue }
      let link: L
      try {
        link = await this.opts.connect()
      } catch (e) {
        const wait = backoff(attempt++)
        this.opts.onEvent('connect-failed', (e as Error).message, wait)
        await this.sleep(wait)
        continue
      }
      if (this.stopped || this.paused) { link.close('stopping'); continue }
      this.current = link
      const why = await this.opts.session(link, () => { attempt = 0 })
      this.current = null
      if (this.stopped) break
      const wait = backoff(attempt++)
      this.opts.onEvent('session-ended', why, wait)
      if (!this.paused) await this.sleep(wait)
    }
  }
}
