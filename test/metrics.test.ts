// Metrics without a daemon: the metered BlockDev counts requests, bytes, errors and
// latency exactly; the registry renders them (and the stack's gauges) as Prometheus
// text; the endpoint serves /metrics on loopback only; --metrics refuses anything else.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import * as http from 'http'
import { FaultDev } from '../src/block/fault'
import { IoMeters, MeteredDev, READ, WRITE, FLUSH, DISCARD } from '../src/metrics/io'
import { Metrics, MetricSources } from '../src/metrics/metrics'
import { MetricsServer, parseListen } from '../src/metrics/http'
import { MemDev } from './helpers/fs-memdev'
import { samples } from './helpers/prom'

const sources = (over: Partial<MetricSources> = {}): MetricSources => ({
  volumes: () => [{ name: 'vol0', size: 1 << 30, state: 'degraded' }],
  devices: () => [{ name: 'd0', size: 1 << 30, free: 4096, state: 'ok' }, { name: 'd1', size: 1 << 30, free: 0, state: 'offline' }],
  jobs: () => [{ id: 4, kind: 'volume.rebuild', state: 'running', progress: { done: 1, total: 4 } }, { id: 3, kind: 'volume.scrub', state: 'concluded', progress: { done: 1, total: 1 } }],
  fs: () => ({ size: 1 << 30, free: 1 << 29, files: 7 }),
  diskExists: () => true,
  ...over,
})

test('--metrics takes a loopback HOST:PORT and refuses any other address with one line', () => {
  assert.equal(parseListen('127.0.0.1:9100'), { host: '127.0.0.1', port: 9100 })
  assert.equal(parseListen('127.3.2.1:0'), { host: '127.3.2.1', port: 0 })
  assert.equal(parseListen('[::1]:80'), { host: '::1', port: 80 })
  for (const bad of ['0.0.0.0:9100', '10.0.0.1:9100', 'localhost:9100', '[::]:9100', '::1:80', '127.0.0.1', '127.0.0.1:70000', '127.0.0.1:-1', '']) {
    try { parseListen(bad); assert.unreachable(bad) } catch (e) {
      assert.is((e as any).code, 'EINVAL', bad)
      assert.not.match((e as Error).message, /\n/)
    }
  }
})

test('a metered BlockDev counts each request, its bytes and failures, and keeps the optional methods it wraps', async () => {
  const meters = new IoMeters()
  const st = meters.volume('v')
  const fault = new FaultDev(new MemDev(1 << 20))
  const dev = new MeteredDev(fault, st)
  assert.is(dev.size, 1 << 20)
  assert.is(typeof dev.discard, typeof fault.discard, 'the wrapper has an optional method exactly when what it wraps has it')
  assert.is(new MeteredDev(new MemDev(4096), st).writeDurable, undefined)
  await dev.write(Buffer.alloc(8192, 1), 0)
  await dev.write(Buffer.alloc(4096, 2), 8192)
  await dev.read(Buffer.alloc(4096), 0)
  await dev.flush()
  fault.setRules([{ op: 'read' }])
  await dev.read(Buffer.alloc(512), 0).then(() => assert.unreachable(), (e) => assert.is(e.code, 'EIO'))
  assert.equal([...st.ops], [2, 2, 1, 0])
  assert.equal([...st.bytes], [4096, 12288, 0, 0])
  assert.equal([...st.errors], [1, 0, 0, 0])
  for (const op of [READ, WRITE, FLUSH, DISCARD]) {
    const cum = st.cumulative(op)
    assert.is(cum[cum.length - 1], st.ops[op], 'every request lands in one bucket')
    assert.ok(cum.every((n, i) => i === 0 || n >= cum[i - 1]), 'cumulative')
  }
  assert.ok(st.latencySum[WRITE] >= 0)
  const withDiscard = new MeteredDev({ size: 4096, read: async () => 0, write: async () => {}, flush: async () => {}, close: async () => {}, discard: async () => {} }, meters.volume('w'))
  await withDiscard.discard!(0, 4096)
  assert.equal([meters.volume('w').ops[DISCARD], meters.volume('w').bytes[DISCARD]], [1, 4096])
})

test('the registry renders I/O counters, latency histograms and the stack gauges as Prometheus text', async () => {
  const meters = new IoMeters()
  const dev = new MeteredDev(new MemDev(1 << 20), meters.volume('vol0'))
  for (let i = 0; i < 3; i++) await dev.write(Buffer.alloc(4096), i * 4096)
  meters.disk('a.img').done(READ, 65536, 0)
  meters.disk('gone.img').done(READ, 1, 0)
  const m = new Metrics(meters, sources({ diskExists: (p) => p !== 'gone.img' }))
  const text = await m.scrape()
  const s = samples(text)
  assert.is(s.get('vsm_volume_io_requests_total{volume="vol0",op="write"}'), 3)
  assert.is(s.get('vsm_volume_io_bytes_total{volume="vol0",op="write"}'), 12288)
  assert.is(s.get('vsm_volume_io_errors_total{volume="vol0",op="write"}'), 0)
  assert.is(s.get('vsm_volume_io_latency_seconds_count{volume="vol0",op="write"}'), 3)
  assert.is(s.get('vsm_volume_io_latency_seconds_bucket{le="+Inf",volume="vol0",op="write"}') ?? s.get('vsm_volume_io_latency_seconds_bucket{volume="vol0",op="write",le="+Inf"}'), 3)
  assert.is(s.get('vsm_disk_io_bytes_total{disk="a.img",op="read"}'), 65536)
  assert.ok(!text.includes('gone.img'), 'a deleted disk is dropped')
  assert.match(text, /# TYPE vsm_disk_io_latency_seconds histogram/)
  assert.is(s.get('vsm_volume_state{volume="vol0",state="degraded"}'), 1)
  assert.is(s.get('vsm_volume_state{volume="vol0",state="healthy"}'), 0)
  assert.is(s.get('vsm_device_state{device="d1",state="offline"}'), 1)
  assert.is(s.get('vsm_job_progress_ratio{job="4",kind="volume.rebuild",state="running"}'), 0.25)
  assert.not.ok([...s.keys()].some((k) => k.includes('job="3"')), 'a concluded job has no progress gauge')
  assert.is(s.get('vsm_fs_free_bytes'), 1 << 29)
  assert.is(s.get('vsm_fs_files'), 7)
  assert.ok([...s.keys()].some((k) => k.startsWith('process_cpu_seconds_total')), 'process metrics')
})

test('the endpoint serves GET /metrics; other paths 404, other methods 405', async () => {
  const meters = new IoMeters()
  meters.volume('vol0')
  const server = new MetricsServer(new Metrics(meters, sources()), (e) => { throw e })
  const at = await server.listen({ host: '127.0.0.1', port: 0 })
  const get = (path: string, method = 'GET') => new Promise<{ status: number; type?: string; body: string }>((resolve, reject) => {
    http.request({ host: at.host, port: at.port, path, method }, (res) => {
      let body = ''
      res.on('data', (b) => { body += b })
      res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }))
    }).on('error', reject).end()
  })
  try {
    assert.ok(at.port > 0)
    const ok = await get('/metrics')
    assert.is(ok.status, 200)
    assert.match(ok.type!, /^text\/plain; version=0\.0\.4/)
    assert.match(ok.body, /vsm_volume_io_requests_total\{volume="vol0",op="read"\} 0/)
    assert.is((await get('/')).status, 404)
    assert.is((await get('/metrics', 'POST')).status, 405)
  } finally {
    await server.close()
  }
})

test.run()
