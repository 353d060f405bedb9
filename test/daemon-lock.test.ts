// One daemon per home: a second `vsm up` against a running home — its socket renamed
// away so it looks dead, or two ups racing on a fresh home — never unmounts, opens or
// writes anything of the running daemon; acknowledged writes survive a restart.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { closeSync, fsyncSync, openSync, readFileSync, readdirSync, renameSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm, RunError } from './helpers/daemon'
import { isMounted } from '../src/daemon/mounts'
import { processAlive } from '../src/cli/up'

const vsm = makeVsm({ deviceSize: '256M' })
test.after(() => vsm.cleanup())

/** Writes and fsyncs a file in the view: once this returns the bytes are acknowledged. */
function writeAcked(path: string, data: Buffer) {
  const fd = openSync(path, 'w')
  try { writeSync(fd, data); fsyncSync(fd) } finally { closeSync(fd) }
}

const pattern = (seed: number, n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff))

/** Daemons (`up --foreground`) serving this home, by scanning /proc. */
function daemonsOn(home: string): number[] {
  return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
      return argv.includes('--foreground') && argv.includes(home) && processAlive(Number(pid))
    } catch { return false }
  }).map(Number)
}

test('a second up with the socket renamed away leaves the running daemon, its mount and its writes alone', async () => {
  await vsm.up()
  const pid = vsm.pid()
  const first = pattern(1, 1 << 20)
  writeAcked(join(vsm.mount, 'a.bin'), first)
  const sock = join(vsm.home, 'vsm.sock')
  renameSync(sock, sock + '.away')
  try {
    // through the CLI's look at the lock, and straight into a daemon (--foreground)
    for (const args of [['up'], ['up', '--foreground']]) {
      const err = await vsm.run(...args, '--device-size', '256M').then(() => null, (e: RunError) => e)
      assert.ok(err, `vsm ${args.join(' ')} succeeded while a daemon holds the home`)
      const msg = err!.stderr.trim()
      assert.is(msg.split('\n').length, 1, msg)
      assert.match(msg, new RegExp(`pid ${pid}\\b`))
    }
    assert.ok(processAlive(pid), 'the running daemon died')
    assert.ok(isMounted(vsm.mount), 'the running daemon lost its mount')
    assert.equal(daemonsOn(vsm.home), [pid])
    // the first daemon still serves its view: more acknowledged writes
    const second = pattern(2, 1 << 20)
    writeAcked(join(vsm.mount, 'b.bin'), second)
    assert.ok(readFileSync(join(vsm.mount, 'a.bin')).equals(first))
  } finally {
    renameSync(sock + '.away', sock)
  }
  await vsm.down()
  await vsm.up()
  assert.ok(readFileSync(join(vsm.mount, 'a.bin')).equals(pattern(1, 1 << 20)), 'a.bin changed across the restart')
  assert.ok(readFileSync(join(vsm.mount, 'b.bin')).equals(pattern(2, 1 << 20)), 'b.bin changed across the restart')
  const st = await vsm.json('status')
  assert.is(st.pid, vsm.pid())
})

test('up on a running home says it is already running (pid) and exits 0', async () => {
  const out = await vsm.run('up')
  assert.match(out.trim(), new RegExp(`^vsm is already running \\(pid ${vsm.pid()}, home `))
})

test('two ups racing on a fresh home: one daemon, the other refused, the view intact', async () => {
  const race = makeVsm({ deviceSize: '256M' })
  try {
    const results = await Promise.allSettled([race.up(), race.up()])
    assert.ok(results.some((r) => r.status === 'fulfilled'), 'neither up succeeded')
    for (const r of results) {
      if (r.status === 'rejected') assert.is(((r.reason as RunError).stderr ?? '').trim().split('\n').length, 1)
    }
    assert.equal(daemonsOn(race.home), [race.pid()])
    assert.ok(isMounted(race.mount))
    writeAcked(join(race.mount, 'c.bin'), pattern(3, 4096))
    await race.down()
    await race.up()
    assert.ok(readFileSync(join(race.mount, 'c.bin')).equals(pattern(3, 4096)))
  } finally {
    await race.cleanup()
  }
})

test('up after kill -9 takes the freed lock and clears its own stale mount', async () => {
  const pid = vsm.pid()
  process.kill(pid, 'SIGKILL')
  for (let i = 0; i < 200 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 50))
  assert.ok(isMounted(vsm.mount), 'a killed FUSE daemon leaves its mount behind')
  await vsm.up()
  assert.ok(vsm.pid() !== pid)
  assert.ok(readFileSync(join(vsm.mount, 'a.bin')).equals(pattern(1, 1 << 20)))
})

test.run()
