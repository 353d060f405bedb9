// State changes of a real daemon: `vsm events` streams those another client causes;
// the log file holds an offline, a rebuild and a scrub with their objects, and what
// crash recovery replayed; `up --foreground` logs to stdout at the --log-level given.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { ChildProcess, spawn } from 'child_process'
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm, RunError, VSM } from './helpers/daemon'
import { startForeground } from './helpers/foreground'
import { processAlive } from '../src/cli/up'
import { isMounted } from '../src/daemon/mounts'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function until<T>(what: string, fn: () => T | undefined | false, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/** `vsm events ARGS` as a child; resolves once it says the subscription is live. */
async function follow(home: string, ...args: string[]) {
  const child = spawn(VSM, ['events', ...args, '--home', home], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = '', err = ''
  child.stdout!.on('data', (b) => { out += b })
  child.stderr!.on('data', (b) => { err += b })
  await until('vsm events to subscribe', () => err.includes('following') || child.exitCode !== null)
  assert.is(child.exitCode, null, err)
  return { child, lines: () => out.split('\n').filter(Boolean) }
}

const logEvents = () => readFileSync(join(vsm.home, 'log', 'vsm.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((l) => l.event)

test('vsm events --json receives a disk create made by another client; human lines name it in local time', async () => {
  await vsm.up()
  let json: { child: ChildProcess; lines: () => string[] } | undefined
  let human: typeof json
  try {
    json = await follow(vsm.home, '--json')
    human = await follow(vsm.home)
    await vsm.run('disk', 'create', 'ev.img', '--size', '16M')
    const line = await until('the disk.created event', () => json!.lines().map((l) => JSON.parse(l)).find((e) => e.event === 'disk.created'))
    assert.equal(line.data, { path: 'ev.img', size: 16 << 20, volume: 'vol0' })
    assert.is(line.level, 'info')
    assert.ok(Math.abs(line.timestamp - Date.now()) < 60_000)
    const h = await until('the human line', () => human!.lines().find((l) => l.includes('disk.created')))
    assert.match(h, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  info   disk\.created  path=ev\.img  size=16M  volume=vol0$/)
    const d = new Date(line.timestamp)
    assert.ok(h.includes(`${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`), 'time is local')
  } finally {
    json?.child.kill()
    human?.child.kill()
  }
})

test('the log holds an offline, the rebuild it needs and a scrub, with their objects and levels', async () => {
  await vsm.run('device', 'offline', 'd1')
  await vsm.run('device', 'online', 'd1')
  await vsm.run('job', 'wait', '--all')
  await vsm.run('volume', 'scrub', 'vol0')
  await vsm.run('job', 'wait', '--all')
  const ev = await until('scrub in the log', () => { const e = logEvents(); return e.some((x) => x.event === 'volume.scrubbed') && e })
  const find = (name: string) => ev.find((e) => e.event === name)
  assert.equal([find('device.offline')?.device, find('device.offline')?.level], ['d1', 40])
  // the operator's offline is a planned loss of redundancy: a warning (a fault is an error)
  assert.equal([find('volume.member-failed')?.volume, find('volume.member-failed')?.device, find('volume.member-failed')?.level], ['vol0', 'd1', 40])
  assert.match(find('volume.member-failed')!.reason, /offline/)
  assert.is(find('device.online')?.device, 'd1')
  const rebuild = ev.filter((e) => e.event.startsWith('job.') && e.kind === 'volume.rebuild').map((e) => e.event)
  assert.equal(rebuild.filter((e) => e !== 'job.progress'), ['job.created', 'job.state', 'job.concluded'])
  assert.equal([find('volume.rebuilt')?.volume, find('volume.rebuilt')?.device], ['vol0', 'd1'])
  assert.equal([find('volume.scrubbed')?.volume, find('volume.scrubbed')?.unrecoverable], ['vol0', 0])
  assert.ok(ev.some((e) => e.event === 'job.concluded' && e.kind === 'volume.scrub' && !e.error))
  assert.ok(find('daemon.started') && find('disk.created'))
  assert.equal([find('pool.created')?.devices, find('pool.created')?.volumes], [['d0', 'd1'], ['vol0']])
  // info is the default level: of the progress chatter (debug) only each tenth of the way is kept
  const scrubbed = ev.filter((e) => e.event === 'job.progress' && e.kind === 'volume.scrub').map((e) => Math.floor((10 * e.progress.done) / e.progress.total))
  assert.ok(scrubbed.length >= 1 && scrubbed.length <= 10 && scrubbed.every((t, i) => t >= 1 && (i === 0 || t > scrubbed[i - 1])), JSON.stringify(scrubbed))
  assert.is(scrubbed[scrubbed.length - 1], 10)
})

test('after kill -9 the log says what recovery replayed and that the stale mount was cleared', async () => {
  const fd = openSync(join(vsm.mount, 'ev.img'), 'r+')
  try {
    for (let i = 0; i < 8; i++) writeSync(fd, Buffer.alloc(1 << 20, i + 1), 0, 1 << 20, i << 20)
    fsyncSync(fd)
  } finally { closeSync(fd) }
  const pid = vsm.pid()
  process.kill(pid, 'SIGKILL')
  await until('the daemon to die', () => !processAlive(pid))
  assert.ok(isMounted(vsm.mount))
  const before = logEvents().length
  await vsm.up()
  const ev = logEvents().slice(before)
  const mounted = ev.find((e) => e.event === 'fs.mounted')
  assert.ok(mounted.replayedRecords > 0 && mounted.replayedOps > 0, JSON.stringify(mounted))
  assert.match(mounted.reason, /unclean/)
  assert.ok(ev.some((e) => e.event === 'daemon.stale-mount-removed' && e.mount === vsm.mount))
  const rec = ev.find((e) => e.event === 'volume.recovered')
  assert.ok(rec && rec.volume === 'vol0' && rec.resyncedBytes > 0, JSON.stringify(rec))
  // a clean stop leaves nothing to replay, and says so
  await vsm.down()
  await vsm.up()
  const clean = logEvents().reverse().find((e) => e.event === 'fs.mounted')
  assert.equal([clean.replayedRecords, clean.reason], [0, 'clean'])
  assert.ok(logEvents().some((e) => e.event === 'daemon.stopped'))
})

test('up --foreground logs JSON lines to stdout at --log-level; a bad level is one line and starts nothing', async () => {
  await vsm.down()
  try {
    await vsm.run('up', '--log-level', 'loud')
    assert.unreachable('a bad log level was accepted')
  } catch (e) {
    assert.match((e as RunError).stderr, /loud/)
    assert.is((e as RunError).stderr.trim().split('\n').length, 1)
  }
  assert.not.ok(isMounted(vsm.mount))
  const { child, out, exited } = await startForeground(vsm, [VSM, 'up', '--foreground', '--log-level', 'warn', '--home', vsm.home])
  try {
    await vsm.run('device', 'offline', 'd1')
    const line = await until('device.offline on stdout', () => out().split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.event === 'device.offline'))
    assert.equal([line.device, line.level], ['d1', 40])
    await vsm.run('device', 'online', 'd1')
    await vsm.run('job', 'wait', '--all')
    await vsm.down()
    assert.is(await exited, 0)
    const lines = out().split('\n').filter(Boolean).map((l) => JSON.parse(l))
    // warn and above only: neither the start nor the online (info) reached stdout
    assert.ok(lines.every((l) => l.level >= 40), out())
    assert.not.ok(lines.some((l) => l.event === 'daemon.started'))
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
  }
})

test.run()
