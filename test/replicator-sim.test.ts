// The replicator's mechanism over a seeded simulated link (sim): a primary group on
// in-memory volumes and log ships to an applier on in-memory replicas while the link
// drops, duplicates and reorders messages and is cut. Checks: the secondary applies
// seq N+1 only after N and nothing twice; each image it exposes after applying N equals
// the primary's record stream up to N applied to empty volumes (a crash-consistent
// prefix); at the end it equals the primary; sync-mode flushes return only once the
// secondary has them durable; log space comes back as the secondary acknowledges;
// an online verify under writes finds nothing, then exactly what was changed behind it
// (overflow to the bitmap: replicator-overflow.test.ts).
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { MemDev } from './helpers/fs-memdev'
import { rng } from './helpers/conformance'
import { applyToImage, simPair, SimFaults } from './helpers/sim-link'
import { Applier, initReplicaState } from '../src/replicator/applier'
import { snapshotStoreSize } from '../src/replicator/snapshot'
import { PrimaryGroup, GroupConfig } from '../src/replicator/group'
import { BITMAP_BYTES, ReplicationLog, LogRecord } from '../src/replicator/log'
import { ReplicatedVolume } from '../src/replicator/tap'
import type { Message, PrimaryLink, ToPrimary, ToSecondary } from '../src/replicator/wire'
import type { Mode } from '../src/replicator/policy'

const t = suite('replicator sim')
const MiB = 1 << 20
const VOL = 4 * MiB
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function until(what: () => string, ok: () => boolean, ms = 60_000) {
  const deadline = Date.now() + ms
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`)
    await sleep(5)
  }
}

async function image(devs: { read(b: Buffer, o: number): Promise<number>; size: number }[]): Promise<Buffer[]> {
  return Promise.all(devs.map(async (d) => { const b = Buffer.alloc(d.size); await d.read(b, 0); return b }))
}

interface Site {
  group: PrimaryGroup
  primary: MemDev[]
  secondary: MemDev[]
  applier: Applier
  applied: number[]
  wire: Map<number, LogRecord>
  links: number
  failures: string[]
  close(): Promise<void>
}

async function site(seed: number, mode: Mode, faults: SimFaults, opts: { logSize?: number; checkEvery?: number } = {}): Promise<Site> {
  const r = rng(seed)
  const rnd = () => r(1_000_000) / 1_000_000
  const primary = [new MemDev(VOL), new MemDev(VOL)]
  const secondary = [new MemDev(VOL), new MemDev(VOL)]
  const stateDev = new MemDev(64 * 1024)
  const store = new MemDev(snapshotStoreSize([VOL, VOL]))
  const state = await initReplicaState(stateDev, { logId: 'L1', group: 'g', volumes: ['a', 'b'] })
  const applied: number[] = []
  const wire = new Map<number, LogRecord>()
  const failures: string[] = []
  const model = [Buffer.alloc(VOL), Buffer.alloc(VOL)]
  let checking = Promise.resolve()
  const s: Site = { group: null as unknown as PrimaryGroup, primary, secondary, applier: null as unknown as Applier, applied, wire, links: 0, failures, close: async () => undefined }
  s.applier = new Applier(secondary, stateDev, state, {
    durableEvery: 256 * 1024, ackEvery: 4,
    // a small log overflows to the bitmap
    snapshotStore: async () => store,
    onApplied: (seq) => {
      if (applied.length && seq !== applied[applied.length - 1] + 1) failures.push(`applied ${seq} after ${applied[applied.length - 1]}`)
      applied.push(seq)
      const rec = wire.get(seq)
      if (!rec) { failures.push(`applied ${seq} that never crossed the wire`); return }
      // the model: the record stream up to seq applied to empty volumes
      applyToImage(model, rec)
      if (seq % (opts.checkEvery ?? 7) === 0) {
        // the image the secondary exposes right after applying seq (the applier waits for nothing in between)
        const snap = secondary.map((d) => d.allWritten())
        const expect = model.map((m) => Buffer.from(m))
        checking = checking.then(async () => {
          const got = await image(snap)
          for (let v = 0; v < 2; v++) if (!got[v].equals(expect[v])) failures.push(`after applying ${seq}, volume ${v} is not the stream's prefix image`)
        })
      }
    },
  })
  const log = await ReplicationLog.format(new MemDev(opts.logSize ?? 16 * MiB), 'L1', { group: 'g', volumes: ['a', 'b'], target: 'sim', mode, synced: true, paused: false } satisfies GroupConfig as unknown as Record<string, unknown>)
  const taps = primary.map((d, i) => new ReplicatedVolume(['a', 'b'][i], d))
  s.group = await PrimaryGroup.create(log, taps, {
    retransmitMs: 200, window: 16, backoff: () => 5,
    connect: async () => {
      s.links++
      const pair = simPair<ToSecondary, ToPrimary>(rnd, faults, (m: Message, data?: Buffer) => {
        if (m.t !== 'rec') return
        const seen = wire.get(m.seq)
        const rec: LogRecord = { seq: m.seq, kind: m.kind, vol: m.vol, offset: m.offset, length: m.length, time: m.time, data }
        if (seen && (seen.kind !== rec.kind || seen.offset !== rec.offset || (data && !data.equals(seen.data!)))) failures.push(`record ${m.seq} sent twice with different contents`)
        if (!seen) wire.set(m.seq, rec)
      })
      s.applier.attach(pair.b as any)
      return pair.a as PrimaryLink
    },
  })
  s.close = async () => { await checking; await s.group.close(); await s.applier.close() }
  return s
}

/** Random writes (some concurrent, some overlapping) and flushes, in rounds. */
async function workload(s: Site, seed: number, rounds: number, onFlush?: () => Promise<void>) {
  const r = rng(seed)
  for (let round = 0; round < rounds; round++) {
    const batch: Promise<void>[] = []
    for (let i = 0; i < 1 + r(6); i++) {
      const tap = s.group.taps[r(2)]
      const len = 512 * (1 + r(128))
      const off = 512 * r((VOL - len) / 512)
      const buf = Buffer.alloc(len, (round * 7 + i) & 0xff)
      buf.writeUInt32LE(round, 0)
      batch.push(tap.write(buf, off))
    }
    await Promise.all(batch)
    if (r(3) === 0) { await s.group.taps[r(2)].flush(); await onFlush?.() }
  }
  await s.group.taps[0].flush()
  await onFlush?.()
}

async function settle(s: Site) {
  const head = s.group.status().headSeq
  await until(() => `the secondary to acknowledge ${head}: ${JSON.stringify(s.group.status())}, applied ${s.applier.appliedSeq}, links ${s.links}`, () => s.group.status().secondaryDurableSeq >= head)
}

for (const seed of [1, 2, 3, 4, 5]) {
  t(`sim seed ${seed}: drops, duplicates, reorders and cuts; in order, nothing twice, every prefix consistent, equal at the end`, async () => {
    const s = await site(seed, 'async', { drop: 0.05, duplicate: 0.05, reorder: 0.05, disconnect: 0.01 })
    try {
      await workload(s, seed * 31, 150)
      await settle(s)
      assert.equal(s.failures, [])
      assert.ok(s.applied.length > 100, `applied ${s.applied.length}`)
      assert.is(s.applied[s.applied.length - 1], s.group.status().headSeq)
      assert.ok(s.links > 1, 'the link was cut and reconnected')
      const [p, q] = [await image(s.primary), await image(s.secondary)]
      assert.ok(p[0].equals(q[0]) && p[1].equals(q[1]), 'secondary equals primary')
    } finally { await s.close() }
  })
}

t('sim sync mode: a flush returns once the secondary holds everything before it durably', async () => {
  const s = await site(11, 'sync', { drop: 0.03, duplicate: 0.03, reorder: 0.03, disconnect: 0.005 })
  try {
    let checked = 0
    await workload(s, 77, 80, async () => {
      // what a power loss on the secondary would keep now: only flushed data
      const durable = await image(s.secondary.map((d) => d.crashImage(() => 0)))
      const p = await image(s.primary)
      assert.ok(durable[0].equals(p[0]) && durable[1].equals(p[1]), 'after a sync-mode flush the secondary durably equals the primary')
      checked++
    })
    assert.ok(checked > 10)
    assert.equal(s.failures, [])
  } finally { await s.close() }
})

t('sim: log space is reclaimed as the secondary acknowledges: ten times the log goes through', async () => {
  // sync mode paces the writer at each flush, so the log is reused rather than overflowing (replicator-overflow.test.ts)
  const s = await site(21, 'sync', { drop: 0.02, reorder: 0.02 }, { logSize: 4 * MiB + 8192 + BITMAP_BYTES })
  try {
    await workload(s, 5, 600)
    await settle(s)
    const st = s.group.status()
    assert.ok(s.applied.length > 0 && st.headSeq > 1000, `head ${st.headSeq}`)
    assert.is(st.lagBytes, 0)
    assert.equal(s.failures, [])
    const [p, q] = [await image(s.primary), await image(s.secondary)]
    assert.ok(p[0].equals(q[0]) && p[1].equals(q[1]), 'secondary equals primary')
  } finally { await s.close() }
})

t('sim verify: online, under writes, nothing differs; then exactly the blocks changed behind the replicator\'s back', async () => {
  const s = await site(31, 'async', { duplicate: 0.03, reorder: 0.03 })
  try {
    await workload(s, 13, 60)
    const verifying = s.group.verify(new AbortController().signal, () => undefined)
    await workload(s, 14, 40)
    const clean = await verifying
    assert.is(clean.comparedBytes, 2 * VOL)
    assert.equal(clean.differences, [])
    await settle(s)
    assert.equal(s.failures, [])
    // the secondary changed under the applier: 100 bytes of volume b, 70000 bytes (two 64 KiB blocks) of volume a
    await s.secondary[1].write(Buffer.alloc(100, 0xee), MiB + 10)
    await s.secondary[0].write(Buffer.alloc(70_000, 0xdd), 3 * MiB)
    const bad = await s.group.verify(new AbortController().signal, () => undefined)
    assert.equal(bad.differences, [{ volume: 'a', offset: 3 * MiB, length: 128 * 1024 }, { volume: 'b', offset: MiB, length: 64 * 1024 }])
    assert.is(bad.differentBytes, 192 * 1024)
  } finally { await s.close() }
})

t.run()
