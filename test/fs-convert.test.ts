// An fs made by main before the extent trees (superblock version 2, whole-state VCK1
// checkpoints, ops after the last checkpoint in its journal: test/fixtures/fs-v2.img.gz,
// made by test/fixtures/make-fs-v2.js) is converted on mount: every file, snapshot and
// clone reads as it did, the namespace is intact, check is clean, the superblock is
// version 3. A version 1 superblock converts too. kill -9 of a process converting it,
// and a power loss at a random write of the conversion, leave an fs that mounts
// (finishing or redoing the conversion) with everything intact.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'child_process'
import { createHash } from 'crypto'
import { promises as fsp, readFileSync } from 'fs'
import * as path from 'path'
import { gunzipSync, crc32 } from 'zlib'
import { FileSystem } from '../src/fs'
import { FaultDev } from '../src/block/fault'
import { BlockDev } from '../src/block/blockdev'
import { readSuperblock } from '../src/fs/layout'
import { rng } from './helpers/conformance'
import { FileDev, tempDir } from './helpers/fs-filedev'
import { MemDev } from './helpers/fs-memdev'
import { okCheck } from './helpers/fs-fixture'

const FIX = path.join(__dirname, '..', '..', 'test', 'fixtures')
const manifest = JSON.parse(readFileSync(path.join(FIX, 'fs-v2.json'), 'utf8'))
const image = gunzipSync(readFileSync(path.join(FIX, 'fs-v2.img.gz')))
const ROUNDS = Number(process.env.VSM_FS_CONVERT_ROUNDS || 6)
const SEED = Number(process.env.VSM_FS_CONVERT_SEED || Date.now() % 1e9)

const t = suite('fs convert')

async function sha(fs: FileSystem, ino: number, size: number): Promise<string> {
  const b = Buffer.alloc(size)
  await fs.read(ino, b, 0)
  return createHash('sha256').update(b).digest('hex')
}

/** Everything the fixture held when it was made. */
async function verify(fs: FileSystem, what: string) {
  const disk = fs.lookup('/d/disk')
  assert.is(await sha(fs, disk, manifest.disk.size), manifest.disk.sha, `${what}: /d/disk`)
  assert.is(await sha(fs, fs.lookup('/c1'), manifest.c1.size), manifest.c1.sha, `${what}: the clone`)
  assert.is(await sha(fs, fs.lookup('/small'), 5), manifest.small.sha, `${what}: /small`)
  assert.equal([fs.getattr('/small').uid, fs.getattr('/small').size], [1000, 5])
  const snaps = fs.snapshots('/d/disk')
  assert.equal(snaps.map((s) => s.name), ['s1', 's2'])
  for (const s of snaps) assert.is(await sha(fs, s.ino, manifest.snaps[s.name].size), manifest.snaps[s.name].sha, `${what}: snapshot ${s.name}`)
  assert.is(fs.lookup('/hard'), disk)
  assert.is(fs.getattr('/hard').nlink, 2)
  assert.is(fs.readlink('/sym'), '/d/disk')
  assert.is(fs.getxattr('/d/disk', 'user.k')!.toString(), 'v1')
  assert.ok(fs.sharedBlocks(disk) > 0, `${what}: the snapshots no longer share blocks with the file`)
  await okCheck(fs)
}

async function version(dev: BlockDev) { return (await readSuperblock(dev)).version }

t('a version 2 fs converts on mount; the converted fs remounts as version 3 with everything intact', async () => {
  const { dir, cleanup } = await tempDir()
  try {
    const file = path.join(dir, 'v2.img')
    await fsp.writeFile(file, image)
    let dev = await FileDev.open(file)
    assert.is(await version(dev), 2)
    let fs = await FileSystem.mount([dev])
    assert.is(await version(dev), 3)
    await verify(fs, 'converted')
    // the converted fs works on: a write, a snapshot, a remount
    await fs.write(fs.lookup('/small'), Buffer.from('HELLO'), 0)
    await fs.snapshot('/d/disk', 's3')
    await fs.close()
    await dev.close()
    dev = await FileDev.open(file)
    fs = await FileSystem.mount([dev])
    assert.is(fs.replayed.records, 0)
    const b = Buffer.alloc(5)
    await fs.read(fs.lookup('/small'), b, 0)
    assert.is(b.toString(), 'HELLO')
    assert.equal(fs.snapshots('/d/disk').map((s) => s.name), ['s1', 's2', 's3'])
    await okCheck(fs)
    await fs.close()
    await dev.close()
  } finally {
    await cleanup()
  }
})

t('a version 1 superblock (main before online volumes) converts too', async () => {
  const dev = memImage()
  const b = Buffer.alloc(4096)
  await dev.read(b, 0)
  const sb = JSON.parse(b.subarray(16, 16 + b.readUInt32LE(8)).toString())
  delete sb.seq
  sb.version = 1
  const body = Buffer.from(JSON.stringify(sb))
  const v1 = Buffer.alloc(4096)
  v1.write('VSMFS001', 0, 'latin1')
  v1.writeUInt32LE(body.length, 8)
  v1.writeUInt32LE(crc32(body), 12)
  body.copy(v1, 16)
  await dev.write(v1, 0)
  await dev.write(v1, 4096)
  await dev.flush()
  const fs = await FileSystem.mount([dev])
  assert.is(await version(dev), 3)
  await verify(fs, 'converted from version 1')
  await fs.close()
})

/** The fixture on an in-memory volume with a volatile cache (all of it durable). */
function memImage(): MemDev {
  const dev = new MemDev(image.length)
  const zero = Buffer.alloc(4096)
  for (let off = 0; off < image.length; off += 4096) {
    const p = image.subarray(off, off + 4096)
    if (!p.equals(zero)) void dev.write(Buffer.from(p), off)
  }
  void dev.flush()
  return dev
}

t(`a power loss at a random write of the conversion leaves an fs that mounts intact (${ROUNDS} rounds, seed ${SEED})`, async () => {
  const r = rng(SEED)
  // how many writes a whole conversion makes
  const probe = new FaultDev(memImage())
  const whole = await FileSystem.mount([probe])
  const writes = probe.writes
  await whole.close()
  let old = 0
  for (let k = 0; k < ROUNDS; k++) {
    const base = memImage()
    // up to just after the last write of the mount (then the crash comes with the next write)
    const dev = new FaultDev(base, { stopAfterWrites: r(writes + 1), tearBytes: r(2) ? 1 + r(8192) : 0 })
    await FileSystem.mount([dev]).catch(() => undefined)
    const img = base.crashImage(r)
    if ((await version(img)) === 2) old++
    const fs = await FileSystem.mount([img])
    assert.is(await version(img), 3)
    await verify(fs, `round ${k} (seed ${SEED})`)
    await fs.close()
  }
  console.log(`  ${old} of ${ROUNDS} crashes left the version 2 fs (converted again), the rest the converted one`)
})

t(`kill -9 of a process converting the fs, at random instants (${ROUNDS} rounds, seed ${SEED + 1})`, async () => {
  const r = rng(SEED + 1)
  const { dir, cleanup } = await tempDir()
  const child = path.join(__dirname, 'helpers', 'fs-convert-child.js')
  try {
    let old = 0, finished = 0
    for (let k = 0; k < ROUNDS; k++) {
      const file = path.join(dir, `r${k}.img`)
      await fsp.writeFile(file, image)
      const p = spawn(process.execPath, [child, file], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      const exited = new Promise<void>((res) => p.on('exit', () => res()))
      try {
        await new Promise<void>((res) => p.stdout!.on('data', (d) => { out += d; if (out.includes('mounting')) res() }))
        await new Promise((res) => setTimeout(res, r(400)))
        p.kill('SIGKILL')
      } finally {
        p.kill('SIGKILL')
        await exited
      }
      if (out.includes('done')) finished++
      const dev = await FileDev.open(file)
      if ((await version(dev)) === 2) old++
      const fs = await FileSystem.mount([dev])
      assert.is(await version(dev), 3)
      await verify(fs, `round ${k} (seed ${SEED + 1})`)
      await fs.close()
      await dev.close()
    }
    console.log(`  ${old} of ${ROUNDS} kills left the version 2 fs, ${finished} came after the conversion finished`)
  } finally {
    await cleanup()
  }
})

t.run()
