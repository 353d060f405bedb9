// A group taken over on this site (`vsm repl takeover` on the secondary): its replicas
// are now the fs's volumes and are served. Every write or zeroing discard first marks
// its regions durably in a bitmap at the end of the group's state volume (the blocks
// changed here since the split: what a failback must copy back, and what tells an old
// primary that both sides wrote), then reaches the volume. Also answers an old primary
// that connects to <home>/replica.sock: the group was taken over, at which generation
// and point, and how much changed here since.
import type { Server } from 'net'
import type { BlockDev } from '../block/blockdev'
import { discardAsZero, type ReplicaState, type TakeoverGeneration } from './applier'
import { VsmError } from '../block/blockdev'
import { RegionBitmap, regionSizeFor } from './bitmap'
import { MAX_READ, mergeRanges } from './failback'
import { BITMAP_BYTES, writeSlot } from './log'
import type { GroupIO, ReplicatedVolume } from './tap'
import { listenReplicaSocket, SecondaryLink } from './wire'

const changedBitmap = (stateDev: BlockDev, sizes: number[]) =>
  RegionBitmap.open({ dev: stateDev, offset: stateDev.size - BITMAP_BYTES, bytes: BITMAP_BYTES }, regionSizeFor(sizes, BITMAP_BYTES), sizes, true)

export class PromotedGroup implements GroupIO {
  /** A failback asked this site to step down: once the fs is closed, close() records it. */
  steppingDown = false

  private constructor(private readonly stateDev: BlockDev, private readonly state: ReplicaState & { takenOver: TakeoverGeneration }, readonly taps: ReplicatedVolume[], private readonly changed: RegionBitmap) {
    taps.forEach((t, i) => { t.group = this; t.index = i })
  }

  static async open(stateDev: BlockDev, state: ReplicaState & { takenOver: TakeoverGeneration }, taps: ReplicatedVolume[]): Promise<PromotedGroup> {
    return new PromotedGroup(stateDev, state, taps, await changedBitmap(stateDev, taps.map((t) => t.size)))
  }

  get name(): string { return this.state.group }
  get takenOver(): TakeoverGeneration { return this.state.takenOver }

  async write(tap: ReplicatedVolume, buf: Buffer, offset: number): Promise<void> {
    await this.changed.mark(tap.index, offset, buf.length)
    await tap.inner.write(buf, offset)
  }

  async zero(tap: ReplicatedVolume, offset: number, length: number): Promise<void> {
    await this.changed.mark(tap.index, offset, length)
    await discardAsZero(tap.inner, offset, length)
  }

  async flush(): Promise<void> { await Promise.all(this.taps.map((t) => t.inner.flush())) }

  /** Bytes of the regions written here since the takeover. */
  get changedBytes(): number { return this.changed.dirtyBytes }

  status() {
    return {
      group: this.name, role: 'secondary', state: 'taken-over', volumes: this.taps.map((t) => t.name),
      generation: this.takenOver.generation, takenOverAtSeq: this.takenOver.point, takenOverAt: new Date(this.takenOver.at).toISOString(),
      changedBytes: this.changedBytes, serving: true,
    }
  }

  /** After the fs above closed: a site stepping down records it (it starts as a failback source next). */
  async close(): Promise<void> {
    for (const t of this.taps) t.group = null
    if (!this.steppingDown) return
    await Promise.all(this.taps.map((t) => t.inner.flush()))
    const next: ReplicaState = { ...this.state, steppedDown: true, counter: this.state.counter + 1 }
    await writeSlot(this.stateDev, next)
  }
}

/**
 * Listens on the home's replica socket for old primaries: each hello for a group taken
 * over here is answered with `taken-over`, anything else with an error; no record is
 * ever applied.
 */
export function answerOldPrimaries(home: string, groups: Map<string, PromotedGroup>, stepDown: (g: PromotedGroup, force: boolean) => Promise<void>): Promise<Server> {
  return listenReplicaSocket(home, (link: SecondaryLink) => {
    let answered: PromotedGroup | null = null
    link.onMessage((m) => {
      if (m.t === 'step-down' && answered) {
        // closing the link tells the old primary the step-down is under way
        stepDown(answered, m.force).then(() => link.close('stepping down'), (e) => link.send({ t: 'error', code: (e as VsmError).code ?? 'EIO', message: (e as Error).message }))
        return
      }
      if (m.t !== 'hello') { link.close('expected hello'); return }
      const g = groups.get(m.group)
      if (!g) link.send({ t: 'error', code: 'ENOENT', message: `this site serves no replica of group ${m.group}` })
      else if (g.takenOver.parent !== m.logId) link.send({ t: 'error', code: 'EEXIST', message: `group ${m.group} here was taken over from another primary log (${g.takenOver.parent}, not ${m.logId})` })
      else {
        answered = g
        link.send({ t: 'taken-over', generation: g.takenOver.generation, parent: g.takenOver.parent, point: g.takenOver.point, at: g.takenOver.at, changedBytes: g.changedBytes })
      }
      // the primary closes once it has read the answer (or asked to step down); a stuck one is dropped
      setTimeout(() => link.close('answered'), 30_000).unref()
    })
  })
}

/**
 * A group stepped down on this secondary for a failback: answers its old primary's hello
 * with the ranges changed here since the takeover, serves their bytes, and at
 * failback-done makes the replica state follow the old primary's log from that seq
 * again (the changed bitmap cleared first). Nothing is written to the replicas.
 */
export class FailbackSource {
  private constructor(private readonly stateDev: BlockDev, private readonly state: ReplicaState & { takenOver: TakeoverGeneration }, private readonly volumes: BlockDev[], private readonly changed: RegionBitmap, private readonly onDone: () => void) {}

  static async open(stateDev: BlockDev, state: ReplicaState & { takenOver: TakeoverGeneration }, volumes: BlockDev[], onDone: () => void): Promise<FailbackSource> {
    return new FailbackSource(stateDev, state, volumes, await changedBitmap(stateDev, volumes.map((v) => v.size)), onDone)
  }

  serve(link: SecondaryLink, logId: string): void {
    if (logId !== this.state.takenOver.parent) { link.send({ t: 'error', code: 'EEXIST', message: `group ${this.state.group} here was taken over from another primary log` }); link.close('refused'); return }
    link.onMessage((m, _data) => {
      if (m.t === 'read') {
        const buf = Buffer.alloc(Math.min(m.length, MAX_READ))
        this.volumes[m.vol].read(buf, m.offset).then(() => link.send({ t: 'data', id: m.id }, buf), (e) => link.send({ t: 'error', code: 'EIO', message: (e as Error).message }))
      } else if (m.t === 'failback-done') {
        this.finish(m.durable).then(() => { link.send({ t: 'failback-complete' }); this.onDone() }, (e) => link.send({ t: 'error', code: 'EIO', message: (e as Error).message }))
      }
    })
    const ranges = mergeRanges(this.changed.marked().map((r) => [r.vol, r.offset, r.length]))
    link.send({ t: 'failback-source', generation: this.state.takenOver.generation, point: this.state.takenOver.point, ranges })
  }

  private async finish(durable: number): Promise<void> {
    await this.changed.clearAll()
    const next: ReplicaState = { logId: this.state.takenOver.parent, group: this.state.group, volumes: this.state.volumes, durable, counter: this.state.counter + 1 }
    await writeSlot(this.stateDev, next)
  }
}
