// Tagged checksum tables: making a volume writes nothing in proportion to its size (its
// members' tables stay holes in sparse files), a table laid over what another volume
// left on the extent reads as "never written", sums written through a reopen still
// catch a bad block, and volumes with dense tables (made before) still open and verify.
import * as path from 'path'
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { poolFixture, MiB, GiB } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import { MirrorDev } from '../src/volume/mirror'
import type { BlockDev } from '../src/block/blockdev'

const t = suite('volume checksum tables')
const { track, f, home } = poolFixture(t)

/** Bytes the file really holds (st_blocks). */
async function allocated(file: string): Promise<number> {
  return (await fsp.stat(file)).blocks * 512
}

async function readAll(v: BlockDev): Promise<Buffer> {
  const b = Buffer.alloc(v.size)
  await v.read(b, 0)
  return b
}

/** Flip a byte of copy i's data at volume offset off, behind the pool's back. */
async function corrupt(pool: Pool, vol: string, i: number, off: number): Promise<void> {
  const m = pool.volumeInfo(vol).members[i]
  const fh = await fsp.open(pool.listDevices().find((d) => d.name === m.device)!.path, 'r+')
  try {
    const pos = MiB + m.offset + off, b = Buffer.alloc(1)
    await fh.read(b, 0, 1, pos)
    b[0] ^= 0x5a
    await fh.write(b, 0, 1, pos)
  } finally { await fh.close() }
}

t('a 60 GiB mirror is made without writing its tables: the sparse devices hold under 2 MiB each', async () => {
  const pool = track(await Pool.create(home()))
  for (const n of ['a', 'b']) await pool.addDevice(n, f(`${n}.img`), 64 * GiB)
  await pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b'], size: 60 * GiB })
  const v = await pool.openVolume('m')
  const data = randomBytes(MiB)
  await v.write(data, 40 * GiB)
  await v.flush()
  for (const n of ['a', 'b']) {
    const held = await allocated(f(`${n}.img`))
    // the label, the bitmap, the MiB written and the table pages describing it
    assert.ok(held < 4 * MiB, `${n}.img holds ${held} bytes`)
  }
  await pool.close()
  const again = track(await Pool.open(home()))
  const back = Buffer.alloc(MiB)
  await (await again.openVolume('m')).read(back, 40 * GiB)
  assert.ok(back.equals(data))
})

t('a table laid over another volume\'s old data reads as never written; its own sums catch a bad block after a reopen', async () => {
  let pool = track(await Pool.create(home()))
  for (const n of ['a', 'b', 'c', 'd']) await pool.addDevice(n, f(`${n}.img`), 64 * MiB)
  await pool.createVolume('old', { layout: 'mirror', devices: ['a', 'b'], size: 48 * MiB })
  const old = await pool.openVolume('old')
  await old.write(randomBytes(old.size), 0)
  await old.flush()
  // the old volume moves away: its extents on a and b are free, their bytes still there
  const { job } = await pool.reshapeVolume('old', 'relayout', { layout: 'mirror', devices: ['c', 'd'] })
  await pool.jobs.wait(job)
  // a smaller volume: its table lands in the old one's data, random bytes where sums go
  await pool.createVolume('new', { layout: 'mirror', devices: ['a', 'b'], size: 16 * MiB })
  const v = await pool.openVolume('new')
  assert.is(pool.volumeInfo('new').members[0].offset, 0, 'the new volume reuses the old extent')
  await readAll(v)
  const data = randomBytes(v.size)
  await v.write(data, 0)
  await pool.close()
  await corrupt(pool, 'new', 0, 5 * MiB + 17)
  pool = track(await Pool.open(home()))
  const again = await pool.openVolume('new')
  assert.ok((await readAll(again)).equals(data))
  assert.ok((await readAll(again)).equals(data))
  assert.ok((pool.layoutOf('new') as MirrorDev).repairedOnRead >= 1, 'the bad block was found by its sum')
})

t('a mirror with dense tables (made before tagged ones) opens, verifies and repairs', async () => {
  let pool = track(await Pool.create(home()))
  for (const n of ['a', 'b']) await pool.addDevice(n, f(`${n}.img`), 64 * MiB)
  await pool.createVolume('m', { layout: 'mirror', devices: ['a', 'b'], size: 32 * MiB })
  await pool.close()
  // as an older vsm left it: no salt (its table was zeroed when made; here it is a hole)
  const file = path.join(home(), 'pool.json')
  const cfg = JSON.parse(await fsp.readFile(file, 'utf8'))
  delete cfg.volumes[0].checksumSalt
  await fsp.writeFile(file, JSON.stringify(cfg))
  pool = track(await Pool.open(home()))
  assert.is(pool.config.volumes[0].checksumSalt, undefined)
  const v = await pool.openVolume('m')
  const data = randomBytes(v.size)
  await v.write(data, 0)
  await pool.close()
  await corrupt(pool, 'm', 1, 3 * MiB + 5)
  pool = track(await Pool.open(home()))
  assert.is(pool.config.volumes[0].checksumSalt, undefined, 'the format is kept')
  const again = await pool.openVolume('m')
  assert.ok((await readAll(again)).equals(data))
  assert.ok((await readAll(again)).equals(data))
  assert.ok((pool.layoutOf('m') as MirrorDev).repairedOnRead >= 1, 'the bad block was found by its dense sum')
})

t.run()
