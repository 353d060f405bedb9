// Device and a pool on a real kernel block device (a loop device over a sparse file):
// size comes from BLKGETSIZE64, not stat.
import * as path from 'path'
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { conformance } from './helpers/conformance'
import { tmpDir, attachLoop, MiB } from './helpers/volume-tmp'
import { openDevice, Device } from '../src/volume/device'
import { Pool } from '../src/volume/pool'

const SIZE = 48 * MiB

async function loopFile(dir: string, name: string, size: number) {
  const file = path.join(dir, name)
  const fh = await fsp.open(file, 'w')
  await fh.truncate(size)
  await fh.close()
  return attachLoop(file)
}

conformance('volume Device on a loop block device', async () => {
  const t = await tmpDir()
  const loop = await loopFile(t.dir, 'backing.img', SIZE)
  if (!loop) throw new Error('losetup failed: loop devices are required for this test')
  try {
    let dev: Device = await openDevice(loop.dev)
    return {
      dev,
      reopen: async () => { await dev.close(); dev = await openDevice(loop.dev); return dev },
      cleanup: async () => { await dev.close(); loop.detach(); await t.cleanup() },
    }
  } catch (e) {
    loop.detach(); await t.cleanup(); throw e
  }
}).run()

const t = suite('volume on block devices')

t('BLKGETSIZE64 size and isBlockDevice; a mirror pool over two loop devices round-trips', async () => {
  const tmp = await tmpDir()
  const loops: { dev: string; detach: () => void }[] = []
  let pool: Pool | undefined
  try {
    for (const n of ['a.img', 'b.img']) {
      const l = await loopFile(tmp.dir, n, SIZE)
      assert.ok(l, 'losetup')
      loops.push(l!)
    }
    const d = await openDevice(loops[0].dev)
    assert.ok(d.isBlockDevice)
    assert.is(d.size, SIZE)
    await d.close()
    const home = path.join(tmp.dir, 'home')
    pool = await Pool.create(home)
    const info = await pool.addDevice('a', loops[0].dev)
    assert.ok(info.blockDevice)
    assert.is(info.size, SIZE)
    await pool.addDevice('b', loops[1].dev)
    await pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b'], size: 8 * MiB })
    const v = await pool.openVolume('m')
    const data = Buffer.alloc(3 * MiB, 0x6b)
    await v.write(data, MiB)
    await pool.close()
    pool = await Pool.open(home)
    const got = Buffer.alloc(data.length)
    await (await pool.openVolume('m')).read(got, MiB)
    assert.ok(got.equals(data))
    assert.is(pool.volumeInfo('m').state, 'healthy')
  } finally {
    await pool?.close().catch(() => {})
    for (const l of loops) l.detach()
    await tmp.cleanup()
  }
})

t.run()
