// Log overflow to the bitmap over the seeded simulated link (sim), replayable by seed:
// a cut link (or a secondary too slow to keep up) fills the log, writers go on without
// stalling while the group logs to its bitmap, then the marked regions are resynced.
// Checked at random moments: while the resync is open the secondary's consistent image
// (its snapshot view) is exactly the image it held when the resync began; outside it
// the replicas are the record stream applied in order; at resync-end they equal the
// primary as it was when the resync ended. Either side is killed mid-resync at a
// random point (a crash image: unflushed writes lost or torn): the snapshot survives
// a secondary crash (and rolls the replicas back to the begin image), a primary crash
// resumes the resync from its bitmap. At the end both sides are equal.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { MemDev } from './helpers/fs-memdev'
import { rng } from './helpers/conformance'
import { applyToImage, simPair } from './helpers/sim-link'
import { FaultDev } from '../src/block/fault'
import { Applier, loadReplicaState, rollbackResync, initReplicaState } from '../src/replicator/applier'
import { GroupConfig, PrimaryGroup } from '../src/replicator/group'
import { BITMAP_BYTES, LogRecord, ReplicationLog } from '../src/replicator/log'
import { ResyncSnapshot, snapshotStoreSize } from '../src/replicator/snapshot'
import { ReplicatedVolume } from '../src/replicator/tap'
import type { Message, PrimaryLink, ToPrimary, ToSecondary } from '../src/replicator/wire'
import type { Mode } from '../src/replicator/policy'

const t = suite('replicator overflow sim')
const MiB = 1 << 20
const VOL = 4 * MiB
const NAMES = ['a', 'b']
/** A 4 MiB ring: the workloads below write several times that. */
const LOG_SIZE = 4 * MiB + 8192 + BITMAP_BYTES
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function until(what: () => string, ok: () => boolean, ms = 120_000) {
  const deadline = Date.now() + ms
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`)
    await sleep(5)
  }
}

type Dev = { read(b: Buffer, o: number): Promise<number>; size: number }
const image = (devs: Dev[]) => Promise.all(devs.map(async (d) => { const b = Buffer.alloc(d.size); await d.read(b, 0); return b }))
const sameImages = (a: Buffer[], b: Buffer[]) => a.length === b.length && a.every((x, i) => x.equals(b[i]))

interface Secondary { vols: MemDev[]; state: MemDev; store: MemDev; applier: Applier; alive: boolean }

class Sim {
  readonly rnd: () => number
  readonly r: (n: number) => number
  primary: MemDev[] = [new MemDev(VOL), new MemDev(VOL)]
  logDev = new MemDev(LOG_SIZE)
  group!: PrimaryGroup
  sec!: Secondary
  linkDown = false
  links = 0
  cut: (() => void) | null = null
  failures: string[] = []
  wire = new Map<number, LogRecord>()
  /** What the replicas must be: the records applied in order (null after a secondary crash until a resync ends). */
  model: Buffer[] | null = [Buffer.alloc(VOL), Buffer.alloc(VOL)]
  /** The replicas when the open resync began: its snapshot must show exactly this. */
  beginImage: Buffer[] | null = null
  /** Primary images when a resync ended, and the replicas right after applying that resync-end. */
  endPrimary = new Map<number, Buffer[]>()
  endSecondary = new Map<number, Buffer[]>()
  events: string[] = []
  viewChecks = 0
  private checking: Promise<void> = Promise.resolve()

  constructor(readonly seed: number, private readonly slowSecondary: boolean) {
    const r = rng(seed)
    this.r = r
    this.rnd = () => r(1_000_000) / 1_000_000
  }

  async start(mode: Mode = 'async') {
    const state = new MemDev(64 * 1024)
    await initReplicaState(state, { logId: 'L1', group: 'g', volumes: NAMES })
    this.sec = this.secondary([new MemDev(VOL), new MemDev(VOL)], state, new MemDev(snapshotStoreSize([VOL, VOL])), await loadReplicaState(state))
    const log = await ReplicationLog.format(this.logDev, 'L1', { group: 'g', volumes: NAMES, target: 'sim', mode, synced: true, paused: false } satisfies GroupConfig as unknown as Record<string, unknown>)
    this.group = await PrimaryGroup.create(log, this.taps(), this.groupOptions())
  }

  private taps() { return this.primary.map((d, i) => new ReplicatedVolume(NAMES[i], d)) }

  private groupOptions() {
    return {
      retransmitMs: 200, window: 16, backoff: () => 5,
      onEvent: (event: string, detail: Record<string, unknown>) => {
        this.events.push(event)
        // the gate still holds writes off: this is the primary's image at resync-end
        if (event === 'resync-done') this.endPrimary.set(detail.resyncEndSeq as number, this.primary.map((d) => d.contents()))
      },
      connect: async () => {
        if (this.linkDown) throw new Error('sim: link down')
        this.links++
        const pair = simPair<ToSecondary, ToPrimary>(this.rnd, { drop: 0.02, duplicate: 0.02, reorder: 0.02, disconnect: 0.002 }, (m: Message, data?: Buffer) => this.sent(m, data))
        this.cut = pair.cut
        this.sec.applier.attach(pair.b as any)
        return pair.a as PrimaryLink
      },
    }
  }

  private sent(m: Message, data?: Buffer) {
    if (m.t !== 'rec') return
    const seen = this.wire.get(m.seq)
    const rec: LogRecord = { seq: m.seq, kind: m.kind, vol: m.vol, offset: m.offset, length: m.length, time: m.time, data }
    if (seen && (seen.kind !== rec.kind || seen.offset !== rec.offset || (data && !data.equals(seen.data!)))) this.failures.push(`record ${m.seq} sent twice with different contents`)
    if (!seen) this.wire.set(m.seq, rec)
  }

  private secondary(vols: MemDev[], state: MemDev, store: MemDev, st: Awaited<ReturnType<typeof loadReplicaState>>): Secondary {
    // a slow secondary: every replica write waits, so the primary's log fills while connected
    const devs = this.slowSecondary ? vols.map((v) => new FaultDev(v, { rules: [{ op: 'write', delayMs: 1, delayOnly: true }] })) : vols
    const sec: Secondary = { vols, state, store, alive: true, applier: null as unknown as Applier }
    sec.applier = new Applier(devs, state, st!, {
      durableEvery: 256 * 1024, ackEvery: 4,
      snapshotStore: async () => store,
      onApplied: (seq) => { if (sec.alive) this.applied(sec, seq) },
    })
    return sec
  }

  private applied(sec: Secondary, seq: number) {
    const rec = this.wire.get(seq)
    if (!rec) { this.failures.push(`applied ${seq} that never crossed the wire`); return }
    const open = sec.applier.resyncPoint !== null
    if (rec.kind === 'resync-begin' && open && !this.beginImage) this.beginImage = sec.vols.map((d) => d.contents())
    if (this.model) applyToImage(this.model, rec)
    if (rec.kind === 'resync-end') {
      this.beginImage = null
      this.endSecondary.set(seq, sec.vols.map((d) => d.contents()))
      this.model = this.endSecondary.get(seq)!.map((b) => Buffer.from(b))
    }
    if (this.rnd() < 0.15) this.checkNow(sec, seq, open)
  }

  /** The secondary's consistent image at this instant: the snapshot view during a resync, else the replicas. */
  private checkNow(sec: Secondary, seq: number, open: boolean) {
    const vols = sec.vols.map((d) => d.allWritten())
    const store = sec.store.allWritten()
    const expectModel = this.model?.map((b) => Buffer.from(b))
    const begin = this.beginImage
    this.checking = this.checking.then(async () => {
      if (open) {
        if (!begin) return // the begin itself was applied before a secondary crash: checked by checkAfterCrash
        const snap = await ResyncSnapshot.open(store, vols)
        const view = await Promise.all(vols.map(async (v, i) => { const b = Buffer.alloc(v.size); await snap.read(i, b, 0); return b }))
        this.viewChecks++
        if (!sameImages(view, begin)) this.failures.push(`after applying ${seq} during a resync, the snapshot view is not the image the resync began with`)
      } else if (expectModel) {
        if (!sameImages(await image(vols), expectModel)) this.failures.push(`after applying ${seq}, the replicas are not the records applied in order`)
      }
    })
  }

  /** Random writes (some concurrent, some overlapping) into [from, to) of each volume and flushes, in rounds, until stop(). */
  async workload(seed: number, rounds: number, from = 0, to = VOL, stop = () => false) {
    const r = rng(seed)
    for (let round = 0; round < rounds && !stop(); round++) {
      const batch: Promise<void>[] = []
      for (let i = 0; i < 1 + r(6); i++) {
        const tap = this.group.taps[r(2)]
        const len = 512 * (1 + r(128))
        const off = from + 512 * r((to - from - len) / 512)
        const buf = Buffer.alloc(len, (seed + round * 7 + i) & 0xff)
        buf.writeUInt32LE(round, 0)
        batch.push(tap.write(buf, off))
      }
      await Promise.all(batch)
      if (r(3) === 0) await this.group.taps[r(2)].flush()
    }
    await this.group.taps[0].flush()
  }

  /** The secondary dies: a new one starts from what a power loss leaves of its devices. Returns its consistent image check. */
  async killSecondary() {
    const old = this.sec
    old.alive = false
    const r = (n: number) => this.r(n)
    const vols = old.vols.map((d) => d.crashImage(r)), state = old.state.crashImage(r), store = old.store.crashImage(r)
    await this.checking
    const begin = this.beginImage
    this.model = null
    this.sec = this.secondary(vols, state, store, await loadReplicaState(state))
    this.cut?.()
    // the snapshot came through the crash whole: it shows the begin image, and rolling back to it restores exactly that
    assert.ok(this.sec.applier.resyncPoint !== null, 'the resync is open after the crash')
    const view = await Promise.all([0, 1].map(async (i) => { const b = Buffer.alloc(VOL); await this.sec.applier.readConsistent(i, b, 0); return b }))
    assert.ok(begin && sameImages(view, begin), 'after the secondary crash, its consistent image is the begin image')
    const copies = { vols: vols.map((d) => d.allWritten()), state: state.allWritten(), store: store.allWritten() }
    const rolled = await rollbackResync(copies.state, copies.vols, copies.store)
    assert.ok(rolled && rolled.restoredBytes > 0, 'rollback restored saved chunks')
    assert.ok(sameImages(await image(copies.vols), begin!), 'rolled back, the replicas are the begin image')
    assert.match((await loadReplicaState(copies.state))!.detached ?? '', /rolled back/)
    old.applier.close().catch(() => undefined)
  }

  /** The primary dies between writes: a new group opens on what a power loss leaves of its volumes and log. */
  async killPrimary() {
    const r = (n: number) => this.r(n)
    const vols = this.primary.map((d) => d.crashImage(r)), logDev = this.logDev.crashImage(r)
    this.linkDown = true
    this.cut?.()
    await this.group.close()
    this.primary = vols
    this.logDev = logDev
    const { log, records } = await ReplicationLog.open(logDev)
    this.group = await PrimaryGroup.open(log, records, this.taps(), this.groupOptions())
    this.linkDown = false
  }

  async settle() {
    await until(() => `the secondary to catch up: ${JSON.stringify(this.group.status())}, applied ${this.sec.applier.appliedSeq}, links ${this.links}`,
      () => { const s = this.group.status(); return s.state === 'replicating' && s.secondaryDurableSeq >= s.headSeq && s.lagBytes === 0 })
    await this.checking
  }

  async close() {
    await this.checking
    await this.group.close()
    await this.sec.applier.close()
  }
}

for (const [seed, how] of [[1, 'cut'], [2, 'slow'], [3, 'cut'], [4, 'slow'], [5, 'cut']] as const) {
  const kill = seed % 2 ? 'secondary' : 'primary'
  t(`sim seed ${seed}: ${how} link overflows the log to the bitmap without stalling writers; resync with the ${kill} killed midway; consistent at every check; equal at the end`, async () => {
    const s = new Sim(seed, how === 'slow')
    s.linkDown = how === 'cut'
    await s.start()
    try {
      // while the secondary cannot keep up, into the first half of each volume until the log overflows: what
      // reaches the secondary of these comes only from the records the overflow turned into bitmap marks
      const overflowed = () => s.events.includes('logging-to-bitmap')
      await s.workload(seed * 31, 1000, 0, VOL / 2, overflowed)
      await until(() => `an overflow: ${JSON.stringify(s.group.status())}`, overflowed)
      // writers do not stall: several times the log's size more, into the other half
      await s.workload(seed * 33, 300, VOL / 2, VOL)
      if (how === 'cut') {
        assert.is(s.group.status().state, 'logging-to-bitmap')
        assert.ok(s.group.status().bitmapDirtyBytes > 0)
      }
      s.linkDown = false
      // the kill comes at a random point once the secondary holds a snapshot
      await until(() => `the resync to open on the secondary: ${JSON.stringify(s.group.status())}`, () => s.sec.applier.resyncPoint !== null)
      const applied = s.sec.applier.applied
      const wait = 1 + s.r(40)
      await until(() => 'records of the resync to be applied', () => s.sec.applier.applied >= applied + wait || s.sec.applier.resyncPoint === null)
      assert.ok(s.sec.applier.resyncPoint !== null, 'still mid-resync')
      if (kill === 'secondary') await s.killSecondary()
      else await s.killPrimary()
      // writes go on while the resync resumes
      await s.workload(seed * 41, 150, VOL / 2, VOL)
      await s.settle()
      assert.equal(s.failures, [])
      assert.ok(s.viewChecks > 0, 'the snapshot view was checked during the resync')
      assert.ok(s.endSecondary.size > 0, 'a resync ended')
      for (const [seq, img] of s.endSecondary) {
        const p = s.endPrimary.get(seq)
        if (p) assert.ok(sameImages(img, p), `after resync-end ${seq} the replicas are the primary as it was when the resync ended`)
      }
      assert.ok(sameImages(await image(s.primary), await image(s.sec.vols)), 'secondary equals primary')
      assert.ok(s.events.includes('resync-done'))
    } finally { await s.close() }
  })
}

t('sim: a sync-mode flush made while logging to the bitmap returns only once the resync has reached the secondary', async () => {
  const s = new Sim(9, false)
  s.linkDown = true
  await s.start('sync')
  try {
    const writes: Promise<void>[] = []
    for (let i = 0; i < 80; i++) writes.push(s.group.taps[i % 2].write(Buffer.alloc(128 * 1024, i + 1), (i % 24) * 128 * 1024))
    await Promise.all(writes)
    assert.is(s.group.status().state, 'logging-to-bitmap')
    let flushed = false
    const flush = s.group.taps[0].flush().then(() => { flushed = true })
    await sleep(100)
    assert.not.ok(flushed, 'the flush waits while the link is down')
    s.linkDown = false
    await flush
    const durable = await image(s.sec.vols.map((d) => d.crashImage(() => 0)))
    assert.ok(sameImages(durable, await image(s.primary)), 'after the flush the secondary durably equals the primary')
    assert.equal(s.failures, [])
  } finally { await s.close() }
})

t.run()
