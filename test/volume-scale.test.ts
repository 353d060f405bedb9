// The volume layer at the size of real disks (issue 13): `vsm up` with the default
// pool on two 8 TiB sparse backing files, a 4 TiB disk written at 3 TiB, a restart,
// the data read back; the daemon stays under 512 MiB resident throughout, the backing
// files hold under 1 GiB after creation, and a scrub of the 8 TiB mirror reads only
// what was written (the rest reported skipped).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { promises as fsp, readFileSync } from 'fs'
import { join } from 'path'
import { randomBytes } from 'crypto'
import { makeVsm } from './helpers/daemon'

const TiB = 2 ** 40, GiB = 2 ** 30, MiB = 2 ** 20
const vsm = makeVsm({ deviceSize: '8T' })
test.after(() => vsm.cleanup())

function rss(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${vsm.pid()}/status`, 'utf8'))
  return Number(m![1]) * 1024
}

async function held(): Promise<number> {
  let n = 0
  for (const d of ['d0', 'd1']) n += (await fsp.stat(join(vsm.home, 'devices', `${d}.img`))).blocks * 512
  return n
}

function underLimit(where: string): void {
  const r = rss()
  assert.ok(r < 512 * MiB, `daemon resident ${(r / MiB).toFixed(0)} MiB ${where}`)
}

test('default pool on two 8 TiB devices: a 4 TiB disk written at 3 TiB survives a restart, in bounded memory and space', async () => {
  await vsm.up()
  underLimit('after the first vsm up')
  const made = await held()
  assert.ok(made < GiB, `backing files hold ${made} bytes after creation`)
  const vol = (await vsm.json('volume', 'list'))[0]
  assert.ok(vol.size > 7.9 * TiB, `vol0 is ${vol.size} bytes`)
  await vsm.run('disk', 'create', 'big.img', '--size', '4T')
  const img = join(vsm.mount, 'big.img')
  const far = randomBytes(MiB), bulk = randomBytes(64 * MiB)
  const fh = await fsp.open(img, 'r+')
  try {
    await fh.write(far, 0, far.length, 3 * TiB)
    await fh.write(bulk, 0, bulk.length, TiB + 12345 * 4096)
    await fh.sync()
  } finally { await fh.close() }
  underLimit('after writing')
  await vsm.down()
  await vsm.up()
  underLimit('after the restart')
  const back = await fsp.open(img, 'r')
  try {
    const b = Buffer.alloc(MiB)
    await back.read(b, 0, b.length, 3 * TiB)
    assert.ok(b.equals(far), 'the MiB at 3 TiB')
    const c = Buffer.alloc(bulk.length)
    await back.read(c, 0, c.length, TiB + 12345 * 4096)
    assert.ok(c.equals(bulk), 'the 64 MiB at 1 TiB')
  } finally { await back.close() }
  const t0 = Date.now()
  const scrub = JSON.parse(await vsm.run('volume', 'scrub', 'vol0', '--json'))
  console.log(`scrub of vol0 (${(vol.size / TiB).toFixed(2)} TiB, 65 MiB of disk data written): ${Date.now() - t0} ms, ${scrub.checkedBytes} bytes read, ${scrub.skippedBytes} skipped; backing files hold ${await held()} bytes; daemon ${(rss() / MiB).toFixed(0)} MiB resident`)
  assert.is(scrub.checkedBytes + scrub.skippedBytes, vol.size)
  assert.ok(scrub.checkedBytes < GiB, `scrub read ${scrub.checkedBytes} bytes`)
  assert.is(scrub.unrecoverable.length, 0)
  underLimit('after the scrub')
})

test.run()
