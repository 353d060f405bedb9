// The replication log under crashes: records appended, synced and reclaimed around the
// ring, then a power loss at a random instant (the in-memory device keeps what was
// flushed plus a random, partly torn, subset of the rest). Reopening must find a
// contiguous run of records from the tail holding every synced, unreclaimed record
// with its exact bytes, and nothing from an earlier lap or life. Also a primary group
// crashed mid-stream: after reopen its volumes hold every flushed write.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { MemDev } from './helpers/fs-memdev'
import { rng } from './helpers/conformance'
import { ReplicationLog, LogRecord } from '../src/replicator/log'
import { PrimaryGroup } from '../src/replicator/group'
import { ReplicatedVolume } from '../src/replicator/tap'

const t = suite('replicator log')
const MiB = 1 << 20

function recordFor(seqHint: number, r: (n: number) => number): Omit<LogRecord, 'seq' | 'time'> {
  const k = r(5)
  if (k === 0) return { kind: 'flush', vol: 0, offset: 0, length: 0 }
  if (k === 1) return { kind: 'zero', vol: r(3), offset: 4096 * r(100), length: 4096 * (1 + r(8)) }
  const length = 1 + r(200_000)
  const data = Buffer.alloc(length, seqHint & 0xff)
  data.writeUInt32LE(seqHint, 0)
  return { kind: 'write', vol: r(3), offset: 512 * r(1000), length, data }
}

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  t(`crash at a random instant (seed ${seed}): reopen finds every synced record, contiguous, exact`, async () => {
    const r = rng(seed)
    let dev = new MemDev(5 * MiB + 8192)
    let log = await ReplicationLog.format(dev, 'log-1', { group: 'g' })
    const sent = new Map<number, Omit<LogRecord, 'seq' | 'time'>>()
    let acked = 0
    for (let life = 0; life < 4; life++) {
      const n = 20 + r(80)
      let synced = log.durableSeq
      for (let i = 0; i < n; i++) {
        const rec = recordFor(log.headSeq + 1, r)
        const appends = [log.append(rec)]
        if (r(3) === 0) appends.push(log.append(recordFor(log.headSeq + 2, r)))
        // the second append's record is not known here until it resolves: keep both
        const seqs = await Promise.all(appends)
        for (const s of seqs) sent.set(s, s === seqs[0] ? rec : (await log.read(s)))
        if (r(4) === 0) { await log.sync(); synced = log.headSeq }
        // the secondary acknowledges some; space comes back
        if (r(5) === 0) { acked = Math.max(acked, synced - r(5)); log.reclaim(acked) }
      }
      // pending appends are in flight when the power goes
      const flying = [log.append(recordFor(log.headSeq + 1, r)), log.append(recordFor(log.headSeq + 2, r))]
      dev = dev.crashImage(r)
      await Promise.allSettled(flying)
      const reopened = await ReplicationLog.open(dev)
      log = reopened.log
      const recs = reopened.records
      assert.ok(recs.length > 0 || synced <= acked, 'records survive')
      for (let i = 1; i < recs.length; i++) assert.is(recs[i].seq, recs[i - 1].seq + 1, 'contiguous')
      if (recs.length) {
        assert.ok(recs[0].seq <= Math.max(acked, 0) + 1, `tail ${recs[0].seq} not beyond the acknowledged ${acked}`)
        assert.ok(recs[recs.length - 1].seq >= synced, `synced ${synced} survives (last ${recs[recs.length - 1].seq})`)
      }
      for (const rec of recs) {
        const want = sent.get(rec.seq)
        if (!want) continue // appended in flight by the crash: any bytes the log kept are whole (crc)
        assert.is(rec.kind, want.kind, `kind of ${rec.seq}`)
        assert.is(rec.offset, want.offset)
        assert.is(rec.length, want.length)
        if (want.kind === 'write') assert.ok(rec.data!.equals(want.data!), `bytes of ${rec.seq}`)
      }
      // records after the log's end are gone for good: forget what we sent past it
      for (const s of [...sent.keys()]) if (s > log.headSeq) sent.delete(s)
    }
  })
}

t('a group crashed mid-stream: after reopen and replay its volumes hold every flushed write', async () => {
  const r = rng(99)
  let logDev = new MemDev(8 * MiB + 8192)
  let vols = [new MemDev(2 * MiB), new MemDev(2 * MiB)]
  const log = await ReplicationLog.format(logDev, 'g-log', { group: 'g', volumes: ['a', 'b'], target: 'none', mode: 'async', synced: true, paused: true })
  const never = () => new Promise<never>(() => undefined)
  let g = await PrimaryGroup.create(log, vols.map((v, i) => new ReplicatedVolume(`v${i}`, v)), { connect: never })
  const model = [Buffer.alloc(2 * MiB), Buffer.alloc(2 * MiB)]
  let flushed = model.map((m) => Buffer.from(m))
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 60; i++) {
      const v = r(2), len = 4096 * (1 + r(8)), off = 4096 * r(2 * MiB / 4096 - 8)
      const buf = Buffer.alloc(len, 1 + r(250))
      await g.taps[v].write(buf, off)
      buf.copy(model[v], off)
      if (r(6) === 0) { await g.taps[0].flush(); flushed = model.map((m) => Buffer.from(m)) }
    }
    // crash: log and volumes lose their unflushed writes at the same instant
    logDev = logDev.crashImage(r)
    vols = vols.map((d) => d.crashImage(r))
    const { log: l2, records } = await ReplicationLog.open(logDev)
    g = await PrimaryGroup.open(l2, records, vols.map((v, i) => new ReplicatedVolume(`v${i}`, v)), { connect: never })
    for (let v = 0; v < 2; v++) {
      const got = Buffer.alloc(2 * MiB)
      await vols[v].read(got, 0)
      // every flushed write is there; past the flush, a block holds the flushed or a later written value
      for (let b = 0; b < got.length; b += 4096) {
        const gb = got.subarray(b, b + 4096), fb = flushed[v].subarray(b, b + 4096), mb = model[v].subarray(b, b + 4096)
        assert.ok(gb.equals(fb) || gb.equals(mb), `volume ${v} block ${b / 4096} after crash ${round}`)
      }
      got.copy(model[v])
    }
    flushed = model.map((m) => Buffer.from(m))
  }
  await g.close()
})

t.run()
