// I/O accounting on the data path: one IoStats per disk or volume, plain numbers in
// typed arrays bumped per request (no allocation), read out only when metrics are
// scraped; and MeteredDev, the thin BlockDev wrapper that counts at a layer boundary.
import { performance } from 'perf_hooks'
import type { BlockDev, WriteAck } from '../block/blockdev'

export const OPS = ['read', 'write', 'flush', 'discard'] as const
export const READ = 0, WRITE = 1, FLUSH = 2, DISCARD = 3

/** Upper bounds of the latency buckets, seconds: 50 µs (a cached read) to 2.5 s (a stalled device). */
export const LATENCY_BUCKETS = [50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5]
const NB = LATENCY_BUCKETS.length + 1 // the last is +Inf

export class IoStats {
  /** Per op (READ ...): requests, bytes moved, requests that failed. */
  readonly ops = new Float64Array(OPS.length)
  readonly bytes = new Float64Array(OPS.length)
  readonly errors = new Float64Array(OPS.length)
  /** Per op, NB buckets each (not cumulative); a request lands in the first bound it fits. */
  readonly buckets = new Float64Array(OPS.length * NB)
  readonly latencySum = new Float64Array(OPS.length)

  /** A request of op that started at t0 (performance.now()) moved `bytes`. */
  done(op: number, bytes: number, t0: number): void {
    this.ops[op]++
    this.bytes[op] += bytes
    this.latency(op, t0)
  }

  failed(op: number, t0: number): void {
    this.ops[op]++
    this.errors[op]++
    this.latency(op, t0)
  }

  private latency(op: number, t0: number): void {
    const s = (performance.now() - t0) / 1000
    let b = 0
    while (b < NB - 1 && s > LATENCY_BUCKETS[b]) b++
    this.buckets[op * NB + b]++
    this.latencySum[op] += s
  }

  /** Cumulative count of op's requests at or under each bound, +Inf last (Prometheus' `le`). */
  cumulative(op: number): number[] {
    const out: number[] = []
    let acc = 0
    for (let b = 0; b < NB; b++) { acc += this.buckets[op * NB + b]; out.push(acc) }
    return out
  }
}

export const now = () => performance.now()

/** The IoStats of every disk (by path in the mount) and volume (by name), made at first use. */
export class IoMeters {
  readonly disks = new Map<string, IoStats>()
  readonly volumes = new Map<string, IoStats>()

  /** Look a disk up once per open, not per request. */
  disk(path: string): IoStats { return statsOf(this.disks, path) }
  volume(name: string): IoStats { return statsOf(this.volumes, name) }
}

function statsOf(map: Map<string, IoStats>, key: string): IoStats {
  let st = map.get(key)
  if (!st) map.set(key, st = new IoStats())
  return st
}

/** Counts every request through dev into stats; the size, and growth, are dev's own. */
export class MeteredDev implements BlockDev {
  readonly writeDurable?: (buf: Buffer, offset: number) => Promise<void>
  readonly discard?: (offset: number, length: number) => Promise<void>

  constructor(private readonly dev: BlockDev, readonly stats: IoStats) {
    // only what dev has, so callers that test for the optional methods see the same
    if (dev.writeDurable) this.writeDurable = (buf, offset) => counted(stats, WRITE, now(), dev.writeDurable!(buf, offset), buf.length)
    if (dev.discard) this.discard = (offset, length) => counted(stats, DISCARD, now(), dev.discard!(offset, length), length)
  }

  get size(): number { return this.dev.size }

  read(buf: Buffer, offset: number): Promise<number> { return counted(this.stats, READ, now(), this.dev.read(buf, offset)) }

  // t0 is taken before the call: a layer may do real work before its first await
  write(buf: Buffer, offset: number, ack?: WriteAck): Promise<void> { return counted(this.stats, WRITE, now(), this.dev.write(buf, offset, ack), buf.length) }
  flush(): Promise<void> { return counted(this.stats, FLUSH, now(), this.dev.flush(), 0) }
  close(): Promise<void> { return this.dev.close() }
}

/** Awaits request p (op, started at t0) and counts it into st with the bytes it moved: what it returns (a count, or the bytes read), else `bytes`. */
export async function counted<T>(st: IoStats, op: number, t0: number, p: Promise<T>, bytes = 0): Promise<T> {
  try {
    const r = await p
    st.done(op, typeof r === 'number' ? r : Buffer.isBuffer(r) ? r.length : bytes, t0)
    return r
  } catch (e) {
    st.failed(op, t0)
    throw e
  }
}
