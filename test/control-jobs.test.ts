// Jobs: lifecycle created → running → (paused) → concluded, progress and its
// throttling, cancellation, and the same through the socket (job.list/wait/cancel
// and events delivered to subscribed connections only).
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { VsmError } from '../src/block/blockdev'
import { Jobs, JobEvent, JobInfo } from '../src/control/jobs'
import { ControlServer } from '../src/control/server'
import { Events } from '../src/control/events'
import { ControlClient, EventFrame } from '../src/control/client'

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms))
// A job's run is deferred with setImmediate; one scheduled after it runs after it. (A 1 ms
// timer can fire first on a loaded machine: the timers phase comes before the check phase.)
const started = () => new Promise((r) => setImmediate(r))

/** A job whose steps the test releases one by one. */
function stepper() {
  let release: (() => void) | null = null
  const next = () => new Promise<void>((r) => { release = r })
  const step = async () => { for (let i = 0; i < 200 && !release; i++) await tick(5); const r = release!; release = null; r() }
  return { next, step }
}

const jobs = suite('jobs')

jobs('lifecycle: start returns an id at once; created → running → concluded with result', async () => {
  const j = new Jobs({ progressIntervalMs: 0 })
  const events: JobEvent[] = []
  j.on('event', (e: JobEvent) => events.push(e))
  const s = stepper()
  const id = j.start('rebuild', async (_signal, progress) => {
    progress(0, 3)
    for (let i = 1; i <= 3; i++) { await s.next(); progress(i) }
    return { rebuilt: 3 }
  }, { description: 'rebuild v0' })
  assert.type(id, 'number')
  assert.is(j.get(id).state, 'created')
  await started()
  assert.is(j.get(id).state, 'running')
  assert.ok(j.get(id).startedAt)
  await s.step()
  await tick(1)
  assert.equal(j.get(id).progress, { done: 1, total: 3 })
  await s.step(); await s.step()
  const info = await j.wait(id)
  assert.is(info.state, 'concluded')
  assert.equal(info.result, { rebuilt: 3 })
  assert.is(info.error, undefined)
  assert.equal(info.progress, { done: 3, total: 3 })
  assert.is(info.description, 'rebuild v0')
  assert.equal(events.map((e) => e.event === 'job.state' ? `state:${e.data.state}` : e.event),
    ['job.created', 'state:running', 'job.progress', 'job.progress', 'job.progress', 'job.progress', 'job.concluded'])
  assert.equal(j.list().map((x) => x.id), [id])
  // waiting on a concluded job answers at once
  assert.is((await j.wait(id)).state, 'concluded')
})

jobs('a failing job concludes with its error; wait resolves, it does not throw', async () => {
  const j = new Jobs()
  const a = j.start('x', async () => { throw new VsmError('ENOSPC', 'pool is full') })
  const b = j.start('y', async () => { throw new Error('bug') })
  assert.equal((await j.wait(a)).error, { code: 'ENOSPC', message: 'pool is full' })
  assert.equal((await j.wait(b)).error, { code: 'EIO', message: 'bug' })
  assert.throws(() => j.get(999), (e: VsmError) => e.code === 'ENOENT')
  assert.throws(() => j.cancel(999), (e: VsmError) => e.code === 'ENOENT')
})

jobs('cancel: the signal aborts, the job concludes ECANCELED; idempotent; before start it never runs', async () => {
  const j = new Jobs()
  let sawAbort = false
  const id = j.start('scrub', (signal) => new Promise((_, reject) => {
    signal.addEventListener('abort', () => { sawAbort = true; reject(new Error('interrupted')) })
  }))
  await started()
  assert.is(j.get(id).state, 'running')
  const c = j.cancel(id)
  assert.ok(c.cancelRequested)
  const info = await j.wait(id)
  assert.ok(sawAbort)
  assert.equal(info.error, { code: 'ECANCELED', message: 'job was cancelled' })
  assert.is(j.cancel(id).state, 'concluded') // again: no-op

  let ran = false
  const early = j.start('never', async () => { ran = true })
  j.cancel(early)
  assert.is(j.get(early).state, 'concluded')
  await tick(5)
  assert.not.ok(ran)
  assert.is(j.get(early).error?.code, 'ECANCELED')
})

jobs('outcomes tell done, cancelled and failed apart; cancel of a finished job leaves it done', async () => {
  const j = new Jobs()
  const done = j.start('ok', async () => 1)
  const failed = j.start('bad', async () => { throw new VsmError('EIO', 'disk said no') })
  const cancelled = j.start('slow', (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('x')))))
  await started()
  j.cancel(cancelled)
  const [a, b, c] = await Promise.all([done, failed, cancelled].map((id) => j.wait(id)))
  assert.equal([a.outcome, b.outcome, c.outcome], ['done', 'failed', 'cancelled'])
  const again = j.cancel(done)
  assert.is(again.outcome, 'done', 'a finished job stays done')
  assert.not.ok(again.cancelRequested)
})

jobs('a job that unwinds runs even when cancelled before it started; a cancel it refuses is EBUSY with the reason', async () => {
  const j = new Jobs()
  let unwound = false
  const id = j.start('relayout', async (_signal, progress) => {
    try { await progress.checkpoint() } catch (e) { unwound = true; throw new VsmError('ECANCELED', 'relayout cancelled: v stays mirror') }
  }, { unwinds: true })
  j.cancel(id)
  const info = await j.wait(id)
  assert.ok(unwound, 'the job ran and unwound')
  assert.equal(info.error, { code: 'ECANCELED', message: 'relayout cancelled: v stays mirror' })
  assert.is(info.outcome, 'cancelled')
  let busy = true
  const held = j.start('switch', async (_s, progress) => { while (busy) { await progress.checkpoint(); await tick(2) } }, { refuseCancel: () => (busy ? 'switching' : null) })
  await started()
  assert.throws(() => j.cancel(held), (e: VsmError) => e.code === 'EBUSY' && e.message === `job ${held} (switch) cannot be cancelled: switching`)
  assert.is(j.get(held).state, 'running')
  busy = false
  assert.is((await j.wait(held)).outcome, 'done')
})

jobs('with a store, ids and history survive a restart; a job open at the crash is failed (EINTR); history is bounded', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsm-jobs-'))
  try {
    const store = path.join(dir, 'jobs.json')
    const a = new Jobs({ store, keepConcluded: 3 })
    for (let k = 0; k < 5; k++) await a.wait(a.start('scrub', async () => k))
    const open = a.start('rebuild', () => new Promise(() => {}))
    await started()
    // a new registry on the same file, as after kill -9
    const b = new Jobs({ store, keepConcluded: 3 })
    const list = b.list()
    assert.equal(list.map((x) => x.id), [4, 5, 6], 'the newest concluded jobs, bounded')
    const was = b.get(open)
    assert.is(was.outcome, 'failed')
    assert.is(was.error?.code, 'EINTR')
    assert.is(b.get(5).result, 4)
    const next = b.start('scrub', async () => 0)
    assert.is(next, open + 1, 'ids go on from where they were')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

jobs('pause and resume are cooperative, at checkpoints; cancel wakes a paused job', async () => {
  const j = new Jobs({ progressIntervalMs: 0 })
  let done = 0
  const id = j.start('migrate', async (_s, progress) => {
    for (let i = 0; i < 1000; i++) { await progress.checkpoint(); done = i + 1; progress(done, 1000); await tick(1) }
    return 'all'
  }, { pausable: true })
  await tick(20)
  assert.is(j.pause(id).state, 'paused')
  await tick(10)
  const at = done
  await tick(50)
  assert.ok(done - at <= 1, 'job kept working while paused')
  assert.is(j.resume(id).state, 'running')
  for (let k = 0; k < 200 && done <= at + 1; k++) await tick(10)
  assert.ok(done > at + 1, 'job did not resume')
  j.pause(id)
  await tick(10)
  j.cancel(id)
  const info = await j.wait(id)
  assert.is(info.error?.code, 'ECANCELED')
  assert.ok(done < 1000)

  const plain = j.start('plain', async () => { await tick(50) })
  await started()
  assert.throws(() => j.pause(plain), (e: VsmError) => e.code === 'EOPNOTSUPP')
  await j.wait(plain)
})

jobs('progress events are throttled but the last value is never lost', async () => {
  const j = new Jobs({ progressIntervalMs: 40 })
  const seen: JobInfo[] = []
  j.on('job.progress', (i: JobInfo) => seen.push(i))
  const id = j.start('tight', async (_s, progress) => {
    for (let i = 1; i <= 10000; i++) progress(i, 20000)
    await tick(100)
  })
  await j.wait(id)
  assert.ok(seen.length >= 1 && seen.length <= 3, `${seen.length} progress events`)
  assert.is(seen[seen.length - 1].progress.done, 10000)
})

jobs('waitAll waits for every open job; a wait can be abandoned', async () => {
  const j = new Jobs()
  j.start('a', () => tick(20))
  j.start('b', () => tick(40))
  const all = await j.waitAll()
  assert.ok(all.every((x) => x.state === 'concluded'))
  const id = j.start('long', () => tick(1000))
  const ac = new AbortController()
  const w = j.wait(id, ac.signal).catch((e) => e)
  ac.abort()
  assert.is(((await w) as VsmError).code, 'ECANCELED')
  j.cancel(id)
  await j.cancelAll()
})

jobs('concluded jobs are pruned beyond keepConcluded', async () => {
  const j = new Jobs({ keepConcluded: 3 })
  const ids = [1, 2, 3, 4, 5].map(() => j.start('t', async () => 1))
  await j.waitAll()
  assert.equal(j.list().map((x) => x.id), ids.slice(2))
})

// -------------------------------------------------------------------------------

const wire = suite('jobs over the control socket')
const PLANS: Record<string, { steps: number; fail?: boolean }> = {
  v0: { steps: 3 }, failing: { steps: 1, fail: true }, long: { steps: 1000 }, two: { steps: 2 }, four: { steps: 4 }, twenty: { steps: 20 },
}
let dir: string
let server: ControlServer
let clients: ControlClient[]
wire.before.each(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsm-jobs-'))
  const events = new Events()
  server = new ControlServer({ socketPath: path.join(dir, 'vsm.sock'), events, jobs: new Jobs({ progressIntervalMs: 0, events }) })
  clients = []
  // A component that starts jobs the way the volume manager will (rebuild returns {job});
  // the volume's name picks how the job goes.
  server.register('L', async (cmd, ctx) => {
    const { steps, fail } = PLANS[cmd.args.name]
    const job = ctx.jobs.start(cmd.name, async (signal, progress) => {
      progress(0, steps)
      for (let i = 1; i <= steps; i++) {
        await new Promise((r) => setTimeout(r, 5))
        if (signal.aborted) throw new VsmError('ECANCELED', 'stopped')
        progress(i)
      }
      if (fail) throw new VsmError('EIO', 'device d1 failed')
      return { scrubbed: cmd.args.name }
    })
    return { job }
  })
  await server.listen()
})
wire.after.each(async () => {
  for (const c of clients) await c.close()
  await server.close()
  fs.rmSync(dir, { recursive: true, force: true })
})
const connect = async () => { const c = await ControlClient.connect(path.join(dir, 'vsm.sock')); clients.push(c); return c }

wire('job.list, job.wait and the result of a job started by a component', async () => {
  const c = await connect()
  const { job } = await c.call('volume.scrub', { name: 'v0' })
  const listed: JobInfo[] = await c.call('job.list')
  assert.equal(listed.map((j) => [j.id, j.kind]), [[job, 'volume.scrub']])
  const info: JobInfo = await c.call('job.wait', { id: job })
  assert.is(info.state, 'concluded')
  assert.equal(info.result, { scrubbed: 'v0' })
  const failed: JobInfo = await c.call('job.wait', { id: (await c.call('volume.scrub', { name: 'failing' })).job })
  assert.equal(failed.error, { code: 'EIO', message: 'device d1 failed' })
  try { await c.call('job.wait', { id: 12345 }); assert.unreachable() } catch (e) { assert.is((e as VsmError).code, 'ENOENT') }
})

wire('job.cancel over the socket; job.wait with a timeout; wait --all', async () => {
  const c = await connect()
  const { job } = await c.call('volume.scrub', { name: 'long' })
  try { await c.call('job.wait', { id: job, timeoutMs: 30 }); assert.unreachable() } catch (e) { assert.is((e as VsmError).code, 'ETIMEDOUT') }
  const waiting = c.call('job.wait', { id: job })
  const after = await c.call('job.cancel', { id: job })
  assert.ok(after.cancelRequested)
  const info: JobInfo = await waiting
  assert.is(info.error?.code, 'ECANCELED')
  await c.call('volume.scrub', { name: 'two' })
  await c.call('volume.scrub', { name: 'four' })
  const all: JobInfo[] = await c.call('job.wait', { all: true })
  assert.ok(all.length === 3 && all.every((j) => j.state === 'concluded'))
})

wire('progress events reach subscribers only, with request id 0, in order', async () => {
  const sub = await connect()
  const other = await connect()
  const got: EventFrame[] = []
  const otherGot: EventFrame[] = []
  await sub.subscribe((e) => got.push(e))
  // `other` never subscribed: listen below the API to prove no event frame reaches it
  ;(other as any).listeners.add((e: EventFrame) => otherGot.push(e))
  const { job } = await other.call('volume.scrub', { name: 'four' })
  await other.call('job.wait', { id: job })
  await tick(20)
  const mine = got.filter((e) => e.data.id === job)
  const names = mine.map((e) => e.event)
  assert.is(names[0], 'job.created')
  assert.is(names[names.length - 1], 'job.concluded')
  const progress = mine.filter((e) => e.event === 'job.progress').map((e) => e.data.progress.done)
  assert.equal(progress, [0, 1, 2, 3, 4])
  assert.ok(mine.every((e) => typeof e.timestamp === 'number'))
  assert.is(otherGot.length, 0)
})

wire('a subscription can be limited to some events; components can publish their own', async () => {
  const c = await connect()
  const got: EventFrame[] = []
  await c.subscribe((e) => got.push(e), ['job.concluded', 'device.failed'])
  const { job } = await c.call('volume.scrub', { name: 'two' })
  await c.call('job.wait', { id: job })
  server.events.publish('device.failed', { device: 'd1' })
  server.events.publish('something.else', {})
  await tick(20)
  assert.equal(got.map((e) => e.event), ['job.concluded', 'device.failed'])
  assert.equal(got[1].data, { device: 'd1' })
})

wire('a job.wait is released when its connection closes, and the job goes on', async () => {
  const c = await ControlClient.connect(path.join(dir, 'vsm.sock'))
  const { job } = await c.call('volume.scrub', { name: 'twenty' })
  const w = c.call('job.wait', { id: job }).catch((e) => e)
  await tick(10)
  await c.close()
  assert.is(((await w) as VsmError).code, 'ECONNRESET')
  const info = await server.jobs.wait(job)
  assert.equal(info.result, { scrubbed: 'twenty' })
})

jobs.run()
wire.run()
