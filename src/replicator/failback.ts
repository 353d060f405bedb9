// Failback on the old primary, the mechanism: asking the site that took over to step
// down, then (at the next start, before the fs mounts) copying back every range that
// differs, i.e. the ranges that site changed since the takeover and the ranges this
// site changed after the takeover point (its log's records after it and its overflow
// bitmap: what the dry-run reported), then dropping those records so nothing replays
// them, and telling the other site to follow this log again from its head. A crash
// anywhere repeats the copy (the source's data does not change while it is stepped
// down) or, once the records are dropped and the other site follows again, finishes
// locally.
import { VsmError } from '../block/blockdev'
import type { RegionBitmap } from './bitmap'
import type { ReplicationLog } from './log'
import type { PrimaryLink, ToPrimary } from './wire'

/** How long a failback waits for the other site to come back as its source. */
const SOURCE_WAIT_MS = 90_000
const ANSWER_MS = 30_000
/** Largest range a failback reads from the other site at once. */
export const MAX_READ = 1 << 20

type Hello = { t: 'hello'; group: string; logId: string; volumes: Array<{ name: string; size: number }> }

/** Messages of a link, one at a time, with a deadline. */
class Conversation {
  private queue: Array<{ m: ToPrimary; data?: Buffer }> = []
  private waiter: ((x: { m: ToPrimary; data?: Buffer } | Error) => void) | null = null
  private closed: string | null = null

  constructor(readonly link: PrimaryLink) {
    link.onMessage((m, data) => { if (this.waiter) { const w = this.waiter; this.waiter = null; w({ m, data }) } else this.queue.push({ m, data }) })
    link.onClose((why) => { this.closed = why; if (this.waiter) { const w = this.waiter; this.waiter = null; w(new VsmError('ECONNRESET', `link to the other site closed: ${why}`)) } })
  }

  /** The next message; rejects when the link closes or nothing comes within ms. */
  next(ms = ANSWER_MS): Promise<{ m: ToPrimary; data?: Buffer }> {
    const q = this.queue.shift()
    if (q) return Promise.resolve(q)
    if (this.closed !== null) return Promise.reject(new VsmError('ECONNRESET', `link to the other site closed: ${this.closed}`))
    return new Promise((res, rej) => {
      const t = setTimeout(() => { this.waiter = null; rej(new VsmError('ETIMEDOUT', 'the other site did not answer')) }, ms)
      this.waiter = (x) => { clearTimeout(t); if (x instanceof Error) rej(x); else res(x) }
    })
  }

  /** Resolves once the link closes (the other site stepping down), or fails with its error. */
  async closing(ms = ANSWER_MS): Promise<void> {
    for (;;) {
      let x: { m: ToPrimary }
      try { x = await this.next(ms) } catch (e) { if ((e as VsmError).code === 'ECONNRESET') return; throw e }
      if (x.m.t === 'error') throw new VsmError(x.m.code, x.m.message)
    }
  }
}

const refusal = (m: ToPrimary) => (m.t === 'error' ? new VsmError(m.code, `the other site: ${m.message}`) : new VsmError('EPROTO', `unexpected answer ${m.t} from the other site`))

/**
 * Asks the site that took over to stop serving: resolves once it closed the link to do
 * so (or is already the source), rejects with its refusal (EBUSY: disks open there).
 */
export async function requestStepDown(connect: () => Promise<PrimaryLink>, hello: Hello, force: boolean): Promise<void> {
  const c = new Conversation(await connect())
  try {
    c.link.send(hello)
    const { m } = await c.next()
    if (m.t === 'failback-source') return
    if (m.t !== 'taken-over') throw refusal(m)
    c.link.send({ t: 'step-down', force })
    await c.closing()
  } finally { c.link.close('asked') }
}

export interface FailbackResult { copiedBytes: number; ranges: number; at: number }

/**
 * The copy and the hand-back, run at start before the fs mounts. `copied` says an
 * earlier run dropped the records already (then only the hand-back is left).
 */
export async function failBack(o: {
  connect: () => Promise<PrimaryLink>; hello: Hello; log: ReplicationLog; bitmap: RegionBitmap; volumes: Array<{ write(b: Buffer, off: number): Promise<void>; flush(): Promise<void> }>
  point: number; copied: boolean; markCopied: () => Promise<void>
  /** The group's --rate: resolves when n more bytes may be read from the other site. */
  pace?: (n: number) => Promise<void>
}): Promise<FailbackResult> {
  const deadline = Date.now() + SOURCE_WAIT_MS
  for (;;) {
    let c: Conversation
    try { c = new Conversation(await o.connect()) } catch (e) {
      if (Date.now() > deadline) throw e
      await new Promise((r) => setTimeout(r, 500))
      continue
    }
    try {
      c.link.send(o.hello)
      const { m } = await c.next()
      // the other site is still stopping its stack, or starting as a secondary
      if (m.t === 'taken-over' && Date.now() < deadline) { await new Promise((r) => setTimeout(r, 500)); continue }
      if (m.t === 'welcome' && o.copied) return { copiedBytes: 0, ranges: 0, at: Date.now() }
      if (m.t !== 'failback-source') throw refusal(m)
      let copiedBytes = 0
      let ranges = 0
      if (!o.copied) {
        const delta = mergeRanges([...m.ranges, ...o.log.changesAfter(o.point).map((x) => [x.vol, x.offset, x.length] as [number, number, number]), ...o.bitmap.marked().map((x) => [x.vol, x.offset, x.length] as [number, number, number])])
        let id = 0
        for (const [vol, offset, length] of delta) {
          ranges++
          for (let at = offset; at < offset + length; at += MAX_READ) {
            const len = Math.min(MAX_READ, offset + length - at)
            await o.pace?.(len)
            c.link.send({ t: 'read', id: ++id, vol, offset: at, length: len })
            const a = await c.next()
            if (a.m.t !== 'data' || a.m.id !== id || a.data?.length !== len) throw refusal(a.m)
            await o.volumes[vol].write(a.data, at)
            copiedBytes += len
          }
        }
        await Promise.all(o.volumes.map((v) => v.flush()))
        // nothing after the point may be replayed over the copies: the records go, then the mark
        await o.log.dropAll()
        await o.bitmap.clearAll()
        await o.markCopied()
      }
      c.link.send({ t: 'failback-done', durable: o.log.headSeq })
      const done = await c.next()
      if (done.m.t !== 'failback-complete') throw refusal(done.m)
      return { copiedBytes, ranges, at: Date.now() }
    } finally { c.link.close('failback') }
  }
}

/** [vol, offset, length] ranges sorted and merged where they overlap or touch. */
export function mergeRanges(list: Array<[number, number, number]>): Array<[number, number, number]> {
  const sorted = [...list].sort((a, b) => a[0] - b[0] || a[1] - b[1])
  const out: Array<[number, number, number]> = []
  for (const [v, o, l] of sorted) {
    const last = out[out.length - 1]
    if (last && last[0] === v && o <= last[1] + last[2]) last[2] = Math.max(last[2], o + l - last[1])
    else out.push([v, o, l])
  }
  return out
}
