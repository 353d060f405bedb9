// A seeded simulated link pair for replicator tests (the name says sim): messages are
// delivered asynchronously and, with the given probabilities, dropped, duplicated,
// held back behind the next message (reordered), or the whole link is cut. Also the
// model the sim tests check replicas against.
import type { Message, Link } from '../../src/replicator/wire'
import type { LogRecord } from '../../src/replicator/log'

/** A record applied to an in-memory image at once (a check that follows may copy it). */
export function applyToImage(image: Buffer[], r: LogRecord) {
  if (r.kind === 'write') r.data!.copy(image[r.vol], r.offset)
  else if (r.kind === 'zero') image[r.vol].fill(0, r.offset, r.offset + r.length)
}

export interface SimFaults { drop?: number; duplicate?: number; reorder?: number; disconnect?: number }

export function simPair<A extends Message, B extends Message>(rnd: () => number, faults: SimFaults, onDeliver?: (m: Message, data?: Buffer) => void) {
  let closed = false
  const closers: Array<(why: string) => void> = []
  const close = (why: string) => {
    if (closed) return
    closed = true
    for (const c of closers) setImmediate(() => c(why))
  }
  function end<In extends Message, Out extends Message>(peer: () => ((m: In, d?: Buffer) => void)) {
    let held: Array<[Message, Buffer | undefined]> = []
    const deliver = (m: Message, d?: Buffer) => setImmediate(() => {
      if (closed) return
      onDeliver?.(m, d)
      ;(peer() as unknown as (m: Message, d?: Buffer) => void)(m, d)
    })
    let onMsg: (m: Message, d?: Buffer) => void = () => undefined
    const link: Link<any, any> & { handler: () => (m: any, d?: Buffer) => void } = {
      send: (m: Out, d?: Buffer) => {
        if (closed) return
        const r = rnd()
        if (r < (faults.disconnect ?? 0)) { close('sim: link cut'); return }
        const copy = d ? Buffer.from(d) : undefined
        const r2 = rnd()
        const dropP = faults.drop ?? 0, dupP = faults.duplicate ?? 0, reoP = faults.reorder ?? 0
        const before = held
        held = []
        if (r2 < dropP) { /* lost */ } else if (r2 < dropP + dupP) { deliver(m, copy); deliver(m, copy) } else if (r2 < dropP + dupP + reoP) { held.push([m, copy]) } else deliver(m, copy)
        for (const [hm, hd] of before) deliver(hm, hd)
      },
      onMessage: (fn) => { onMsg = fn as (m: Message, d?: Buffer) => void },
      onClose: (fn) => { closers.push(fn) },
      close: (why = 'closed') => close(why),
      handler: () => onMsg,
    }
    return link
  }
  const a: any = end<B, A>(() => b.handler())
  const b: any = end<A, B>(() => a.handler())
  return { a: a as Link<B, A>, b: b as Link<A, B>, cut: () => close('sim: cut by test') }
}
