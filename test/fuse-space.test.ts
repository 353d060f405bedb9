// Space through the native binding, with the real kernel and real tools: fallocate(1)
// in every mode against a model of the file, SEEK_DATA/SEEK_HOLE against the fs's
// holes, copy_file_range sharing blocks, a loop device's discard (blkdiscard) giving space back to the
// fs, qemu-img map seeing a sparse disk's holes, and a punch reaching the pool's backing
// files (the volume is told, so thin devices shrink).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'child_process'
import { closeSync, fsyncSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'fs'
import { randomBytes } from 'crypto'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '1G', fuse: 'native' })
const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' }).trim()
const MiB = 1 << 20
let loop = ''

test.after(async () => {
  if (loop) { try { sh('losetup', '-d', loop) } catch { /* gone */ } }
  await vsm.cleanup()
})

/** Data ranges of a file as lseek(SEEK_DATA/SEEK_HOLE) reports them. */
function dataRanges(path: string): [number, number][] {
  const py = `
import os, sys, errno
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
pos, out = 0, []
while pos < size:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as e:
        if e.errno == errno.ENXIO: break
        raise
    h = os.lseek(fd, d, os.SEEK_HOLE)
    out.append(f"{d} {h}")
    pos = h
print(";".join(out))`
  const out = sh('python3', '-c', py, path)
  return out ? out.split(';').map((r) => r.split(' ').map(Number) as [number, number]) : []
}

const usedBytes = () => {
  const [used] = sh('df', '-B1', '--output=used', vsm.mount).split('\n')[1].trim().split(/\s+/).map(Number)
  return used
}

/** df moves at the fs's next commit; wait for it instead of guessing a delay. */
async function usedDropsBy(before: number, atLeast: number): Promise<number> {
  const deadline = Date.now() + 20_000
  let drop = before - usedBytes()
  while (drop < atLeast && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200))
    drop = before - usedBytes()
  }
  return drop
}

test('fallocate in every mode matches a model of the file, and holes read as zeros where SEEK_HOLE says', async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'model.img', '--size', '16M')
  const f = join(vsm.mount, 'model.img')
  let model = Buffer.alloc(16 * MiB)
  let seed = 20261202
  const rnd = (n: number) => { seed = (seed * 48271) % 2147483647; return seed % n }
  const fd = openSync(f, 'r+')
  try {
    for (let i = 0; i < 40; i++) {
      const unit = rnd(2) ? 4096 : 512
      const off = rnd((20 * MiB) / unit) * unit + (rnd(4) === 0 ? rnd(unit) : 0)
      const len = (1 + rnd((3 * MiB) / unit)) * unit
      const grow = (end: number) => { if (end > model.length) model = Buffer.concat([model, Buffer.alloc(end - model.length)]) }
      const kind = rnd(6)
      const what = ['write', 'punch', 'zero', 'zero keep size', 'allocate', 'allocate keep size'][kind]
      if (kind === 0) {
        const data = Buffer.alloc(len, 1 + rnd(255))
        writeSync(fd, data, 0, len, off)
        grow(off + len)
        data.copy(model, off)
      } else if (kind === 1) {
        sh('fallocate', '-p', '-o', String(off), '-l', String(len), f)
        model.fill(0, Math.min(off, model.length), Math.min(off + len, model.length))
      } else if (kind === 2 || kind === 3) {
        sh('fallocate', '-z', ...(kind === 3 ? ['-n'] : []), '-o', String(off), '-l', String(len), f)
        if (kind === 2) grow(off + len)
        model.fill(0, Math.min(off, model.length), Math.min(off + len, model.length))
      } else {
        sh('fallocate', ...(kind === 5 ? ['-n'] : []), '-o', String(off), '-l', String(len), f)
        if (kind === 4) grow(off + len)
      }
      assert.is(statSync(f).size, model.length, `size after ${what} ${off}+${len} (step ${i})`)
      const got = readFileSync(f)
      if (!got.equals(model)) {
        let at = 0
        while (got[at] === model[at]) at++
        assert.unreachable(`contents differ at ${at} after ${what} ${off}+${len} (step ${i})`)
      }
      for (const [a, b] of dataRanges(f)) assert.ok(a < b && b <= model.length, `data range ${a}-${b}`)
      let pos = 0
      for (const [a, b] of [...dataRanges(f), [model.length, model.length]]) {
        assert.ok(model.subarray(pos, a).every((x) => x === 0), `hole ${pos}-${a} holds data (step ${i})`)
        pos = b
      }
    }
  } finally {
    closeSync(fd)
  }
})

test('punching a hole frees its blocks (st_blocks and df) and SEEK_HOLE finds it exactly', async () => {
  await vsm.run('disk', 'create', 'punch.img', '--size', '64M')
  const f = join(vsm.mount, 'punch.img')
  sh('dd', 'if=/dev/urandom', `of=${f}`, 'bs=1M', 'count=64', 'conv=notrunc,fsync', 'status=none')
  assert.equal(dataRanges(f), [[0, 64 * MiB]])
  const before = usedBytes()
  sh('fallocate', '-p', '-o', String(8 * MiB), '-l', String(32 * MiB), f)
  assert.equal(dataRanges(f), [[0, 8 * MiB], [40 * MiB, 64 * MiB]])
  assert.is(statSync(f).blocks * 512, 32 * MiB)
  const drop = await usedDropsBy(before, 32 * MiB)
  assert.ok(drop >= 32 * MiB, `df used dropped by ${drop}`)
})

test('copy_file_range shares whole blocks instead of copying them (df does not grow), copies the edges, and the copy diverges without touching its source', async () => {
  const src = join(vsm.mount, 'punch.img'), dst = join(vsm.mount, 'copy.img')
  const before = usedBytes()
  // from byte 100 to 100 bytes short of the end: partial blocks at both edges
  sh('python3', '-c', `
import os, sys
a = os.open(sys.argv[1], os.O_RDONLY); b = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT, 0o644)
off, left = 100, os.fstat(a).st_size - 200
while left:
    n = os.copy_file_range(a, b, left, off, off)
    assert n > 0
    off += n; left -= n
os.fsync(b)`, src, dst)
  const source = readFileSync(src)
  const copy = readFileSync(dst)
  assert.is(copy.length, source.length - 100)
  assert.ok(copy.subarray(0, 100).every((x) => x === 0), 'nothing before the copied range')
  assert.ok(copy.subarray(100).equals(source.subarray(100, source.length - 100)), 'the copy equals its source')
  const grew = usedBytes() - before
  assert.ok(grew < 1 * MiB, `df used grew by ${grew} for a copy of 32 MiB of data`)
  // a write to the copy takes fresh blocks; the source keeps its own
  const fd = openSync(dst, 'r+')
  try { writeSync(fd, Buffer.alloc(MiB, 0xee), 0, MiB, 50 * MiB); fsyncSync(fd) } finally { closeSync(fd) }
  assert.ok(readFileSync(src).equals(source), 'the source is untouched')
  assert.ok(readFileSync(dst).subarray(50 * MiB, 51 * MiB).every((x) => x === 0xee))
  assert.ok((await vsm.json('fs', 'check')).ok)
})

test('copy_file_range of one range twice into a file, and within a file: the second copies the data (a map holds a block once), and the fs still mounts', async () => {
  const src = join(vsm.mount, 'twice-src.img'), dst = join(vsm.mount, 'twice.img')
  const data = randomBytes(MiB)
  writeFileSync(src, data)
  sh('python3', '-c', `
import os, sys
a = os.open(sys.argv[1], os.O_RDONLY); b = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT, 0o644)
for dst_off in (0, 2 << 20):
    assert os.copy_file_range(a, b, 1 << 20, 0, dst_off) == 1 << 20
assert os.copy_file_range(b, b, 1 << 20, 0, 4 << 20) == 1 << 20
os.fsync(b)`, src, dst)
  const want = Buffer.concat([data, Buffer.alloc(MiB), data, Buffer.alloc(MiB), data])
  assert.ok(readFileSync(dst).equals(want), 'three copies of the range')
  await vsm.down()
  await vsm.up()
  assert.ok(readFileSync(dst).equals(want), 'the same after a remount')
  const fsck = await vsm.json('fs', 'check')
  assert.ok(fsck.ok, fsck.errors.join('; '))
})

test('blkdiscard on a loop device over a disk frees space in the fs; what it kept reads back', async () => {
  await vsm.run('disk', 'create', 'loop.img', '--size', '64M')
  const f = join(vsm.mount, 'loop.img')
  loop = sh('losetup', '-f', '--show', f)
  sh('dd', 'if=/dev/urandom', `of=${loop}`, 'bs=1M', 'count=64', 'oflag=direct', 'status=none')
  sh('sync')
  const kept = readFileSync(f).subarray(32 * MiB)
  const before = usedBytes()
  sh('blkdiscard', '-o', '0', '-l', String(32 * MiB), loop)
  const drop = await usedDropsBy(before, 30 * MiB)
  assert.ok(drop >= 30 * MiB, `df used dropped by ${drop}`)
  const now = readFileSync(f)
  assert.ok(now.subarray(0, 32 * MiB).every((x) => x === 0), 'the discarded half reads as zeros')
  assert.ok(now.subarray(32 * MiB).equals(kept), 'the other half is kept')
  sh('losetup', '-d', loop)
  loop = ''
})

test('qemu-img map shows the holes of a sparse disk', async () => {
  const f = join(vsm.mount, 'map.img')
  await vsm.run('disk', 'create', 'map.img', '--size', '64M')
  sh('dd', 'if=/dev/urandom', `of=${f}`, 'bs=1M', 'count=2', 'seek=8', 'conv=notrunc,fsync', 'status=none')
  const map: { start: number; length: number; data: boolean }[] = JSON.parse(sh('qemu-img', 'map', '--output=json', '-f', 'raw', f))
  const data = map.filter((e) => e.data).map((e) => [e.start, e.start + e.length])
  assert.equal(data, [[8 * MiB, 10 * MiB]])
})

test('a punch reaches the pool: both mirror backing files shrink, data elsewhere is kept, scrub and kill -9 find nothing wrong', async () => {
  const f = join(vsm.mount, 'thin.img')
  await vsm.run('disk', 'create', 'thin.img', '--size', '48M')
  sh('dd', 'if=/dev/urandom', `of=${f}`, 'bs=1M', 'count=48', 'conv=notrunc,fsync', 'status=none')
  const devices = ['d0', 'd1'].map((d) => join(vsm.home, 'devices', `${d}.img`))
  const allocated = () => devices.map((d) => statSync(d).blocks * 512)
  const before = allocated()
  const image = readFileSync(f)
  sh('fallocate', '-p', '-o', String(4 * MiB), '-l', String(32 * MiB), f)
  image.fill(0, 4 * MiB, 36 * MiB)
  // the volume hears of the free at the fs's next commit: an fsync makes it now
  const fd = openSync(f, 'r+')
  try { fsyncSync(fd) } finally { closeSync(fd) }
  const after = allocated()
  for (let i = 0; i < 2; i++) assert.ok(before[i] - after[i] >= 30 * MiB, `${devices[i]} allocated ${before[i]} -> ${after[i]}`)
  assert.ok(readFileSync(f).equals(image), 'what was not punched is kept')
  const scrub = await vsm.json('volume', 'scrub', 'vol0')
  assert.equal([scrub.unrecoverable, scrub.repaired], [[], []], JSON.stringify(scrub))
  vsm.kill9()
  await vsm.up()
  assert.ok(readFileSync(f).equals(image), 'the same after kill -9')
  const again = allocated()
  for (let i = 0; i < 2; i++) assert.ok(before[i] - again[i] >= 30 * MiB, `after kill -9 ${devices[i]} allocated ${again[i]}`)
  const fsck = await vsm.json('fs', 'check')
  assert.ok(fsck.ok, fsck.errors.join('; '))
})

test.run()
