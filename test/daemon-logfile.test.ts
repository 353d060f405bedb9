// The daemon's log file on a file system that fills up (a tmpfs of 64 KiB, the real
// ENOSPC): writes fail without holding the caller up or throwing, the first failure is
// reported once, an exit's flushSync gives up instead of retrying for ever (sonic-boom's
// did, asleep on the main thread), lines past the bound are dropped and counted, and
// once there is room the queued lines land in order with the count reported.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from 'fs'
import { join } from 'path'
import { tmpfsFor } from './helpers/tmpfs'
import { LogFile } from '../src/daemon/logfile'
import { openOwnAppend } from '../src/block/files'
import { until } from './helpers/daemon'

const dir = tmpfsFor(test, 'logfile', '64k')

test('a full log file system: nothing blocks or throws, flushSync gives up, lines wait (bounded) and land in order once there is room', async () => {
  const file = join(dir, 'vsm.log')
  const fd = openOwnAppend(file)
  const filler = join(dir, 'filler')
  try {
    // fill the tmpfs: a page-sized write at a time until it refuses
    try { for (;;) writeFileSync(filler, Buffer.alloc(4096), { flag: 'a' }) } catch (e) { assert.is((e as NodeJS.ErrnoException).code, 'ENOSPC') }
    const failures: string[] = []
    const recoveries: [number, string][] = []
    const log = new LogFile(fd, { failing: (e) => failures.push(e.code!), recovered: (n, why) => recoveries.push([n, why]) }, 1000)
    const line = (i: number) => `line ${String(i).padStart(4, '0')} ${'x'.repeat(80)}\n` // 95 bytes
    log.write(line(0))
    await until('the first failure', () => failures.length === 1)
    assert.equal(failures, ['ENOSPC'])
    for (let i = 1; i < 20; i++) log.write(line(i)) // 10 fit under the bound of 1000 bytes
    const t0 = Date.now()
    log.flushSync()
    assert.ok(Date.now() - t0 < 500, `flushSync took ${Date.now() - t0} ms`)
    assert.is(readFileSync(file, 'utf8'), '')
    await new Promise((r) => setTimeout(r, 1200)) // a retry that fails again reports nothing new
    assert.is(failures.length, 1)
    rmSync(filler)
    await until('the queued lines written', () => recoveries.length === 1)
    assert.is(recoveries[0][0], 10, 'lines 10 to 19 were over the bound')
    assert.match(recoveries[0][1], /space/)
    log.write(line(99))
    await until('a line after recovery', () => readFileSync(file, 'utf8').includes('line 0099'))
    assert.equal(readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => l.slice(0, 9)), [...Array(10).keys(), 99].map((i) => `line ${String(i).padStart(4, '0')}`))
  } finally {
    closeSync(fd)
  }
})

test('drained: resolves once every line so far is written, at once when writing has failed', async () => {
  const file = join(dir, 'drain.log')
  const fd = openOwnAppend(file)
  try {
    const log = new LogFile(fd, { failing: () => undefined, recovered: () => undefined })
    for (let i = 0; i < 1000; i++) log.write(`line ${i}\n`)
    await log.drained()
    assert.is(readFileSync(file, 'utf8').split('\n').filter(Boolean).length, 1000)
  } finally {
    closeSync(fd)
  }
  const devFull = openSync('/dev/full', 'w')
  try {
    const full = new LogFile(devFull, { failing: () => undefined, recovered: () => undefined })
    full.write('lost\n')
    await full.drained() // a failed write: it waits for room, not the caller
  } finally {
    closeSync(devFull)
  }
})

test.run()
