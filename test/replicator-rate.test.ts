// --rate over a real OpenSSH sshd on 127.0.0.1: an async group limited to 4 MiB/s
// ships a 24 MiB burst of fsync'd writes. From the first write until the secondary
// holds everything durably, the bytes the shipper sent stay within the limit (plus the
// one second of burst the token bucket saves up) and near it (the link is not idle
// while there is lag), and both sites end byte-identical.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { closeSync, fsyncSync, mkdtempSync, openSync, writeSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { makeVsm, VSM } from './helpers/daemon'
import { startSshd, type Sshd } from './helpers/sshd'
import { until as untilAt, stopSites, volumeBytes } from './helpers/repl-sites'

const dir = mkdtempSync(join(tmpdir(), `vsm-test-${process.env.VSM_RUNNER_ID ?? 'solo'}-rate-`))
const primary = makeVsm({ deviceSize: '192M' })
const secondary = makeVsm({ deviceSize: '256M' })
let sshd: Sshd | null = null

test.before(async () => { sshd = await startSshd(dir) })
test.after(() => stopSites([primary, secondary], sshd, dir))

const RATE = 4 << 20
const BURST = 24 << 20
const until = <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, ms?: number) => untilAt([secondary.home, primary.home], what, get, ok, ms)
const status = async (v: typeof primary) => (await v.json('repl', 'status', 'g'))[0]

test('--rate 4M holds shipping near 4 MiB/s under a 24 MiB burst; nothing is lost', async () => {
  await secondary.run('up', '--secondary', '--device-size', '256M')
  await primary.up()
  await primary.run('device', 'add', 'e0', join(primary.home, 'e0.img'), '--size', '64M')
  await primary.run('disk', 'create', 'd.img', '--size', '32M')
  await primary.run('repl', 'create', 'g', '--target', `ssh://root@127.0.0.1:${sshd!.port}${secondary.home}`, '--mode', 'async', '--rate', '4M',
    '--identity', sshd!.identity, '--known-hosts', sshd!.knownHosts, '--remote-vsm', VSM, '--log-size', '48M')
  const synced = await until('the initial sync', () => status(primary), (s) => s.state === 'replicating' && s.lagBytes === 0 && s.secondaryDurableSeq === s.headSeq)
  assert.is(synced.rate, RATE)

  const t0 = Date.now()
  const fd = openSync(join(primary.mount, 'd.img'), 'r+')
  try {
    for (let off = 0; off < BURST; off += 1 << 20) writeSync(fd, randomBytes(1 << 20), 0, 1 << 20, off)
    fsyncSync(fd)
  } finally { closeSync(fd) }
  const written = Date.now() - t0
  const done = await until('the secondary to catch up', () => status(primary), (s) => s.lagBytes === 0 && s.secondaryDurableSeq === s.headSeq, 120_000)
  const seconds = (Date.now() - t0) / 1000
  const sent = done.sentBytes - synced.sentBytes
  const perSecond = sent / seconds
  console.log(`--rate ${RATE}: ${sent} bytes shipped in ${seconds.toFixed(1)} s = ${(perSecond / (1 << 20)).toFixed(2)} MiB/s (writes took ${(written / 1000).toFixed(1)} s)`)
  assert.ok(sent >= BURST, `every written byte was shipped (${sent})`)
  // the bucket lets one second's worth go at once; the status poll adds up to ~0.5 s to the measured time
  assert.ok(sent <= RATE * (seconds + 1) * 1.02, `at most the limit: ${sent} bytes in ${seconds} s`)
  assert.ok(perSecond >= RATE * 0.6, `near the limit while there was lag: ${perSecond} bytes/s`)

  await primary.down()
  await secondary.down()
  const [p, q] = [await volumeBytes(primary.home, 'vol0'), await volumeBytes(secondary.home, 'vol0')]
  assert.ok(p.equals(q), 'the secondary\'s vol0 is byte-identical to the primary\'s')
})

test.run()
