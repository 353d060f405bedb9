// The daemon's metrics in Prometheus' text format, through prom-client's registry:
// per disk and per volume I/O (requests, bytes, errors, latency histograms) read from
// the IoStats the data path bumps, and at each scrape the state the stack reports
// (volume and device state, job progress, fs space) plus Node's process metrics.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { IoMeters, IoStats, LATENCY_BUCKETS, OPS } from './io'

/** What the stack reports at each scrape; read only then, never on the data path. */
export interface MetricSources {
  volumes(): Array<{ name: string; size: number; state: string }>
  devices(): Array<{ name: string; size: number; free: number; state: string }>
  jobs(): Array<{ id: number; kind: string; state: string; progress: { done: number; total: number } }>
  fs(): { size: number; free: number; files: number }
  /** Whether a disk path still names a disk: stats of deleted or renamed disks are dropped. */
  diskExists(path: string): boolean
}

const VOLUME_STATES = ['healthy', 'degraded', 'failed']
const DEVICE_STATES = ['online', 'offline', 'failed', 'spare', 'missing']

type Kind = 'disk' | 'volume'

/** The known states, and the current one should a layer have grown a new one. */
const withState = (known: string[], current: string) => (known.includes(current) ? known : [...known, current])

/**
 * A histogram whose buckets are the IoStats' own, read at scrape time: prom-client's
 * observe() allocates per call, too much for the data path. prom-client's registry
 * formats what get() returns (its typings do not show the fields, hence the any).
 */
class IoLatency extends Histogram<string> {
  private readonly metric: string

  constructor(private readonly kind: Kind, private readonly stats: Map<string, IoStats>, registry: Registry) {
    const name = `vsm_${kind}_io_latency_seconds`
    super({ name, help: `Time per ${kind} request, by operation`, labelNames: [kind, 'op'], buckets: LATENCY_BUCKETS, registers: [registry] })
    this.metric = name
  }

  async get(): Promise<any> { return this.getForPromString() }

  async getForPromString(): Promise<any> {
    const values: Array<{ value: number; labels: Record<string, string | number>; metricName: string }> = []
    for (const [name, st] of this.stats) {
      OPS.forEach((op, i) => {
        const labels = { [this.kind]: name, op }
        const cum = st.cumulative(i)
        cum.forEach((n, b) => values.push({ metricName: `${this.metric}_bucket`, labels: { ...labels, le: b < LATENCY_BUCKETS.length ? LATENCY_BUCKETS[b] : '+Inf' }, value: n }))
        values.push({ metricName: `${this.metric}_sum`, labels, value: st.latencySum[i] })
        values.push({ metricName: `${this.metric}_count`, labels, value: cum[cum.length - 1] })
      })
    }
    const self = this as any
    return { name: this.metric, help: self.help, type: 'histogram', values, aggregator: self.aggregator }
  }
}

export class Metrics {
  readonly registry = new Registry()

  constructor(private readonly meters: IoMeters, private readonly sources: MetricSources) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry })
    for (const kind of ['disk', 'volume'] as const) {
      const stats = kind === 'disk' ? meters.disks : meters.volumes
      const counter = (name: string, help: string, field: 'ops' | 'bytes' | 'errors') => new Counter({
        name: `vsm_${kind}_${name}`, help, labelNames: [kind, 'op'], registers,
        collect() {
          this.reset()
          for (const [n, st] of stats) OPS.forEach((op, i) => this.inc({ [kind]: n, op }, st[field][i]))
        },
      })
      counter('io_requests_total', `Requests to a ${kind}, by operation (IOPS: its rate)`, 'ops')
      counter('io_bytes_total', `Bytes read from or written to a ${kind} (discard: bytes discarded)`, 'bytes')
      counter('io_errors_total', `Requests to a ${kind} that failed`, 'errors')
      new IoLatency(kind, stats, this.registry)
    }
    const src = this.sources
    const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge<string>) => void) =>
      new Gauge({ name, help, labelNames, registers, collect() { this.reset(); fill(this) } })
    gauge('vsm_volume_state', 'A volume\'s state: 1 for the state it is in, 0 for the others', ['volume', 'state'], (g) => {
      for (const v of src.volumes()) for (const s of withState(VOLUME_STATES, v.state)) g.set({ volume: v.name, state: s }, v.state === s ? 1 : 0)
    })
    gauge('vsm_volume_size_bytes', 'A volume\'s size', ['volume'], (g) => { for (const v of src.volumes()) g.set({ volume: v.name }, v.size) })
    gauge('vsm_device_state', 'A device\'s state: 1 for the state it is in, 0 for the others', ['device', 'state'], (g) => {
      for (const d of src.devices()) for (const s of withState(DEVICE_STATES, d.state)) g.set({ device: d.name, state: s }, d.state === s ? 1 : 0)
    })
    gauge('vsm_device_free_bytes', 'Bytes of a device not given to any volume', ['device'], (g) => { for (const d of src.devices()) g.set({ device: d.name }, d.free) })
    gauge('vsm_job_progress_ratio', 'How far a running or paused job has got, 0 to 1', ['job', 'kind', 'state'], (g) => {
      for (const j of src.jobs()) {
        if (j.state !== 'running' && j.state !== 'paused') continue
        g.set({ job: j.id, kind: j.kind, state: j.state }, j.progress.total > 0 ? j.progress.done / j.progress.total : 0)
      }
    })
    gauge('vsm_fs_size_bytes', 'Size of the file system', [], (g) => g.set(src.fs().size))
    gauge('vsm_fs_free_bytes', 'Free space in the file system', [], (g) => g.set(src.fs().free))
    gauge('vsm_fs_files', 'Files and directories in the file system', [], (g) => g.set(src.fs().files))
  }

  /** The exposition text; first drops what names a disk no longer there. */
  async scrape(): Promise<string> {
    for (const path of this.meters.disks.keys()) if (!this.sources.diskExists(path)) this.meters.disks.delete(path)
    return this.registry.metrics()
  }

  get contentType(): string { return this.registry.contentType }
}
