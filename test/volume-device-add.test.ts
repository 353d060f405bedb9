// `device add` refuses a path that already holds something (a file system, a partition
// table, a RAID/LVM member, another pool, non-zero bytes at either end) unless forced,
// and a path inside the daemon's view; a refused or failed add changes no byte and
// leaves no file behind. Labels of a change are written one device at a time.
import * as path from 'path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { promises as fsp } from 'fs'
import { execFileSync } from 'child_process'
import { createHash, randomBytes, randomUUID } from 'crypto'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { Pool, PoolOptions } from '../src/volume/pool'
import { FaultDev } from '../src/block/fault'
import { openDevice } from '../src/volume/device'
import { readLabel, writeLabel } from '../src/volume/label'
import type { BlockDev } from '../src/block/blockdev'

const t = suite('volume device add')
let tmp: { dir: string; cleanup: () => Promise<void> }
let pool: Pool | undefined
t.before.each(async () => { tmp = await tmpDir() })
t.after.each(async () => { await pool?.close().catch(() => {}); pool = undefined; await tmp.cleanup() })

const hash = async (f: string) => createHash('sha256').update(await fsp.readFile(f)).digest('hex')

async function make(opts: PoolOptions = {}) {
  pool = await Pool.create(path.join(tmp.dir, 'home'), opts)
  await pool.addDevice('a', path.join(tmp.dir, 'a.img'), 16 * MiB)
  return pool
}

/** add must fail with code and a message matching re, and leave file's bytes and the pool's config as they were. */
async function refused(p: Pool, file: string, code: string, re: RegExp, force = false) {
  const before = await hash(file)
  const seq = p.seq
  await p.addDevice('x', file, undefined, false, force).then(() => assert.unreachable(`add of ${file} went ahead`), (e) => {
    assert.is(e.code, code, e.message)
    assert.match(e.message, re)
  })
  assert.is(await hash(file), before, 'no byte changed')
  assert.is(p.seq, seq, 'config unchanged')
  assert.not.ok(p.listDevices().some((d) => d.name === 'x'))
}

t('an ext4 image is refused, and taken with force', async () => {
  const p = await make()
  const img = path.join(tmp.dir, 'ext4.img')
  await fsp.writeFile(img, '')
  await fsp.truncate(img, 32 * MiB)
  execFileSync('mkfs.ext4', ['-q', '-F', img], { stdio: 'ignore' })
  await refused(p, img, 'EEXIST', /ext4\.img holds an ext2\/3\/4 file system; add it with --force to overwrite it$/)
  const d = await p.addDevice('x', img, undefined, false, true)
  assert.is(d.state, 'online')
})

t('a file of data is refused whatever its first or last MiB holds', async () => {
  const p = await make()
  const data = path.join(tmp.dir, 'data.bin')
  await fsp.writeFile(data, randomBytes(16 * MiB))
  await refused(p, data, 'EEXIST', /holds data \(non-zero bytes in its first MiB\)/)
  // zero at the front, one byte at the very end
  const tail = path.join(tmp.dir, 'tail.bin')
  const b = Buffer.alloc(8 * MiB)
  b[b.length - 1] = 1
  await fsp.writeFile(tail, b)
  await refused(p, tail, 'EEXIST', /non-zero bytes in its last MiB/)
  // an all-zero existing file is fair game
  const zero = path.join(tmp.dir, 'zero.bin')
  await fsp.writeFile(zero, Buffer.alloc(8 * MiB))
  await p.addDevice('z', zero)
})

t('known signatures: xfs, btrfs, LVM2, MD (1.2 and 1.0), GPT, MBR, another vsm pool', async () => {
  const p = await make()
  const size = 8 * MiB
  const cases: [string, number, Buffer, RegExp][] = [
    ['xfs', 0, Buffer.from('XFSB'), /an xfs file system/],
    ['btrfs', 65600, Buffer.from('_BHRfS_M'), /a btrfs file system/],
    ['lvm', 512, Buffer.from('LABELONE'), /an LVM2 physical volume/],
    ['md12', 4096, Buffer.from([0xfc, 0x4e, 0x2b, 0xa9]), /an MD RAID member/],
    ['md10', size - 8192, Buffer.from([0xfc, 0x4e, 0x2b, 0xa9]), /an MD RAID member/],
    ['gpt', 512, Buffer.from('EFI PART'), /a GPT partition table/],
    ['mbr', 510, Buffer.from([0x55, 0xaa]), /an MBR partition table/],
  ]
  for (const [name, off, magic, re] of cases) {
    const f = path.join(tmp.dir, `${name}.img`)
    const b = Buffer.alloc(size)
    magic.copy(b, off)
    await fsp.writeFile(f, b)
    await refused(p, f, 'EEXIST', re)
  }
  const other = await Pool.create(path.join(tmp.dir, 'other'))
  const theirs = path.join(tmp.dir, 'theirs.img')
  await other.addDevice('t', theirs, 8 * MiB)
  await other.close()
  await refused(p, theirs, 'EBUSY', /belongs to another vsm pool/)
  await refused(p, theirs, 'EBUSY', /belongs to another vsm pool/, true)
})

t('a path inside a protected directory (the view) is refused, through a symlink too, with force too', async () => {
  const view = path.join(tmp.dir, 'view')
  await fsp.mkdir(view)
  const p = await make({ protectedPaths: [view] })
  const disk = path.join(view, 'disk.img')
  await fsp.writeFile(disk, Buffer.alloc(8 * MiB))
  await refused(p, disk, 'EINVAL', /is inside .*view, the vsm view/, true)
  await fsp.symlink(view, path.join(tmp.dir, 'link'))
  await refused(p, path.join(tmp.dir, 'link', 'disk.img'), 'EINVAL', /the vsm view/, true)
  await p.addDevice('x', path.join(tmp.dir, 'link', 'new.img'), 8 * MiB).then(() => assert.unreachable('a new file in the view'), (e) => assert.is(e.code, 'EINVAL'))
  await assert.not.ok(await fsp.stat(path.join(view, 'new.img')).catch(() => null), 'no file made in the view')
})

t('a failed add leaves no file behind and no label; an existing file gets its bytes back', async () => {
  const p = await make({ wrapDevice: (name: string, dev: BlockDev) => name === 'x' ? new FaultDev(dev, { rules: [{ op: 'write' }] }) : dev })
  const fresh = path.join(tmp.dir, 'fresh.img')
  await p.addDevice('x', fresh, 8 * MiB).then(() => assert.unreachable('add went ahead'), () => {})
  assert.not.ok(await fsp.stat(fresh).catch(() => null), 'the file it made is gone')
  assert.is(p.listDevices().length, 1)
  // the label write fails after the bitmap went in: the zero file is zero again
  const zero = path.join(tmp.dir, 'zero.img')
  await fsp.writeFile(zero, Buffer.alloc(8 * MiB))
  const before = await hash(zero)
  await p.close()
  pool = await Pool.open(path.join(tmp.dir, 'home'), {
    wrapDevice: (name: string, dev: BlockDev) => name === 'x' ? new FaultDev(dev, { rules: [{ op: 'write', offset: 0, length: 512 * 1024 }] }) : dev,
  })
  // one device only: its label fails, so no device took the config and the add fails
  await pool.removeDevice('a')
  await pool.addDevice('x', zero).then(() => assert.unreachable('add went ahead'), (e) => assert.is(e.code, 'EIO'))
  const dev = await openDevice(zero)
  try { assert.is((await readLabel(dev)).label, null, 'no label') } finally { await dev.close() }
  assert.is(await hash(zero), before, 'the reserved area is zero again')
})

t('labels are written one device at a time, the added device first', async () => {
  let inflight = 0, most = 0
  const order: string[] = []
  const wrap = (name: string, dev: BlockDev): BlockDev => new Proxy(dev, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv)
      if (prop !== 'write') return typeof v === 'function' ? v.bind(target) : v
      return async (buf: Buffer, off: number) => {
        const label = off === 0 || off === 256 * 1024
        if (label) { inflight++; most = Math.max(most, inflight); order.push(name) }
        try { await new Promise((r) => setTimeout(r, 5)); return await target.write(buf, off) } finally { if (label) inflight-- }
      }
    },
  })
  pool = await Pool.create(path.join(tmp.dir, 'home'), { wrapDevice: wrap })
  for (const n of ['a', 'b', 'c']) await pool.addDevice(n, path.join(tmp.dir, `${n}.img`), 8 * MiB)
  order.length = 0
  await pool.addDevice('d', path.join(tmp.dir, 'd.img'), 8 * MiB)
  assert.is(most, 1, 'never two label writes at once')
  assert.is(order[0], 'd', 'the new device is labelled before the config naming it reaches the others')
  assert.equal(order.slice().sort(), ['a', 'b', 'c', 'd'])
})

t('a device an add was killed on (labelled for this pool, not in its config) can be added again', async () => {
  const p = await make()
  const f = path.join(tmp.dir, 'half.img')
  await fsp.writeFile(f, Buffer.alloc(8 * MiB))
  const dev = await openDevice(f)
  try {
    await writeLabel(dev, { poolId: p.id, deviceId: randomUUID(), deviceName: 'x', seq: p.seq + 1, config: p.config })
  } finally { await dev.close() }
  const d = await p.addDevice('x', f)
  assert.is(d.state, 'online')
})

t.run()
