// POSIX through the real FUSE view: hard links, symlinks, fifos and device nodes,
// rename edge cases and utimes, made with the ordinary tools and checked again after
// the daemon restarts.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync, spawn } from 'child_process'
import { closeSync, constants, fchmodSync, fstatSync, ftruncateSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, readSync, renameSync, statSync, symlinkSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '1G' })
const m = (...p: string[]) => join(vsm.mount, ...p)

test.after(() => vsm.cleanup())

test('hard links, symlinks, fifos and device nodes through the kernel, kept over a restart', async () => {
  await vsm.up()
  mkdirSync(m('d'))
  writeFileSync(m('d', 'a'), 'linked data\n')
  linkSync(m('d', 'a'), m('b'))
  assert.is(statSync(m('b')).nlink, 2)
  assert.is(statSync(m('b')).ino, statSync(m('d', 'a')).ino)
  symlinkSync('d/a', m('sl'))
  assert.ok(lstatSync(m('sl')).isSymbolicLink())
  assert.is(readlinkSync(m('sl')), 'd/a')
  assert.is(readFileSync(m('sl'), 'utf8'), 'linked data\n')
  execFileSync('mkfifo', ['-m', '0640', m('fifo')])
  execFileSync('mknod', ['-m', '0600', m('null'), 'c', '1', '3'])
  // a fifo in the view is the kernel's: a writer and a reader meet through it
  const writer = spawn('sh', ['-c', `echo through-the-fifo > ${m('fifo')}`])
  assert.is(readFileSync(m('fifo'), 'utf8'), 'through-the-fifo\n')
  await new Promise((r) => writer.on('exit', r))
  utimesSync(m('b'), new Date('2020-01-02T03:04:05Z'), new Date('2020-01-02T03:04:05Z'))
  // touch -m: the atime is UTIME_OMIT, the mtime a time; touch -a: the atime is UTIME_NOW, the mtime omitted
  writeFileSync(m('t'), 't')
  utimesSync(m('t'), new Date('2011-01-01T00:00:00Z'), new Date('2012-01-01T00:00:00Z'))
  execFileSync('touch', ['-m', '-d', '2013-01-01T00:00:00Z', m('t')])
  assert.equal([statSync(m('t')).atime.toISOString(), statSync(m('t')).mtime.toISOString()], ['2011-01-01T00:00:00.000Z', '2013-01-01T00:00:00.000Z'])
  execFileSync('touch', ['-a', m('t')])
  assert.ok(statSync(m('t')).atimeMs > Date.now() - 60_000)
  assert.is(statSync(m('t')).mtime.toISOString(), '2013-01-01T00:00:00.000Z')
  // utimensat's nanoseconds, both ways through the kernel (and before 1970)
  writeFileSync(m('ns'), 'ns')
  execFileSync('touch', ['-m', '-d', '2001-02-03T04:05:06.123456789Z', m('ns')])
  execFileSync('touch', ['-a', '-d', '1969-12-31T23:59:58.000000007Z', m('ns')])
  const nsTimes = () => { const s = statSync(m('ns'), { bigint: true }); return [s.atimeNs, s.mtimeNs] }
  assert.equal(nsTimes(), [-1_999_999_993n, 981_173_106_123_456_789n])
  await vsm.down()
  await vsm.up()
  assert.equal(nsTimes(), [-1_999_999_993n, 981_173_106_123_456_789n])
  assert.is(statSync(m('b')).nlink, 2)
  assert.is(readlinkSync(m('sl')), 'd/a')
  assert.ok(statSync(m('fifo')).isFIFO())
  assert.is(statSync(m('fifo')).mode & 0o777, 0o640)
  const dev = statSync(m('null'))
  assert.ok(dev.isCharacterDevice())
  assert.is(dev.rdev, (1 << 8) | 3)
  assert.is(statSync(m('b')).mtime.toISOString(), '2020-01-02T03:04:05.000Z')
  unlinkSync(m('d', 'a'))
  // fuse-native (libfuse2's path API) caches each path's attributes for a second: the
  // other name's link count is stale until then
  const deadline = Date.now() + 5000
  while (statSync(m('b')).nlink !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  assert.is(statSync(m('b')).nlink, 1)
  assert.is(readFileSync(m('b'), 'utf8'), 'linked data\n')
  assert.throws(() => readFileSync(m('sl')), /ENOENT/)
  const check = await vsm.json('fs', 'check')
  assert.ok(check.ok, JSON.stringify(check))
})

test('a file unlinked while open: fstat says nlink 0, reads and ftruncate work on it, never on a new file of that name (pjdfstest unlink/14)', () => {
  writeFileSync(m('gone'), 'Hello, World!')
  const fd = openSync(m('gone'), 'r+')
  try {
    unlinkSync(m('gone'))
    const st = fstatSync(fd)
    assert.is(st.nlink, 0)
    assert.is(st.size, 13)
    const b = Buffer.alloc(13)
    assert.is(readSync(fd, b, 0, 13, 0), 13)
    assert.is(b.toString(), 'Hello, World!')
    // a new file takes the name: what the old descriptor does must not reach it
    writeFileSync(m('gone'), 'the new file')
    ftruncateSync(fd, 5)
    fchmodSync(fd, 0o600)
    assert.is(fstatSync(fd).size, 5)
    assert.is(fstatSync(fd).mode & 0o777, 0o600)
    writeSync(fd, '!', 5)
    assert.is(readFileSync(m('gone'), 'utf8'), 'the new file')
    assert.is(statSync(m('gone')).mode & 0o777, 0o644)
  } finally { closeSync(fd) }
})

test('open with O_TRUNC empties the file and moves its mtime and ctime (pjdfstest open/00)', async () => {
  writeFileSync(m('trunc'), 'test\n')
  const before = statSync(m('trunc'))
  await new Promise((r) => setTimeout(r, 20))
  closeSync(openSync(m('trunc'), constants.O_WRONLY | constants.O_TRUNC))
  const after = statSync(m('trunc'))
  assert.is(after.size, 0)
  assert.ok(after.mtimeMs > before.mtimeMs && after.ctimeMs > before.ctimeMs, `mtime ${before.mtimeMs} -> ${after.mtimeMs}, ctime ${before.ctimeMs} -> ${after.ctimeMs}`)
})

test('rename: onto itself, over an empty directory, never over a full one or into itself', () => {
  mkdirSync(m('r1'))
  mkdirSync(m('r2'))
  mkdirSync(m('full'))
  writeFileSync(m('full', 'x'), 'x')
  renameSync(m('r1'), m('r1'))
  renameSync(m('r1'), m('r2'))
  assert.throws(() => statSync(m('r1')), /ENOENT/)
  assert.throws(() => renameSync(m('r2'), m('full')), /ENOTEMPTY|EEXIST/)
  assert.throws(() => renameSync(m('r2'), m('r2', 'inner')), /EINVAL/)
  writeFileSync(m('f'), 'f')
  assert.throws(() => renameSync(m('f'), m('r2')), /EISDIR/)
  assert.throws(() => renameSync(m('r2'), m('f')), /ENOTDIR/)
})

test.run()
