// POSIX in the fs itself: symlinks, hard links, special files, rename's edge cases and
// renameat2 flags, utimensat's UTIME_NOW/UTIME_OMIT, relatime, chown's -1, and files
// unlinked while open (orphans: readable until released, freed at mount after a crash).
// Each survives a crash (journal replay) and a clean remount (checkpoint), check clean.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { memFs, okCheck } from './helpers/fs-fixture'
import { FileSystem, RENAME_EXCHANGE, RENAME_NOREPLACE, S_IFLNK } from '../src/fs'
import { VsmError } from '../src/block/blockdev'
import type { MemDev } from './helpers/fs-memdev'

const S_IFIFO = 0o010000, S_IFCHR = 0o020000, S_IFMT = 0o170000

async function rejects(p: Promise<unknown> | (() => unknown), code: string) {
  try {
    await (typeof p === 'function' ? p() : p)
  } catch (e) {
    assert.instance(e, VsmError)
    assert.is((e as VsmError).code, code, (e as Error).message)
    return
  }
  assert.unreachable(`expected ${code}`)
}

/** Mount what a crash right after the last sync leaves (only flushed writes), and what a clean close leaves. */
async function bothWays(vols: MemDev[], fs: FileSystem, verify: (fs: FileSystem) => Promise<void> | void) {
  await fs.sync()
  const crashed = await FileSystem.mount(vols.map((v) => v.crashImage(() => 0)))
  await verify(crashed)
  await okCheck(crashed)
  await crashed.close()
  await fs.close()
  const clean = await FileSystem.mount(vols)
  await verify(clean)
  await okCheck(clean)
  return clean
}

test('symlinks keep their target, type and size; readlink of anything else is EINVAL', async () => {
  const { vols, fs } = await memFs()
  await fs.mkdir('/d', 0o755, 0, 0)
  await fs.symlink('../some/where', '/d/ln', 1000, 1000)
  const long = 'x/'.repeat(1000)
  await fs.symlink(long, '/long', 0, 0)
  await rejects(fs.symlink('t', '/d/ln', 0, 0), 'EEXIST')
  await rejects(fs.symlink('', '/e', 0, 0), 'EINVAL')
  await rejects(fs.symlink('a'.repeat(4096), '/e', 0, 0), 'ENAMETOOLONG')
  await fs.create('/f', 0o644, 0, 0)
  assert.throws(() => fs.readlink('/f'), (e: VsmError) => e.code === 'EINVAL')
  await rejects(fs.truncate('/d/ln', 0), 'EINVAL')
  const fs2 = await bothWays(vols, fs, (f) => {
    assert.is(f.readlink('/d/ln'), '../some/where')
    assert.is(f.readlink('/long'), long)
    const st = f.getattr('/d/ln')
    assert.is(st.mode, S_IFLNK | 0o777)
    assert.is(st.size, 13)
    assert.equal([st.uid, st.gid, st.nlink], [1000, 1000, 1])
  })
  await fs2.unlink('/d/ln')
  await okCheck(fs2)
  await fs2.close()
})

test('hard links share the inode and its data; the last unlink frees the blocks', async () => {
  const { vols, fs } = await memFs()
  await fs.mkdir('/a', 0o755, 0, 0)
  await fs.mkdir('/b', 0o755, 0, 0)
  const ino = await fs.create('/a/f', 0o600, 0, 0)
  const data = randomBytes(256 << 10)
  await fs.write(ino, data, 0)
  await fs.sync()
  const freeBefore = fs.statfs().bfree
  await fs.link('/a/f', '/b/g')
  await fs.link('/a/f', '/a/h')
  await rejects(fs.link('/a/f', '/b/g'), 'EEXIST')
  await rejects(fs.link('/a', '/b/dir'), 'EPERM')
  await rejects(fs.link('/a/none', '/b/x'), 'ENOENT')
  const ctimeBefore = fs.getattr('/a/f').ctime
  const fs2 = await bothWays(vols, fs, (f) => {
    assert.is(f.lookup('/b/g'), ino)
    assert.is(f.getattr('/a/h').nlink, 3)
    assert.ok(f.getattr('/a/f').ctime >= ctimeBefore)
  })
  await fs2.unlink('/a/f')
  await fs2.unlink('/a/h')
  assert.is(fs2.getattr('/b/g').nlink, 1)
  const got = Buffer.alloc(data.length)
  await fs2.read(ino, got, 0)
  assert.ok(got.equals(data))
  await fs2.unlink('/b/g')
  await fs2.sync()
  assert.is(fs2.statfs().bfree, freeBefore + (256 << 10) / 4096)
  await okCheck(fs2)
  await fs2.close()
})

test('mknod makes fifos and device nodes as plain inodes with no data', async () => {
  const { vols, fs } = await memFs()
  const fifo = await fs.mknod('/fifo', S_IFIFO | 0o640, 0, 5, 6)
  await fs.mknod('/tty', S_IFCHR | 0o620, (4 << 8) | 1, 0, 5)
  await fs.mknod('/plain', 0o600, 0, 0, 0)
  await rejects(fs.mknod('/dir', 0o040755, 0, 0, 0), 'EPERM')
  await rejects(fs.mknod('/lnk', S_IFLNK | 0o777, 0, 0, 0), 'EINVAL')
  await rejects(fs.write(fifo, Buffer.alloc(10), 0), 'EINVAL')
  await rejects(fs.read(fifo, Buffer.alloc(10), 0), 'EINVAL')
  const fs2 = await bothWays(vols, fs, (f) => {
    assert.is(f.getattr('/fifo').mode, S_IFIFO | 0o640)
    assert.equal([f.getattr('/fifo').uid, f.getattr('/fifo').gid], [5, 6])
    assert.is(f.getattr('/tty').rdev, (4 << 8) | 1)
    assert.is(f.getattr('/plain').mode & S_IFMT, 0o100000)
  })
  await fs2.close()
})

test('rename: noreplace, exchange (files and directories across parents), the POSIX edge cases', async () => {
  const { vols, fs } = await memFs()
  for (const d of ['/p', '/q', '/p/sub', '/q/full', '/q/empty']) await fs.mkdir(d, 0o755, 0, 0)
  const x = await fs.create('/p/x', 0o644, 0, 0)
  const y = await fs.create('/q/y', 0o644, 0, 0)
  await fs.create('/q/full/z', 0o644, 0, 0)
  await rejects(fs.rename('/p/x', '/q/y', RENAME_NOREPLACE), 'EEXIST')
  await rejects(fs.rename('/p/x', '/q/none', RENAME_EXCHANGE), 'ENOENT')
  await rejects(fs.rename('/p/x', '/q/y', RENAME_EXCHANGE | RENAME_NOREPLACE), 'EINVAL')
  await rejects(fs.rename('/p/x', '/q/y', 8), 'EINVAL')
  await rejects(fs.rename('/p', '/p/sub/deeper'), 'EINVAL')
  await rejects(fs.rename('/p', '/p/sub', RENAME_EXCHANGE), 'EINVAL')
  await rejects(fs.rename('/p/sub', '/q/full'), 'ENOTEMPTY')
  await rejects(fs.rename('/p/sub', '/q/y'), 'ENOTDIR')
  await rejects(fs.rename('/q/y', '/q/empty'), 'EISDIR')
  await fs.rename('/p/x', '/p/x')
  await fs.rename('/p', '/p')
  await fs.rename('/p/x', '/q/y', RENAME_EXCHANGE)
  // a directory and a file swap between parents: link counts follow the directory
  await fs.rename('/p/sub', '/q/y', RENAME_EXCHANGE)
  await fs.rename('/q/empty', '/p/moved', RENAME_NOREPLACE)
  const fs2 = await bothWays(vols, fs, (f) => {
    assert.is(f.lookup('/p/sub'), x)
    assert.is(f.lookup('/p/x'), y)
    assert.is(f.getattr('/q/y').mode & S_IFMT, 0o040000)
    assert.is(f.getattr('/p').nlink, 3) // its entry, '.', moved/
    assert.is(f.getattr('/q').nlink, 4) // its entry, '.', full/, y/ (was /p/sub)
  })
  // an empty directory may be replaced by a directory
  await fs2.mkdir('/p/moved/inner', 0o755, 0, 0)
  await fs2.mkdir('/e', 0o755, 0, 0)
  await fs2.rename('/e', '/p/moved/inner')
  await okCheck(fs2)
  await fs2.close()
})

test('utimens: UTIME_NOW and UTIME_OMIT per time; ctime moves unless both are omitted', async () => {
  const { fs } = await memFs()
  await fs.create('/f', 0o644, 0, 0)
  await fs.utimens('/f', 1000, 2000)
  let st = fs.getattr('/f')
  assert.equal([st.atime, st.mtime], [1000, 2000])
  const c0 = st.ctime
  await fs.utimens('/f', 'omit', 'omit')
  assert.is(fs.getattr('/f').ctime, c0)
  const t0 = Date.now()
  await fs.utimens('/f', 'omit', 'now')
  st = fs.getattr('/f')
  assert.is(st.atime, 1000)
  assert.ok(st.mtime >= t0 && st.ctime >= t0)
  await fs.utimens('/f', 'now', 'omit')
  assert.ok(fs.getattr('/f').atime >= t0)
  assert.is(fs.getattr('/f').mtime, st.mtime)
  await rejects(fs.utimens('/f', NaN, 'omit'), 'EINVAL')
  await fs.close()
})

test('utimens keeps nanoseconds, through a crash and a remount; the fs\'s own stamps clear them; bad times change nothing', async () => {
  const { fs, vols } = await memFs()
  const ino = await fs.create('/f', 0o644, 0, 0)
  await fs.create('/g', 0o644, 0, 0)
  await fs.utimens('/f', { sec: 981173106, nsec: 123456789 }, { sec: -2, nsec: 999999999 })
  await fs.utimens('/g', 'omit', { sec: 1700000000, nsec: 1 })
  const times = (f: FileSystem, p: string) => { const s = f.getattr(p); return [s.atime, s.atimeNs, s.mtime, s.mtimeNs] }
  assert.equal(times(fs, '/f'), [981173106123, 456789, -1001, 999999])
  for (const bad of [{ sec: 1, nsec: 1e9 }, { sec: 1, nsec: -1 }, { sec: 1.5, nsec: 0 }, { sec: 2 ** 53, nsec: 0 }]) {
    await rejects(fs.utimens('/f', bad, 'omit'), 'EINVAL')
  }
  assert.equal(times(fs, '/f'), [981173106123, 456789, -1001, 999999])
  const fs2 = await bothWays(vols, fs, (f) => {
    assert.equal(times(f, '/f'), [981173106123, 456789, -1001, 999999])
    assert.equal(times(f, '/g').slice(2), [1700000000000, 1])
  })
  // a write stamps the mtime in whole ms; the atime keeps its nanoseconds
  await fs2.write(ino, Buffer.alloc(10, 1), 0)
  const [, an, mt, mn] = times(fs2, '/f')
  assert.equal([an, mn], [456789, 0])
  assert.ok(mt > Date.now() - 60_000)
  await bothWays(vols, fs2, (f) => assert.equal(times(f, '/f'), [981173106123, 456789, mt, 0])).then((f) => f.close())
})

test('atime moves on read lazily (relatime): once after a change, not on every read', async () => {
  const { fs } = await memFs()
  const ino = await fs.create('/f', 0o644, 0, 0)
  await fs.write(ino, Buffer.alloc(8192, 1), 0)
  await fs.utimens('/f', 1000, 'omit')
  // times are in ms: a read in the same ms as the change would see atime == ctime
  await new Promise((r) => setTimeout(r, 3))
  const before = fs.journalStats().records
  await fs.read(ino, Buffer.alloc(4096), 0)
  const a1 = fs.getattr('/f').atime
  assert.ok(a1 > 1000, 'atime older than mtime moves on read')
  await fs.read(ino, Buffer.alloc(4096), 0)
  assert.is(fs.getattr('/f').atime, a1)
  assert.is(fs.journalStats().records, before, 'a read writes no metadata by itself')
  await fs.close()
})

test('chown with -1 leaves that id alone', async () => {
  const { fs } = await memFs()
  await fs.create('/f', 0o644, 7, 8)
  await fs.chown('/f', 0xffffffff, 9)
  assert.equal([fs.getattr('/f').uid, fs.getattr('/f').gid], [7, 9])
  await fs.chown('/f', 3, 0xffffffff)
  assert.equal([fs.getattr('/f').uid, fs.getattr('/f').gid], [3, 9])
  await fs.close()
})

test('a file unlinked (or renamed over) while open stays readable until released; a crash frees it at mount', async () => {
  const { vols, fs } = await memFs()
  const a = await fs.create('/a', 0o644, 0, 0)
  const b = await fs.create('/b', 0o644, 0, 0)
  const data = randomBytes(64 << 10)
  await fs.write(a, data, 0)
  await fs.write(b, data, 0)
  await fs.sync()
  const free0 = fs.statfs().bfree
  fs.hold(a); fs.hold(a); fs.hold(b)
  await fs.unlink('/a')
  await fs.create('/c', 0o644, 0, 0)
  await fs.rename('/c', '/b')
  assert.throws(() => fs.lookup('/a'), (e: VsmError) => e.code === 'ENOENT')
  assert.equal(fs.orphans().sort(), [a, b].sort())
  await okCheck(fs)
  const got = Buffer.alloc(data.length)
  await fs.read(a, got, 0)
  assert.ok(got.equals(data))
  await fs.write(a, Buffer.alloc(4096, 7), 0)
  await fs.sync()
  // a crash now: nobody holds them after the mount, which frees them
  const crashed = await FileSystem.mount(vols.map((v) => v.crashImage(() => 0)))
  assert.equal(crashed.orphans(), [])
  await crashed.sync()
  assert.is(crashed.statfs().bfree, free0 + 2 * (64 << 10) / 4096)
  await okCheck(crashed)
  await crashed.close()
  // the live fs: released one handle at a time
  await fs.release(a)
  assert.equal(fs.orphans().sort(), [a, b].sort())
  await fs.release(a)
  await fs.release(b)
  assert.equal(fs.orphans(), [])
  await fs.sync()
  assert.is(fs.statfs().bfree, free0 + 2 * (64 << 10) / 4096)
  await okCheck(fs)
  await fs.close()
})

test('a file deeper than PATH_MAX from the root is fine: the kernel limits the path of each call, not the depth', async () => {
  const { fs } = await memFs()
  let p = ''
  for (let i = 0; i < 20; i++) { p += '/' + String(i).padStart(250, 'd'); await fs.mkdir(p, 0o755, 0, 0) }
  assert.ok(p.length > 4096)
  const ino = await fs.create(p + '/f', 0o644, 0, 0)
  assert.is(fs.lookup(p + '/f'), ino)
  await rejects(fs.create(p + '/' + 'n'.repeat(256), 0o644, 0, 0), 'ENAMETOOLONG')
  await okCheck(fs)
  await fs.close()
})

test.run()
