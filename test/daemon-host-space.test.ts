// What `vsm status` measures of the file systems holding thin device files: how much
// each file may still take (its size less what it holds) against what its file system
// has free. Real files on a 16 MiB tmpfs.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { truncateSync, writeFileSync } from 'fs'
import { join } from 'path'
import { tmpfsFor } from './helpers/tmpfs'
import { hostSpace } from '../src/daemon/host-space'
import type { DeviceInfo } from '../src/volume/core'

const MiB = 1 << 20
const dir = tmpfsFor(test, 'hostspace', '16m')

const device = (name: string, extra: Partial<DeviceInfo> = {}): DeviceInfo =>
  ({ name, id: `id-${name}`, path: join(dir, `${name}.img`), size: 64 * MiB, free: 0, used: 0, state: 'online', blockDevice: false, ...extra })

test('device files on one file system: their growth summed against its free space; block devices and missing files left out', async () => {
  writeFileSync(join(dir, 'd0.img'), '')
  truncateSync(join(dir, 'd0.img'), 64 * MiB)
  writeFileSync(join(dir, 'd1.img'), Buffer.alloc(4 * MiB, 1))
  truncateSync(join(dir, 'd1.img'), 32 * MiB)
  const hosts = await hostSpace([device('d0'), device('d1'), device('b0', { blockDevice: true, path: '/dev/null' }), device('gone', { state: 'missing' })])
  assert.is(hosts.length, 1)
  const h = hosts[0]
  assert.is(h.dir, dir)
  assert.equal(h.devices.sort(), ['d0', 'd1'])
  assert.is(h.growth, 64 * MiB + 28 * MiB)
  assert.ok(h.free > 11 * MiB && h.free <= 12 * MiB, `free ${h.free}`)
})

test.run()
