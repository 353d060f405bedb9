// Crash: kill -9 of the daemon while a writer streams fsync'd writes into a disk in
// the FUSE view. After `vsm up`, every write acknowledged by fsync is there byte for
// byte (a write in flight may hold its old or its new contents), and the fs check is clean.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'child_process'
import { closeSync, openSync, readSync, readFileSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { slotData, SLOT } from './helpers/crash-writer'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())

const SLOTS = 512

/**
 * Each 4 KiB block of a slot must hold the last acknowledged version, or the version
 * in flight after it (an unacknowledged write may land in part).
 */
function verify(img: string, journal: string) {
  const acked = new Map<number, number>(), tried = new Map<number, number>()
  for (const line of readFileSync(journal, 'utf8').split('\n')) {
    const m = /^(try|ack) (\d+) (\d+)$/.exec(line)
    if (!m) continue
    ;(m[1] === 'ack' ? acked : tried).set(Number(m[2]), Number(m[3]))
  }
  const fd = openSync(img, 'r')
  const buf = Buffer.alloc(SLOT)
  let checked = 0
  try {
    for (const [slot, version] of acked) {
      readSync(fd, buf, 0, SLOT, slot * SLOT)
      const good = slotData(slot, version)
      const inflight = tried.get(slot)! > version ? slotData(slot, tried.get(slot)!) : good
      for (let b = 0; b < SLOT; b += 4096) {
        const got = buf.subarray(b, b + 4096)
        assert.ok(got.equals(good.subarray(b, b + 4096)) || got.equals(inflight.subarray(b, b + 4096)), `slot ${slot} block ${b / 4096}: acknowledged version ${version} lost`)
      }
      checked++
    }
  } finally {
    closeSync(fd)
  }
  return checked
}

test('every fsync-acknowledged write survives kill -9 of the daemon, three times over', async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'crash.img', '--size', `${(SLOTS * SLOT) >> 20}M`)
  const img = join(vsm.mount, 'crash.img')
  const journal = join(vsm.home, 'writer.journal')
  for (let round = 0; round < 3; round++) {
    const writer = spawn(process.execPath, [join(__dirname, 'helpers', 'crash-writer.js'), img, journal, String(SLOTS), String(round + 1)], { stdio: 'ignore' })
    const exited = new Promise((res) => writer.on('exit', res))
    await new Promise((r) => setTimeout(r, 1500 + Math.random() * 2500))
    vsm.kill9()
    await exited
    await vsm.up()
    const checked = verify(img, journal)
    assert.ok(checked > 10, `only ${checked} acknowledged writes in round ${round}`)
    const fsck = await vsm.json('fs', 'check')
    assert.ok(fsck.ok, `fs check: ${fsck.errors.join('; ')}`)
  }
})

test.run()
