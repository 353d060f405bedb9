// A group taken over on this site (`vsm repl takeover` on the secondary): its replicas
// are now the fs's volumes and are served. Every write or zeroing discard first marks
// its regions durably in a bitmap at the end of the group's state volume (the blocks
// changed here since the split: what a failback must copy back, and what tells an old
// primary that both sides wrote), then reaches the volume. Also answers an old primary
// that connects to <home>/replica.sock: the group was taken over, at which generation
// and point, and how much changed here since.
import type { Server } from 'net'
import type { BlockDev } from '../block/blockdev'
import type { ReplicaState, TakeoverGeneration } from './applier'
import { RegionBitmap, regionSizeFor } from './bitmap'
import { BITMAP_BYTES } from './log'
import type { GroupIO, ReplicatedVolume } from './tap'
import { listenReplicaSocket, SecondaryLink } from './wire'

export class PromotedGroup implements GroupIO {
  private constructor(readonly name: string, readonly takenOver: TakeoverGeneration, readonly taps: ReplicatedVolume[], private readonly changed: RegionBitmap) {
    taps.forEach((t, i) => { t.group = this; t.index = i })
  }

  static async open(stateDev: BlockDev, state: ReplicaState & { takenOver: TakeoverGeneration }, taps: ReplicatedVolume[]): Promise<PromotedGroup> {
    const sizes = taps.map((t) => t.size)
    const changed = await RegionBitmap.open({ dev: stateDev, offset: stateDev.size - BITMAP_BYTES, bytes: BITMAP_BYTES }, regionSizeFor(sizes, BITMAP_BYTES), sizes, true)
    return new PromotedGroup(state.group, state.takenOver, taps, changed)
  }

  async write(tap: ReplicatedVolume, buf: Buffer, offset: number): Promise<void> {
    await this.changed.mark(tap.index, offset, buf.length)
    await tap.inner.write(buf, offset)
  }

  async zero(tap: ReplicatedVolume, offset: number, length: number): Promise<void> {
    await this.changed.mark(tap.index, offset, length)
    await tap.inner.discard!(offset, length)
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

  close(): void { for (const t of this.taps) t.group = null }
}

/**
 * Listens on the home's replica socket for old primaries: each hello for a group taken
 * over here is answered with `taken-over`, anything else with an error; no record is
 * ever applied.
 */
export function answerOldPrimaries(home: string, groups: Map<string, PromotedGroup>): Promise<Server> {
  return listenReplicaSocket(home, (link: SecondaryLink) => {
    link.onMessage((m) => {
      if (m.t !== 'hello') { link.close('expected hello'); return }
      const g = groups.get(m.group)
      if (!g) link.send({ t: 'error', code: 'ENOENT', message: `this site serves no replica of group ${m.group}` })
      else if (g.takenOver.parent !== m.logId) link.send({ t: 'error', code: 'EEXIST', message: `group ${m.group} here was taken over from another primary log (${g.takenOver.parent}, not ${m.logId})` })
      else link.send({ t: 'taken-over', generation: g.takenOver.generation, parent: g.takenOver.parent, point: g.takenOver.point, at: g.takenOver.at, changedBytes: g.changedBytes })
      // the primary closes once it has read the answer; a stuck one is dropped
      setTimeout(() => link.close('answered'), 10_000).unref()
    })
  })
}
