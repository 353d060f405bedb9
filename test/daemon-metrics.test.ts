// Metrics of a real daemon: off by default; `up --metrics` refuses a non-loopback
// address; scraped over HTTP after I/O through the FUSE view and the socket, the
// per disk and per volume counters moved by what was written and read.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import * as http from 'http'
import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm, RunError } from './helpers/daemon'
import { ControlClient } from '../src/control/client'
import { isMounted } from '../src/daemon/mounts'
import { samples } from './helpers/prom'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())
const MiB = 1 << 20

function scrape(at: string): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    http.get(`http://${at}/metrics`, (res) => {
      let body = ''
      res.on('data', (b) => { body += b })
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`scrape: HTTP ${res.statusCode}`))
        resolve(samples(body))
      })
    }).on('error', reject)
  })
}

test('--metrics refuses a non-loopback address in one line and starts nothing', async () => {
  try {
    await vsm.run('up', '--device-size', '1G', '--metrics', '0.0.0.0:9100')
    assert.unreachable('a wildcard metrics address was accepted')
  } catch (e) {
    const msg = (e as RunError).stderr.trim()
    assert.is(msg.split('\n').length, 1, msg)
    assert.match(msg, /loopback/)
  }
  assert.not.ok(isMounted(vsm.mount))
})

test('metrics are off unless asked for', async () => {
  await vsm.run('up', '--device-size', '1G')
  assert.is((await vsm.json('status')).metrics, null)
  await vsm.down()
})

test('a scrape after I/O through the FUSE view and the socket: counters moved by the right amounts', async () => {
  await vsm.run('up', '--device-size', '1G', '--metrics', '127.0.0.1:0')
  const at: string = (await vsm.json('status')).metrics
  assert.match(at, /^127\.0\.0\.1:\d+$/)
  assert.match(await vsm.run('status'), new RegExp(`metrics http://${at.replace(/\./g, '\\.')}/metrics`))
  await vsm.run('disk', 'create', 'm.img', '--size', '64M')
  const disk = (name: string, op: string) => `vsm_disk_io_${name}{disk="m.img",op="${op}"}`
  const vol = (name: string, op: string) => `vsm_volume_io_${name}{volume="vol0",op="${op}"}`
  const before = await scrape(at)
  const v0 = (k: string) => before.get(k) ?? 0

  const fd = openSync(join(vsm.mount, 'm.img'), 'r+')
  try {
    for (let i = 0; i < 4; i++) writeSync(fd, Buffer.alloc(MiB, i + 1), 0, MiB, i * MiB)
    fsyncSync(fd)
    // never written, so not in the page cache: the read reaches vsm (with readahead, maybe more)
    assert.is(readSync(fd, Buffer.alloc(256 << 10), 0, 256 << 10, 32 * MiB), 256 << 10)
  } finally { closeSync(fd) }
  const c = await ControlClient.connect(join(vsm.home, 'vsm.sock'))
  try {
    assert.ok((await c.diskRead('m.img', 0, MiB)).equals(Buffer.alloc(MiB, 1)))
  } finally { await c.close() }

  const after = await scrape(at)
  const delta = (k: string) => (after.get(k) ?? 0) - v0(k)
  assert.is(delta(disk('bytes_total', 'write')), 4 * MiB, 'every byte written through the view, once')
  assert.ok(delta(disk('requests_total', 'write')) >= 4)
  assert.ok(delta(disk('requests_total', 'flush')) >= 1, 'the fsync')
  // the socket read is exact; the view's read is at least what was asked
  assert.ok(delta(disk('bytes_total', 'read')) >= MiB + (256 << 10), String(delta(disk('bytes_total', 'read'))))
  assert.ok(delta(disk('requests_total', 'read')) >= 2)
  assert.is(delta(disk('errors_total', 'write')) + delta(disk('errors_total', 'read')), 0)
  assert.is(after.get(`vsm_disk_io_latency_seconds_count{disk="m.img",op="write"}`), after.get(disk('requests_total', 'write')))
  // below it, the volume carried the data and the fs's own metadata
  assert.ok(delta(vol('bytes_total', 'write')) >= 4 * MiB, String(delta(vol('bytes_total', 'write'))))
  assert.ok(delta(vol('requests_total', 'flush')) >= 1)
  assert.is(after.get('vsm_volume_state{volume="vol0",state="healthy"}'), 1)
  const st = await vsm.json('status')
  assert.is(after.get('vsm_fs_size_bytes'), st.fs.size)
  assert.is(after.get('vsm_device_state{device="d1",state="online"}'), 1)

  await vsm.run('disk', 'delete', 'm.img')
  const gone = await scrape(at)
  assert.not.ok([...gone.keys()].some((k) => k.includes('disk="m.img"')), 'a deleted disk leaves the metrics')
})

test.run()
