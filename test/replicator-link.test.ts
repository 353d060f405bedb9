// The link's policies over a real OpenSSH sshd on 127.0.0.1. --rate: an async group
// limited to 4 MiB/s ships a 24 MiB burst of fsync'd writes; from the first write until
// the secondary holds everything durably, the bytes the shipper sent stay within the
// limit (plus the one second of burst the token bucket saves up) and near it (the link
// is not idle while there is lag), and both sites end byte-identical (the initial sync
// having sent only the ranges vol0 ever wrote). sync-fallback:
// with the secondary killed, one fsync waits --sync-timeout and the group goes async
// (later fsyncs do not wait), with an event; once the secondary is back and caught up,
// it is sync again.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { replCreate, sitePair, until as untilAt, upWithDisk, volumeBytes } from './helpers/repl-sites'

const { primary, secondary, sshd, until } = sitePair(test, 'rate')

const RATE = 4 << 20
const BURST = 24 << 20
const status = async (v: typeof primary) => (await v.json('repl', 'status', 'g'))[0]

test('--rate 4M holds shipping near 4 MiB/s under a 24 MiB burst; nothing is lost', async () => {
  await upWithDisk(primary, secondary, 'd.img', '32M')
  await replCreate(primary, secondary, sshd(), 'g', '--mode', 'async', '--rate', '4M', '--log-size', '48M')
  const synced = await until('the initial sync', () => status(primary), (s) => s.state === 'replicating' && s.lagBytes === 0 && s.secondaryDurableSeq === s.headSeq)
  assert.is(synced.rate, RATE)
  // the initial sync sent only what vol0 may hold (the fs's metadata, the new disk's few blocks), not the whole volume
  const sync = (await primary.json('job', 'list')).find((j: any) => j.kind === 'repl-sync')
  const vol0 = (await primary.json('volume', 'list')).find((v: any) => v.name === 'vol0')
  assert.ok(sync.result.copiedBytes > 0 && sync.result.copiedBytes < vol0.size / 4, JSON.stringify(sync.result))
  assert.is(sync.result.copiedBytes + sync.result.skippedBytes, vol0.size)
  console.log(`initial sync: ${sync.result.copiedBytes} of vol0's ${vol0.size} bytes sent`)

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

test('sync-fallback: an fsync waits --sync-timeout for a dead secondary, then the group is async until the secondary catches up', async () => {
  const p2 = makeVsm({ deviceSize: '192M' })
  const s2 = makeVsm({ deviceSize: '256M' })
  const st = async () => (await p2.json('repl', 'status', 'h'))[0]
  const fsyncedWrite = (g: number) => {
    const t = Date.now()
    const fd = openSync(join(p2.mount, 'f.img'), 'r+')
    try { writeSync(fd, Buffer.alloc(64 << 10, g), 0, 64 << 10, g * (64 << 10)); fsyncSync(fd) } finally { closeSync(fd) }
    return Date.now() - t
  }
  try {
    await upWithDisk(p2, s2, 'f.img', '8M')
    await replCreate(p2, s2, sshd(), 'h', '--mode', 'sync-fallback', '--sync-timeout', '2', '--log-size', '16M')
    const ready = await untilAt([s2.home, p2.home], 'the initial sync', st, (s) => s.state === 'replicating' && s.lagBytes === 0)
    assert.equal([ready.mode, ready.syncTimeoutMs, ready.fallenBack], ['sync-fallback', 2000, false])
    fsyncedWrite(1)
    assert.is((await st()).fallenBack, false)

    s2.kill9()
    const waited = fsyncedWrite(2)
    assert.ok(waited >= 1900 && waited < 10_000, `the fsync waited the timeout, then returned: ${waited} ms`)
    const fell = await st()
    assert.is(fell.fallenBack, true)
    assert.ok(fsyncedWrite(3) < 1500, 'async now: the next fsync does not wait')
    assert.ok(readFileSync(join(p2.home, 'log', 'vsm.log'), 'utf8').includes('repl.sync-fallback'))

    await s2.run('up', '--secondary')
    await untilAt([s2.home, p2.home], 'the secondary to catch up and the group to be sync again', st, (s) => s.fallenBack === false && s.lagBytes === 0, 90_000)
    assert.ok(readFileSync(join(p2.home, 'log', 'vsm.log'), 'utf8').includes('repl.sync-restored'))
    fsyncedWrite(4)
    assert.is((await st()).fallenBack, false, 'a flush with the secondary there leaves the group sync')
  } finally {
    await p2.cleanup()
    await s2.cleanup()
  }
})

test.run()
