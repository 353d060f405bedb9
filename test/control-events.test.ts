// The daemon's event sink: each event is logged by pino at its level with its object,
// reaches every subscriber, survives a throwing subscriber; jobs publish their life
// into the sink they are given (progress as debug chatter, a failure as a warning).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { Writable } from 'stream'
import pino from 'pino'
import { Events, VsmEvent } from '../src/control/events'
import { Jobs } from '../src/control/jobs'
import { VsmError } from '../src/block/blockdev'
import { formatEvent } from '../src/cli/commands/events'

function memoryLog(level = 'debug') {
  const lines: any[] = []
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(chunk.toString())); cb() } })
  return { log: pino({ level }, stream), lines }
}
const tick = () => new Promise((r) => setImmediate(r))

test('an event is logged with its name, object and level, and reaches every subscriber', async () => {
  const { log, lines } = memoryLog('info')
  const ev = new Events(log)
  const a: VsmEvent[] = []
  const b: VsmEvent[] = []
  ev.subscribe(() => { throw new Error('a broken subscriber') })
  ev.subscribe((e) => a.push(e))
  const stopB = ev.subscribe((e) => b.push(e))
  ev.publish('device.offline', { device: 'd1', reason: 'operator' }, 'warn')
  stopB()
  ev.publish('job.progress', { id: 3 }, 'debug')
  await tick()
  assert.equal(a.map((e) => [e.event, e.level, e.data]), [['device.offline', 'warn', { device: 'd1', reason: 'operator' }], ['job.progress', 'debug', { id: 3 }]])
  assert.is(b.length, 1)
  assert.ok(a.every((e) => Math.abs(e.timestamp - Date.now()) < 60_000))
  // below the log level: streamed, not logged; the broken subscriber is logged as an error
  const logged = lines.filter((l) => l.event === 'device.offline' || l.event === 'job.progress')
  assert.equal(logged.map((l) => [l.event, l.level, l.device, l.reason, l.msg]), [['device.offline', 40, 'd1', 'operator', 'device.offline']])
  assert.ok(lines.some((l) => l.msg === 'event subscriber failed' && l.level === 50))
})

test('jobs publish created, state, progress (debug but each tenth at info), cancelling and concluded into their sink', async () => {
  const ev = new Events()
  const got: VsmEvent[] = []
  ev.subscribe((e) => got.push(e))
  const jobs = new Jobs({ events: ev, progressIntervalMs: 0 })
  const ok = jobs.start('volume.scrub', async (_s, p) => { p(0, 40); for (let i = 1; i <= 40; i++) p(i) })
  await jobs.wait(ok)
  const failed = jobs.start('volume.rebuild', async () => { throw new VsmError('EIO', 'd1 failed') })
  await jobs.wait(failed)
  const cancelled = jobs.start('disk.flatten', async (signal) => new Promise((_r, reject) => signal.addEventListener('abort', () => reject(signal.reason))))
  await tick()
  jobs.cancel(cancelled)
  await jobs.wait(cancelled)
  const of = (id: number) => got.filter((e) => (e.data as any).id === id).map((e) => `${e.event}:${e.level}`)
  const progress = got.filter((e) => (e.data as any).id === ok && e.event === 'job.progress')
  assert.is(progress.length, 41)
  assert.equal(progress.filter((e) => e.level === 'info').map((e) => (e.data as any).progress.done), [4, 8, 12, 16, 20, 24, 28, 32, 36, 40])
  assert.equal(of(ok).filter((e) => !e.startsWith('job.progress')), ['job.created:info', 'job.state:info', 'job.concluded:info'])
  assert.equal(of(failed), ['job.created:info', 'job.state:info', 'job.concluded:warn'])
  assert.equal(of(cancelled), ['job.created:info', 'job.state:info', 'job.cancelling:info', 'job.concluded:info'])
})

test('a human event line: local time, level, event, fields with sizes and times readable', () => {
  const ts = new Date(2026, 0, 2, 3, 4, 5).getTime()
  assert.is(formatEvent({ event: 'disk.created', level: 'info', timestamp: ts, data: { path: 'a b.img', size: 16 << 20, volume: 'vol0' } }),
    '2026-01-02 03:04:05  info   disk.created  path="a b.img"  size=16M  volume=vol0')
  assert.is(formatEvent({ event: 'disk.frozen', level: 'info', timestamp: ts, data: { path: 'a', until: ts } }),
    '2026-01-02 03:04:05  info   disk.frozen  path=a  until=2026-01-02 03:04:05')
  const job = { id: 7, kind: 'volume.scrub', state: 'running', progress: { done: 1, total: 4 }, description: 'scrub vol0', createdAt: ts }
  assert.is(formatEvent({ event: 'job.progress', level: 'debug', timestamp: ts, data: job }),
    '2026-01-02 03:04:05  debug  job.progress  job=7  kind=volume.scrub  state=running  progress=25%  description="scrub vol0"')
})

test.run()
