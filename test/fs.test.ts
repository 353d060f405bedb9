// fs: conformance of an fs file, namespace ops persisted across close+mount,
// sparse files and statfs, ENOSPC, validation, concurrency on fresh blocks.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import * as path from 'path'
import { conformance, rng } from './helpers/conformance'
import { FileDev, tempDir } from './helpers/fs-filedev'
import { MemDev } from './helpers/fs-memdev'
import { dying, memFs, okCheck } from './helpers/fs-fixture'
import { FileSystem, S_IFDIR, S_IFREG } from '../src/fs'
import { markDirty } from '../src/fs/trees'
import { SEGMENTS, STATE_CHECK, encodePointer, heldBlocks, heldRuns, readState, segmentsOf, type Segment, type SegKey } from '../src/fs/state'
import { crc32 } from '../src/native/sums'
import { CK_V2, encodeCheckpoint, readCheckpoint, readSuperblock } from '../src/fs/layout'
import { BlockDev, VsmError } from '../src/block/blockdev'

const MiB = 1 << 20

async function rejects(p: Promise<unknown> | (() => unknown), code: string) {
  try {
    if (typeof p === 'function') await p()
    else await p
  } catch (e) {
    assert.instance(e, VsmError)
    assert.is((e as VsmError).code, code, (e as Error).message)
    assert.not.match((e as Error).message, /\n/)
    return
  }
  assert.unreachable(`expected ${code}`)
}



// ---------------------------------------------------------------- conformance

conformance('fs file (64 MiB file on a 128 MiB file-backed volume)', async () => {
  const td = await tempDir()
  const file = path.join(td.dir, 'vol0')
  let vol = await FileDev.create(file, 128 * MiB)
  await FileSystem.mkfs([vol])
  let fs = await FileSystem.mount([vol])
  await fs.create('/disk.img', 0o644, 0, 0)
  await fs.truncate('/disk.img', 64 * MiB)
  const subj = {
    dev: fs.openFile('/disk.img') as BlockDev,
    reopen: async () => {
      await fs.close(); await vol.close()
      vol = await FileDev.open(file)
      fs = await FileSystem.mount([vol])
      return fs.openFile('/disk.img')
    },
    cleanup: async () => {
      const c = await fs.check()
      await fs.close(); await vol.close(); await td.cleanup()
      if (!c.ok) throw new Error(c.errors.join('; '))
    },
  }
  return subj
}).run()

// ---------------------------------------------------------------- namespace

const ns = suite('fs namespace')

ns('mkdir/create/rename/unlink/rmdir/truncate/chmod/chown/utimens/xattr persist across close+mount', async () => {
  const td = await tempDir()
  try {
    const file = path.join(td.dir, 'vol0')
    let vol = await FileDev.create(file, 64 * MiB)
    await FileSystem.mkfs([vol])
    let fs = await FileSystem.mount([vol])
    await fs.mkdir('/a', 0o755, 1000, 1000)
    await fs.mkdir('/a/b', 0o700, 1000, 1000)
    const ino = await fs.create('/a/b/f', 0o600, 1000, 1000)
    await fs.write(ino, Buffer.from('hello world'), 0)
    await fs.create('/a/g', 0o644, 0, 0)
    await fs.create('/x', 0o644, 0, 0)
    await fs.rename('/a/b/f', '/a/f2')
    await fs.rename('/x', '/a/g') // replaces g
    await fs.unlink('/a/f2')
    await fs.create('/a/f3', 0o644, 0, 0)
    const f3 = fs.lookup('/a/f3')
    await fs.write(f3, randomBytes(10000), 0)
    await fs.truncate('/a/f3', 5000)
    // read before utimens: a read moves an atime older than the mtime (relatime)
    const data = Buffer.alloc(5000)
    await fs.read(f3, data, 0)
    await fs.chmod('/a/f3', 0o640)
    await fs.chown('/a/f3', 7, 8)
    await fs.utimens('/a/f3', 1_000_000, 2_000_000)
    await fs.setxattr('/a/f3', 'user.vsm.policy', Buffer.from('{"cache":"wb"}'))
    await fs.setxattr('/a/f3', 'user.gone', Buffer.from('x'))
    await fs.removexattr('/a/f3', 'user.gone')
    await fs.mkdir('/empty', 0o755, 0, 0)
    await fs.rmdir('/empty')
    const want = JSON.stringify({ root: fs.readdir('/').sort(), a: fs.readdir('/a').sort(), b: fs.readdir('/a/b') })
    const st = fs.getattr('/a/f3')
    await okCheck(fs)
    await fs.close(); await vol.close()

    vol = await FileDev.open(file)
    fs = await FileSystem.mount([vol])
    assert.is(JSON.stringify({ root: fs.readdir('/').sort(), a: fs.readdir('/a').sort(), b: fs.readdir('/a/b') }), want)
    assert.equal(fs.readdir('/a').sort(), ['b', 'f3', 'g'])
    const st2 = fs.getattr('/a/f3')
    assert.equal(st2, st)
    assert.is(st2.mode, S_IFREG | 0o640)
    assert.is(st2.uid, 7); assert.is(st2.gid, 8)
    assert.is(st2.atime, 1_000_000); assert.is(st2.mtime, 2_000_000)
    assert.is(st2.size, 5000)
    assert.is(fs.getattr('/a').mode, S_IFDIR | 0o755)
    assert.is(fs.getattr('/a').nlink, 3)
    assert.equal(fs.listxattr('/a/f3'), ['user.vsm.policy'])
    assert.is(fs.getxattr('/a/f3', 'user.vsm.policy')!.toString(), '{"cache":"wb"}')
    assert.is(fs.getxattr('/a/f3', 'user.gone'), undefined)
    const got = Buffer.alloc(5000)
    assert.is(await fs.read(fs.lookup('/a/f3'), got, 0), 5000)
    assert.ok(got.equals(data))
    await okCheck(fs)
    await fs.close(); await vol.close()
  } finally { await td.cleanup() }
})

ns('synced changes survive without close (journal replay)', async () => {
  const vols = [new MemDev(64 * MiB)]
  await FileSystem.mkfs(vols, { journalBytes: 64 * 1024 })
  const fs = await FileSystem.mount(vols)
  const files: Buffer[] = []
  for (let i = 0; i < 200; i++) { // enough commits to wrap the 64 KiB journal and checkpoint
    const ino = await fs.create(`/f${i}`, 0o644, 0, 0)
    const b = randomBytes(100 + i * 37)
    files.push(b)
    await fs.write(ino, b, i * 11)
    if (i % 3 === 0) await fs.rename(`/f${i}`, `/g${i}`)
    await fs.fsync(ino)
  }
  const fs2 = await FileSystem.mount([vols[0].crashImage(() => 0)])
  for (let i = 0; i < 200; i++) {
    const p = i % 3 === 0 ? `/g${i}` : `/f${i}`
    const b = Buffer.alloc(files[i].length)
    assert.is(await fs2.read(fs2.lookup(p), b, i * 11), b.length)
    assert.ok(b.equals(files[i]), p)
    assert.is(fs2.getattr(p).size, i * 11 + files[i].length)
  }
  await okCheck(fs2)
})

ns('POSIX errors for rename/rmdir/unlink/mkdir', async () => {
  const { fs } = await memFs()
  await fs.mkdir('/d', 0o755, 0, 0)
  await fs.mkdir('/d/sub', 0o755, 0, 0)
  await fs.mkdir('/e', 0o755, 0, 0)
  await fs.create('/d/file', 0o644, 0, 0)
  await fs.create('/f', 0o644, 0, 0)
  await rejects(fs.rmdir('/d'), 'ENOTEMPTY')
  await rejects(fs.rmdir('/f'), 'ENOTDIR')
  await rejects(fs.rmdir('/nope'), 'ENOENT')
  await rejects(fs.unlink('/d'), 'EISDIR')
  await rejects(fs.unlink('/nope'), 'ENOENT')
  await rejects(fs.mkdir('/d', 0o755, 0, 0), 'EEXIST')
  await rejects(fs.create('/f', 0o644, 0, 0), 'EEXIST')
  await rejects(fs.create('/nope/x', 0o644, 0, 0), 'ENOENT')
  await rejects(fs.create('/f/x', 0o644, 0, 0), 'ENOTDIR')
  await rejects(fs.rename('/e', '/f'), 'ENOTDIR')
  await rejects(fs.rename('/f', '/e'), 'EISDIR')
  await rejects(fs.rename('/e', '/d'), 'ENOTEMPTY')
  await rejects(fs.rename('/d', '/d/sub/x'), 'EINVAL')
  await rejects(fs.rename('/nope', '/x'), 'ENOENT')
  await rejects(fs.rename('/', '/x'), 'EBUSY')
  await rejects(fs.rmdir('/'), 'EBUSY')
  await fs.rename('/e', '/d/sub') // empty dir replaces empty dir
  assert.equal(fs.readdir('/').sort(), ['d', 'f'])
  await fs.rename('/f', '/f') // no-op
  await fs.rename('/d/sub', '/top')
  assert.is(fs.getattr('/d').nlink, 2)
  assert.is(fs.getattr('/').nlink, 4)
  await rejects(() => fs.getattr('/nope'), 'ENOENT')
  await rejects(() => fs.readdir('/f'), 'ENOTDIR')
  await okCheck(fs)
})

ns('bad input throws one clear line and changes nothing', async () => {
  const { fs } = await memFs()
  await fs.create('/f', 0o644, 0, 0)
  const before = JSON.stringify([fs.readdir('/'), fs.getattr('/f'), fs.statfs()])
  await rejects(fs.create('relative', 0o644, 0, 0), 'EINVAL')
  await rejects(fs.create('/a/../b', 0o644, 0, 0), 'EINVAL')
  await rejects(fs.create('/./b', 0o644, 0, 0), 'EINVAL')
  await rejects(fs.create('/' + 'x'.repeat(256), 0o644, 0, 0), 'ENAMETOOLONG')
  await rejects(fs.create('/nul\0', 0o644, 0, 0), 'EINVAL')
  await rejects(fs.create('/g', -1, 0, 0), 'EINVAL')
  await rejects(fs.create('/g', 0o644, -5, 0), 'EINVAL')
  await rejects(fs.create('/g', 0o644, 0, 0, { volume: 3 }), 'EINVAL')
  await rejects(fs.truncate('/f', -1), 'EINVAL')
  await rejects(fs.truncate('/f', 1.5), 'EINVAL')
  await rejects(fs.truncate('/', 0), 'EISDIR')
  await rejects(fs.write(fs.lookup('/f'), Buffer.alloc(1), -1), 'EINVAL')
  await rejects(fs.write(fs.lookup('/f'), Buffer.alloc(1), 2 ** 51), 'EFBIG')
  await rejects(fs.write(12345, Buffer.alloc(1), 0), 'ENOENT')
  await rejects(fs.write(1, Buffer.alloc(1), 0), 'EISDIR')
  await rejects(fs.setxattr('/f', '', Buffer.alloc(1)), 'EINVAL')
  await rejects(fs.setxattr('/f', 'user.big', Buffer.alloc(70000)), 'E2BIG')
  await rejects(fs.removexattr('/f', 'user.none'), 'ENODATA')
  await rejects(fs.utimens('/f', NaN, 0), 'EINVAL')
  await rejects(fs.chown('/f', 0, 2 ** 33), 'EINVAL')
  assert.is(JSON.stringify([fs.readdir('/'), fs.getattr('/f'), fs.statfs()]), before)
  await rejects(FileSystem.mount([new MemDev(64 * MiB)]), 'EINVAL')
  await rejects(FileSystem.mkfs([new MemDev(1 * MiB)]), 'ENOSPC')
  await okCheck(fs)
})

ns('a damaged superblock copy or checkpoint slot falls back to the other', async () => {
  const vols = [new MemDev(32 * MiB)]
  await FileSystem.mkfs(vols)
  let fs = await FileSystem.mount(vols)
  await fs.mkdir('/kept', 0o755, 0, 0)
  await fs.close() // the newest checkpoint now holds /kept
  await vols[0].write(Buffer.alloc(4096, 0xff), 0) // superblock copy 1
  fs = await FileSystem.mount(vols)
  assert.equal(fs.readdir('/'), ['kept'])
  await fs.mkdir('/later', 0o755, 0, 0)
  await fs.sync() // a journal record after the mount checkpoint
  const fs2 = await FileSystem.mount([vols[0].crashImage(() => 0)])
  assert.equal(fs2.readdir('/').sort(), ['kept', 'later'])
  await okCheck(fs2)
  await fs.close()
})

ns('check verifies the extent trees: each map against its tree, the reference count of every node', async () => {
  const { vols, fs } = await memFs()
  const ino = await fs.create('/f', 0o644, 0, 0)
  await fs.write(ino, Buffer.alloc(3 * 4096, 1), 0)
  await fs.snapshot('/f', 's')
  await fs.close()
  const fs2 = await FileSystem.mount(vols)
  await okCheck(fs2)
  const core = (fs2 as any).core
  const n = core.inodes.get(ino)
  // a map changed behind the trees' back
  const [e] = n.ext.punch(2, 3)
  let c = await fs2.check()
  assert.ok(c.errors.some((x) => x.includes(`inode ${ino}: its extent tree`)), c.errors.join('; '))
  n.ext.insert(e.fb, e.vol, e.pb, e.len)
  await okCheck(fs2)
  // a node's count off
  const held = await core.store.refs(n.root)
  await core.store.setRefs(n.root, held + 3)
  c = await fs2.check()
  assert.ok(c.errors.some((x) => x.includes(`node ${n.root}: reference count ${held + 3}`)), c.errors.join('; '))
  await core.store.setRefs(n.root, held)
  await okCheck(fs2)
  await fs2.close()
})

ns.run()

// ---------------------------------------------------------------- sparse, statfs, placement

const sp = suite('fs sparse files and space accounting')

sp('holes read as zeros and take no space; blocks and statfs move correctly', async () => {
  const { fs } = await memFs()
  const s0 = fs.statfs()
  assert.is(s0.bsize, 4096)
  assert.ok(s0.blocks > 0 && s0.bfree <= s0.blocks && s0.bfree > s0.blocks - 1024)
  const ino = await fs.create('/img', 0o644, 0, 0)
  await fs.truncate('/img', 8 * MiB)
  assert.is(fs.getattr('/img').blocks, 0)
  assert.is(fs.statfs().bfree, s0.bfree)
  await fs.write(ino, Buffer.alloc(4096, 1), 1 * MiB)          // 1 block
  await fs.write(ino, Buffer.alloc(512, 2), 3 * MiB + 512)     // 1 block, partial
  await fs.write(ino, Buffer.alloc(128 * 1024, 3), 5 * MiB)    // 32 blocks
  assert.is(fs.getattr('/img').blocks, 34 * 8)
  assert.is(fs.statfs().bfree, s0.bfree - 34)
  assert.is(fs.getattr('/img').size, 8 * MiB)
  const b = Buffer.alloc(4096, 0xee)
  await fs.read(ino, b, 3 * MiB)
  assert.ok(b.subarray(0, 512).equals(Buffer.alloc(512)))
  assert.ok(b.subarray(512, 1024).equals(Buffer.alloc(512, 2)))
  assert.ok(b.subarray(1024).equals(Buffer.alloc(3072)))
  const h = Buffer.alloc(65536, 0xee)
  await fs.read(ino, h, 6 * MiB)
  assert.ok(h.equals(Buffer.alloc(65536)))
  // short read at EOF
  assert.is(await fs.read(ino, Buffer.alloc(100), 8 * MiB - 10), 10)
  assert.is(await fs.read(ino, Buffer.alloc(100), 8 * MiB), 0)
  // truncate frees the blocks past the new end (after the commit)
  await fs.truncate('/img', 2 * MiB)
  assert.is(fs.getattr('/img').blocks, 8)
  await fs.sync()
  assert.is(fs.statfs().bfree, s0.bfree - 1)
  const files0 = fs.statfs().ffree
  await fs.unlink('/img')
  await fs.sync()
  assert.is(fs.statfs().bfree, s0.bfree)
  // inodes live in the checkpoint's state on volume 0's free space: the freed data makes room too
  const s1 = fs.statfs()
  assert.ok(s1.ffree >= files0 + 1, `${s1.ffree} free inodes, ${files0} before`)
  assert.is(s1.files - s1.ffree, 1, 'the root is the one inode in use')
  await okCheck(fs)
})

sp('a partial write to a freshly allocated block never exposes stale bytes', async () => {
  const { fs } = await memFs()
  const a = await fs.create('/a', 0o644, 0, 0)
  await fs.write(a, Buffer.alloc(1 * MiB, 0xab), 0)
  await fs.unlink('/a')
  await fs.sync() // blocks reusable now
  const b = await fs.create('/b', 0o644, 0, 0)
  await fs.truncate('/b', 1 * MiB)
  for (let off = 0; off < 1 * MiB; off += 64 * 1024) await fs.write(b, Buffer.alloc(512, 1), off + 1024)
  const all = Buffer.alloc(1 * MiB)
  await fs.read(b, all, 0)
  for (let i = 0; i < all.length; i++) if (all[i] !== 0 && all[i] !== 1) assert.unreachable(`stale byte at ${i}`)
  // shrink then grow: bytes past the old EOF in the last block read as zeros
  const c = await fs.create('/c', 0o644, 0, 0)
  await fs.write(c, Buffer.alloc(4096, 7), 0)
  await fs.truncate('/c', 100)
  await fs.truncate('/c', 4096)
  const t = Buffer.alloc(4096)
  await fs.read(c, t, 0)
  assert.ok(t.subarray(100).equals(Buffer.alloc(3996)), 'truncate up exposes old bytes')
  await fs.truncate('/c', 50)
  await fs.write(c, Buffer.alloc(10, 9), 3000)
  await fs.read(c, t.subarray(0, 3010), 0)
  assert.ok(t.subarray(50, 3000).equals(Buffer.alloc(2950)), 'write past EOF exposes old bytes')
  await okCheck(fs)
})

sp('concurrent sector writes into one fresh block all land', async () => {
  const { fs } = await memFs()
  const ino = await fs.create('/img', 0o644, 0, 0)
  await fs.truncate('/img', 1 * MiB)
  const r = rng(7)
  for (let round = 0; round < 20; round++) {
    const base = round * 16384
    const parts = Array.from({ length: 8 }, (_, i) => ({ off: base + i * 512 * (1 + r(3)), data: randomBytes(512) }))
    const seen = new Set<number>()
    const uniq = parts.filter((p) => !seen.has(p.off) && seen.add(p.off))
    await Promise.all(uniq.map((p) => fs.write(ino, p.data, p.off)))
    for (const p of uniq) {
      const b = Buffer.alloc(512)
      await fs.read(ino, b, p.off)
      assert.ok(b.equals(p.data), `round ${round} off ${p.off}`)
    }
  }
  await okCheck(fs)
})

sp('sequential writes to a new image produce few large extents; overwrites need no metadata', async () => {
  const { fs, vols } = await memFs(128 * MiB)
  const ino = await fs.create('/img', 0o644, 0, 0)
  await fs.truncate('/img', 64 * MiB)
  // a guest writing sequentially with several requests in flight
  for (let off = 0; off < 32 * MiB; off += 8 * 128 * 1024) {
    await Promise.all(Array.from({ length: 8 }, (_, k) => fs.write(ino, Buffer.alloc(128 * 1024, k + 1), off + k * 128 * 1024)))
  }
  await fs.sync()
  const ex = (fs as any).core.inodes.get(ino).ext.count
  assert.ok(ex <= 2, `expected few extents, got ${ex}`)
  // overwrite of allocated blocks: one volume write per extent, no journal record
  let writes = 0
  const v0 = vols[0]
  const orig = v0.write.bind(v0)
  v0.write = async (b: Buffer, o: number) => { writes++; return orig(b, o) }
  await fs.write(ino, Buffer.alloc(128 * 1024, 9), 4 * MiB)
  assert.is(writes, 1)
  await fs.fsync(ino)
  assert.is(writes, 1, 'an overwrite must not write a journal record')
  await okCheck(fs)
})

sp('placement: files land on the volume asked for; multi-volume fs mounts in any order', async () => {
  const vols = [new MemDev(32 * MiB), new MemDev(32 * MiB)]
  await FileSystem.mkfs(vols, { volumeNames: ['fast', 'slow'] })
  let fs = await FileSystem.mount(vols)
  const a = await fs.create('/a', 0o644, 0, 0)
  const b = await fs.create('/b', 0o644, 0, 0, { volume: 1 })
  const s0 = fs.statfs()
  await fs.write(a, Buffer.alloc(1 * MiB, 1), 0)
  await fs.write(b, Buffer.alloc(2 * MiB, 2), 0)
  assert.is(fs.statfs().bfree, s0.bfree - 768)
  const ext = (fs as any).core.inodes.get(b).ext.toArray()
  assert.ok(ext.every((e: any) => e.vol === 1))
  await fs.close()
  await rejects(FileSystem.mount([vols[0]]), 'EINVAL')
  await rejects(FileSystem.mount([vols[1], vols[0]], { volumeNames: ['fast', 'slow'] }), 'EINVAL')
  fs = await FileSystem.mount([vols[1], vols[0]], { volumeNames: ['slow', 'fast'] })
  const got = Buffer.alloc(2 * MiB)
  await fs.read(fs.lookup('/b'), got, 0)
  assert.ok(got.equals(Buffer.alloc(2 * MiB, 2)))
  assert.equal(fs.volumes().map((v) => v.name), ['fast', 'slow'])
  await okCheck(fs)
})

sp('ENOSPC: a full volume refuses writes cleanly, the fs stays consistent and usable', async () => {
  const vols = [new MemDev(32 * MiB)]
  await FileSystem.mkfs(vols)
  let fs = await FileSystem.mount(vols)
  const ino = await fs.create('/big', 0o644, 0, 0)
  let off = 0, hit = false
  const chunk = Buffer.alloc(1 * MiB, 5)
  for (;;) {
    try { await fs.write(ino, chunk, off); off += chunk.length } catch (e) {
      assert.is((e as VsmError).code, 'ENOSPC'); hit = true; break
    }
  }
  assert.ok(hit)
  const st = fs.getattr('/big')
  assert.is(st.size, off, 'failed write changed the size')
  // smaller writes still fit until the last block
  let small = 0
  for (;;) {
    try { await fs.write(ino, Buffer.alloc(4096, 6), off + small * 4096); small++ } catch (e) { assert.is((e as VsmError).code, 'ENOSPC'); break }
  }
  assert.is(fs.statfs().bfree, 0)
  await fs.sync()
  await okCheck(fs)
  // overwrites still work on a full fs; freeing makes room again
  await fs.write(ino, Buffer.alloc(4096, 7), 0)
  await fs.truncate('/big', 1 * MiB)
  await fs.sync()
  assert.ok(fs.statfs().bfree > 0)
  const ino2 = await fs.create('/after', 0o644, 0, 0)
  await fs.write(ino2, Buffer.alloc(2 * MiB, 8), 0)
  await fs.close()
  fs = await FileSystem.mount(vols)
  const b = Buffer.alloc(4096)
  await fs.read(fs.lookup('/big'), b, 0)
  assert.ok(b.equals(Buffer.alloc(4096, 7)))
  await okCheck(fs)
})

sp('metadata grows from volume 0\'s free space, not a fixed area: ENOSPC only when it is full; refusals change nothing; deleting makes room', async () => {
  const vols = [new MemDev(32 * MiB)]
  await FileSystem.mkfs(vols)
  let fs = await FileSystem.mount(vols)
  const big = Buffer.alloc(60000, 0x41)
  let n = 0, hit = false
  for (; n < 1000; n++) {
    await fs.create(`/f${n}`, 0o644, 0, 0)
    try { await fs.setxattr(`/f${n}`, 'user.blob', big) } catch (e) { assert.is((e as VsmError).code, 'ENOSPC'); hit = true; break }
  }
  assert.ok(hit, 'metadata never filled up')
  // the 1 MiB checkpoint area held about ten of these; the 32 MiB volume holds many
  // more (~90: room is kept for two states, each counted with a block of slack per 4 KiB)
  assert.ok(n > 60, `only ${n} xattrs of 60000 bytes fit`)
  assert.is(fs.getxattr(`/f${n}`, 'user.blob'), undefined)
  await okCheck(fs)
  await fs.close()
  fs = await FileSystem.mount(vols)
  assert.is(fs.getxattr('/f0', 'user.blob')!.length, 60000)
  for (let i = 0; i < n; i += 2) await fs.unlink(`/f${i}`)
  await fs.setxattr(`/f${n}`, 'user.blob', big)
  await fs.close()
  fs = await FileSystem.mount(vols)
  assert.is(fs.getxattr(`/f${n}`, 'user.blob')!.length, 60000)
  await okCheck(fs)
})

sp('more files than the checkpoint area could hold: kept through a crash and a remount; a damaged state refuses to mount', async () => {
  const vols = [new MemDev(32 * MiB)]
  await FileSystem.mkfs(vols)
  let fs = await FileSystem.mount(vols)
  // ~160 bytes of state each: the 1 MiB area held ~5000
  const N = 12000
  await fs.mkdir('/d', 0o755, 0, 0)
  for (let i = 0; i < N; i++) {
    const ino = await fs.create(`/d/file-with-a-longer-name-${i}`, 0o644, i, i)
    if (i % 1000 === 0) await fs.write(ino, Buffer.alloc(4096, i % 251), 0)
  }
  await fs.sync()
  const verify = async (f: FileSystem) => {
    assert.is(f.readdir('/d').length, N)
    assert.is(f.getattr(`/d/file-with-a-longer-name-${N - 1}`).uid, N - 1)
    const b = Buffer.alloc(4096)
    await f.read(f.lookup('/d/file-with-a-longer-name-7000'), b, 0)
    assert.ok(b.equals(Buffer.alloc(4096, 7000 % 251)))
    await okCheck(f)
  }
  const crashed = await FileSystem.mount([vols[0].crashImage(() => 0)])
  await verify(crashed)
  await crashed.close()
  await fs.close()
  fs = await FileSystem.mount(vols)
  await verify(fs)
  const segs = (fs as any).core.stateSegs
  assert.ok(heldBlocks(segs) * 4096 > 1 * MiB, 'the state is not on the data blocks')
  // a checkpoint after one chmod writes that inode's segment, not the state, and serializes only its inodes
  const before = fs.journalStats().metaBytes, imaged = fs.journalStats().stateInodes, visited = fs.journalStats().stateVisited
  await fs.chmod('/d/file-with-a-longer-name-5000', 0o600)
  ;(fs as any).core.wantCkpt = true
  await fs.sync()
  const looked = fs.journalStats().stateVisited - visited
  assert.ok(looked > 0 && looked < N / 4, `the plan of a checkpoint after one chmod looked at ${looked} of ${N} inodes`)
  const wrote = fs.journalStats().metaBytes - before
  assert.ok(wrote < heldBlocks(segs) * 4096 / 4, `a checkpoint after one chmod wrote ${wrote} bytes of a ${heldBlocks(segs) * 4096}-byte state`)
  const images = fs.journalStats().stateInodes - imaged
  assert.ok(images > 0 && images < N / 4, `a checkpoint after one chmod serialized ${images} of ${N} inodes`)
  // a create in /d rewrites the bucket of names it joins, not /d's 12000 names
  const names = Buffer.byteLength(JSON.stringify(fs.readdir('/d').map((n) => [n, 0])))
  const before2 = fs.journalStats().metaBytes, buckets = fs.journalStats().stateBuckets, copied = fs.journalStats().stateNames
  await fs.create('/d/one-more', 0o644, 0, 0)
  ;(fs as any).core.wantCkpt = true
  await fs.sync()
  const wrote2 = fs.journalStats().metaBytes - before2
  assert.ok(wrote2 < names, `a create in a directory of ${N} names wrote ${wrote2} bytes; its names are ${names}`)
  assert.is(fs.journalStats().stateBuckets - buckets, 1, 'the checkpoint serialized the bucket the name joined, not all 16')
  // nor did its plan copy the directory's names into /d's image: those of that bucket only
  const copied2 = fs.journalStats().stateNames - copied
  assert.ok(copied2 > 0 && copied2 < 2 * N / 16, `the plan of a checkpoint after one create copied ${copied2} of /d's ${N} names`)
  // a rename within /d: the buckets of the two names only
  const buckets2 = fs.journalStats().stateBuckets
  await fs.rename('/d/one-more', '/d/one-more-renamed')
  ;(fs as any).core.wantCkpt = true
  await fs.sync()
  assert.ok(fs.journalStats().stateBuckets - buckets2 <= 2)
  await fs.close()
  fs = await FileSystem.mount(vols)
  assert.is(fs.getattr('/d/file-with-a-longer-name-5000').mode & 0o777, 0o600)
  assert.is(fs.readdir('/d').length, N + 1)
  assert.is(fs.getattr('/d/one-more-renamed').mode & 0o777, 0o644)
  // a byte of the durable state damaged under the mounted fs: fs check finds it
  const live = heldRuns((fs as any).core.stateSegs)[1].start * 4096 + 7
  const orig = Buffer.alloc(1)
  await vols[0].read(orig, live)
  await vols[0].write(Buffer.from([orig[0] ^ 0x20]), live)
  const found = await fs.check()
  assert.ok(!found.ok && found.errors.some((e) => /fail their checksum/.test(e)), found.errors.join('; '))
  await vols[0].write(orig, live)
  await okCheck(fs)
  await fs.close()
  // the last checkpoint's state, one byte changed: refused, one line, nothing written
  const at = heldRuns((fs as any).core.stateSegs)[0].start * 4096 + 100
  const one = Buffer.alloc(1)
  await vols[0].read(one, at)
  one[0] ^= 0xff
  await vols[0].write(one, at)
  await vols[0].flush()
  let writes = 0
  const write = vols[0].write.bind(vols[0])
  vols[0].write = (b: Buffer, o: number) => { writes++; return write(b, o) }
  try {
    await FileSystem.mount(vols)
    assert.unreachable('mounted a damaged state')
  } catch (e) {
    assert.is((e as VsmError).code, 'EIO')
    assert.match((e as Error).message, /fail their checksum/)
    assert.not.match((e as Error).message, /\n/)
  }
  assert.is(writes, 0, 'a refused mount wrote')
})

sp('statfs\'s free inodes say how many files can be made: within 20% of the count that fits on an empty 32 MiB volume', async () => {
  const vols = [new MemDev(32 * MiB)]
  await FileSystem.mkfs(vols)
  const fs = await FileSystem.mount(vols)
  const said = fs.statfs().ffree
  let made = 0
  try {
    for (;; made++) await fs.create(`/file-number-${made}`, 0o644, 0, 0)
  } catch (e) { assert.is((e as VsmError).code, 'ENOSPC') }
  assert.ok(made > 0.8 * said && made < 1.2 * said, `statfs said ${said} free inodes; ${made} files fit`)
  await fs.close()
})

sp('a state in many small segments (here one inode each): data writes leave room for its next checkpoint, which rewrites every segment on a full volume, and the mount after it', async () => {
  const saved = { ...SEGMENTS }
  Object.assign(SEGMENTS, { inodes: 1 })
  try {
    const vols = [new MemDev(192 * MiB)]
    await FileSystem.mkfs(vols)
    let fs = await FileSystem.mount(vols)
    // ~1.2 MB of state, more than the 1 MiB checkpoint area holds, in 12000 blocks
    const N = 12000
    for (let i = 0; i < N; i++) await fs.create(`/f${i}`, 0o644, 0, 0)
    await fs.sync()
    const big = await fs.create('/big', 0o644, 0, 0)
    let off = 0
    for (const size of [MiB, 4096]) {
      try {
        for (;;) { await fs.write(big, Buffer.alloc(size, 7), off); off += size }
      } catch (e) { assert.is((e as VsmError).code, 'ENOSPC', (e as Error).message) }
    }
    await fs.sync()
    for (let i = 0; i < N; i++) await fs.chmod(`/f${i}`, 0o600)
    ;(fs as any).core.wantCkpt = true
    await fs.sync()
    // new inodes, each a new segment and block: creates are refused before a checkpoint would find no room
    let made = 0
    try {
      for (; made < 4000; made++) await fs.create(`/g${made}`, 0o644, 0, 0)
    } catch (e) { assert.is((e as VsmError).code, 'ENOSPC', (e as Error).message) }
    assert.ok(made > 0, 'no room for a single create')
    // and the checkpoint after the next, which rewrites every segment again
    for (let i = 0; i < N; i++) await fs.chmod(`/f${i}`, 0o640)
    for (let i = 0; i < made; i++) await fs.chmod(`/g${i}`, 0o640)
    ;(fs as any).core.wantCkpt = true
    await fs.sync()
    await fs.close()
    fs = await FileSystem.mount(vols)
    assert.is(fs.getattr(`/f${N - 1}`).mode & 0o777, 0o640)
    assert.is(fs.getattr(`/g${made - 1}`).mode & 0o777, 0o640)
    assert.is(fs.getattr('/big').size, off)
    await okCheck(fs)
    await fs.close()
  } finally { Object.assign(SEGMENTS, saved) }
})

sp('inodes left far apart by creates and unlinks still fill their state blocks (segments are cut by live inodes, not by ranges of numbers); the state reads back', async () => {
  const vols = [new MemDev(64 * MiB)]
  await FileSystem.mkfs(vols)
  let fs = await FileSystem.mount(vols)
  await fs.mkdir('/d', 0o755, 0, 0)
  const N = 60000, EVERY = 500
  for (let i = 0; i < N; i++) await fs.create(`/d/f${i}`, 0o644, i, i)
  for (let i = 0; i < N; i++) if (i % EVERY) await fs.unlink(`/d/f${i}`)
  ;(fs as any).core.wantCkpt = true
  await fs.sync()
  const inodeSegs = new Map([...(fs as any).core.stateSegs as Map<SegKey, Segment>].filter(([k]) => typeof k === 'number'))
  const bytes = [...inodeSegs.values()].reduce((a, s) => a + s.bytes, 0)
  // 120 survivors, one in 500 numbers: in ranges of 1024 numbers they took 59 blocks
  assert.ok(heldBlocks(inodeSegs) <= Math.ceil(bytes / 4096) + 2, `${N / EVERY} inodes, ${bytes} bytes of state in ${heldBlocks(inodeSegs)} blocks`)
  await fs.close()
  fs = await FileSystem.mount(vols)
  assert.is(fs.readdir('/d').length, N / EVERY)
  assert.is(fs.getattr(`/d/f${N - EVERY}`).uid, N - EVERY)
  await okCheck(fs)
  await fs.close()
})

/** A new fs on vols holding /f0../f2999 (uid and gid i), all in a checkpoint. */
async function filesCheckpointed(vols: MemDev[]): Promise<FileSystem> {
  await FileSystem.mkfs(vols)
  const fs = await FileSystem.mount(vols)
  for (let i = 0; i < 3000; i++) await fs.create(`/f${i}`, 0o644, i, i)
  ;(fs as any).core.wantCkpt = true
  await fs.sync()
  return fs
}

sp('a state written by the last version (segments of fixed ranges, pointer v 4) mounts, and its first checkpoint frees every block of it', async () => {
  const vols = [new MemDev(32 * MiB)]
  let fs = await filesCheckpointed(vols)
  await fs.close()
  const sb = await readSuperblock(vols[0])
  const cks = await Promise.all(sb.ckpt.map((off) => readCheckpoint(vols[0], off, sb.ckptLen, CK_V2)))
  const slot = cks[0] && (!cks[1] || cks[0].h.seq > cks[1].h.seq) ? 0 : 1
  const p = JSON.parse(cks[slot]!.payload.toString())
  assert.is(p.v, 5)
  assert.ok(p.segs.length > 1)
  // v 4 keyed a segment of inodes by k for the numbers from k·1024
  let k = 0
  const v4 = Buffer.from(JSON.stringify({ ...p, v: 4, segs: p.segs.map((s: unknown[]) => typeof s[0] === 'number' ? [k++, ...s.slice(1)] : s) }))
  await vols[0].write(encodeCheckpoint({ ...cks[slot]!.h, len: v4.length }, v4), sb.ckpt[slot])
  const read = await readState(vols[0], v4, sb.dataStart, vols[0].size / 4096)
  assert.equal([...read.segs.keys()].filter((k) => typeof k === 'number').slice(0, 3), [0, 1024, 2048], 'v 4 keys read as the first number of their range')
  // the mount's own checkpoint writes the state anew (keys that differ are never kept)
  fs = await FileSystem.mount(vols)
  for (const i of [0, 1500, 2999]) assert.is(fs.getattr(`/f${i}`).uid, i)
  await fs.chmod('/f0', 0o600)
  ;(fs as any).core.wantCkpt = true
  await fs.sync()
  await okCheck(fs)
  await fs.close()
  fs = await FileSystem.mount(vols)
  assert.is(fs.getattr('/f0').mode & 0o777, 0o600)
  assert.is(fs.getattr('/f2999').uid, 2999)
  await okCheck(fs)
  await fs.close()
})

sp('a checkpoint that finds no free block on volume 0 writes the whole state into its area, the segments it kept read back: all of it mounts', async () => {
  const vols = [new MemDev(32 * MiB)]
  const fs = await filesCheckpointed(vols)
  await fs.chmod('/f2999', 0o600)
  const free = (fs as any).core.free[0]
  const taken: number[] = []
  for (let b = free.allocLast(); b !== null && b !== undefined; b = free.allocLast()) taken.push(b)
  ;(fs as any).core.wantCkpt = true
  await fs.sync()
  assert.is((fs as any).core.stateSegs.size, 0, 'the state went into the area')
  // as a crash leaves it (close would checkpoint again, into segments)
  const crashed = await FileSystem.mount([vols[0].crashImage(() => 0)])
  for (const i of [0, 1024, 2998]) assert.is(crashed.getattr(`/f${i}`).uid, i)
  assert.is(crashed.getattr('/f2999').mode & 0o777, 0o600)
  await okCheck(crashed)
  await crashed.close()
  for (const b of taken) free.release(b, 1)
  await fs.close()
})

sp('with STATE_CHECK.verify, an inode changed behind the ops\' back fails the checkpoint (the check the test command runs on every commit can fail)', async () => {
  const saved = { ...STATE_CHECK }
  STATE_CHECK.verify = true
  try {
    const vols = [new MemDev(32 * MiB)]
    await FileSystem.mkfs(vols)
    const fs = await FileSystem.mount(vols)
    for (let i = 0; i < 100; i++) await fs.create(`/f${i}`, 0o644, i, i)
    ;(fs as any).core.wantCkpt = true
    await fs.sync()
    ;(fs as any).core.inodes.get(fs.lookup('/f7')).uid = 4242
    ;(fs as any).core.wantCkpt = true
    await rejects(fs.sync(), 'EIO')
    await rejects(fs.create('/after', 0o644, 0, 0), 'EIO')
  } finally { Object.assign(STATE_CHECK, saved) }
})

sp('statfs does not move while a checkpoint writes its state (the blocks it takes for the next state are part of the room kept for it)', async () => {
  const vols = [new MemDev(32 * MiB)]
  const fs = await filesCheckpointed(vols)
  await fs.chmod('/f1', 0o600)
  await fs.sync()
  const before = fs.statfs().bfree
  const seen: number[] = []
  const write = vols[0].write.bind(vols[0])
  vols[0].write = (b: Buffer, o: number) => { seen.push(fs.statfs().bfree); return write(b, o) }
  await fs.chmod('/f2', 0o600)
  ;(fs as any).core.wantCkpt = true
  await fs.sync()
  vols[0].write = write
  assert.ok(seen.length > 0)
  assert.equal([...new Set(seen)], [before], 'free blocks seen at each write of the checkpoint')
  assert.is(fs.statfs().bfree, before)
  await fs.close()
})

sp('a checkpoint that lacks one of a directory\'s buckets of names is refused with EIO in one line, not read as a smaller directory', async () => {
  const names = Array.from({ length: 3000 }, (_, i) => [`name-${i}`, 100 + i])
  const bufs = await segmentsOf([[1, S_IFDIR | 0o755, 0, 0, 0, 2, 0, 0, 0, 0, 1, names]])
  const dev = new MemDev(16 * MiB)
  const segs = new Map<SegKey, Segment>()
  let at = 16
  for (const [k, b] of bufs) {
    const len = Math.ceil(b.length / 4096)
    const padded = Buffer.alloc(len * 4096)
    b.copy(padded)
    await dev.write(padded, at * 4096)
    segs.set(k, { bytes: b.length, crc: crc32(b), hash: '', runs: [{ start: at, len }] })
    at += len
  }
  const head = { nextIno: 3100, gen: 0, store: 0 }
  assert.is(segs.size, 5, 'the inode segment and four buckets')
  const whole = await readState(dev, encodePointer(head, segs), 16, 4096)
  assert.equal(new Set((whole.image.inodes[0][11] as [string, number][]).map((e) => e[0])), new Set(names.map((e) => e[0])))
  segs.delete('1.2')
  try {
    await readState(dev, encodePointer(head, segs), 16, 4096)
    assert.unreachable('read a directory without one of its buckets')
  } catch (e) {
    assert.is((e as VsmError).code, 'EIO')
    assert.match((e as Error).message, /holds 3 of directory 1's 4 buckets/)
  }
})

sp('a checkpoint that keeps some state segments and replaces others, killed at any write (volatile cache): what was synced mounts, check clean', async () => {
  let kept = 0, lost = 0
  for (let limit = 0; limit < 10; limit++) {
    const a = new MemDev(32 * MiB)
    await FileSystem.mkfs([a])
    const fs = await FileSystem.mount([a])
    // several segments of inodes (about 512 each)
    for (let i = 0; i < 3000; i++) await fs.create(`/f${i}`, 0o644, i, i)
    ;(fs as any).core.wantCkpt = true
    await fs.sync()
    await fs.chown('/f1500', 70000, 70000)
    await fs.sync()
    ;(fs as any).core.vols[0] = dying([a], limit)[0]
    let done = true
    try {
      await fs.chown('/f2500', 80000, 80000)
      ;(fs as any).core.wantCkpt = true
      await fs.sync()
    } catch { done = false }
    let s = limit + 1
    const r = (n: number) => { s = (s * 1103515245 + 12345) >>> 0; return (s >>> 16) % n }
    const f2 = await FileSystem.mount([a.crashImage(r)])
    assert.is(f2.getattr('/f1500').uid, 70000, `limit ${limit}: a synced chown lost`)
    const u = f2.getattr('/f2500').uid
    if (done) assert.is(u, 80000, `limit ${limit}: the checkpointed chown lost`)
    else assert.ok(u === 2500 || u === 80000, `limit ${limit}: uid ${u}`)
    if (u === 80000) kept++; else lost++
    for (const i of [0, 900, 1023, 1024, 2047, 2048, 2999]) assert.is(f2.getattr(`/f${i}`).uid, i, `limit ${limit}: /f${i}`)
    await okCheck(f2)
    await f2.close()
  }
  assert.ok(kept > 0 && lost > 0, `every crash point gave the same outcome (${kept} kept, ${lost} lost)`)
})

sp('group commit: concurrent fsyncs share commits', async () => {
  const { fs, vols } = await memFs()
  const ino = await fs.create('/img', 0o644, 0, 0)
  await fs.truncate('/img', 16 * MiB)
  await fs.sync()
  let flushes = 0
  const orig = vols[0].flush.bind(vols[0])
  vols[0].flush = async () => { flushes++; await new Promise((r) => setTimeout(r, 2)); return orig() }
  await Promise.all(Array.from({ length: 64 }, async (_, k) => {
    await fs.write(ino, Buffer.alloc(4096, k), k * 65536)
    await fs.fsync(ino)
  }))
  assert.ok(flushes < 40, `${flushes} flushes for 64 fsyncs`)
  const fs2 = await FileSystem.mount([vols[0].crashImage(() => 0)])
  for (let k = 0; k < 64; k++) {
    const b = Buffer.alloc(4096)
    await fs2.read(ino, b, k * 65536)
    assert.ok(b.equals(Buffer.alloc(4096, k)))
  }
  await okCheck(fs2)
})

sp('truncate and unlink are not starved by continuous guest I/O', async () => {
  const { fs, vols } = await memFs()
  const ino = await fs.create('/img', 0o644, 0, 0)
  await fs.write(ino, Buffer.alloc(4 * MiB, 1), 0)
  const orig = vols[0].write.bind(vols[0])
  vols[0].write = async (b: Buffer, o: number) => { await new Promise((r) => setTimeout(r, 1)); return orig(b, o) }
  let stop = false, ios = 0, enoent = 0
  const workers = Array.from({ length: 4 }, async (_, k) => {
    // always one request in flight while the next is issued: the file is never idle
    let prev: Promise<unknown> = Promise.resolve(), gone = false
    while (!stop && !gone) {
      const w = fs.write(ino, Buffer.alloc(4096, k), (k * 97 + ios++ * 4096) % (2 * MiB)).catch((e) => {
        if ((e as VsmError).code !== 'ENOENT') throw e
        enoent++
        gone = true
      })
      await prev
      prev = w
    }
    await prev
  })
  await new Promise((r) => setTimeout(r, 20))
  const t0 = Date.now()
  const guard = setTimeout(() => { stop = true }, 3000) // if starved: stop the load so the test fails instead of hanging
  await fs.truncate('/img', 3 * MiB)
  assert.is(fs.getattr('/img').size, 3 * MiB)
  await fs.unlink('/img')
  clearTimeout(guard)
  assert.ok(Date.now() - t0 < 1000, 'truncate/unlink waited too long')
  await new Promise((r) => setTimeout(r, 10))
  stop = true
  await Promise.all(workers)
  assert.ok(ios > 8 && enoent > 0, `ios ${ios} enoent ${enoent}`)
  await fs.sync()
  await okCheck(fs)
})

sp('metadata regions: small volumes work, 8 GiB keeps under 1% for metadata', async () => {
  const big = new MemDev(8 * 1024 * MiB)
  await FileSystem.mkfs([big])
  const fs = await FileSystem.mount([big])
  const s = fs.statfs()
  const metaMiB = (8 * 1024 * MiB - s.blocks * 4096) / MiB
  // checkpoint areas and journal (40 MiB), the extent trees' budget (32 MiB)
  assert.ok(metaMiB >= 3 && metaMiB <= 80, `metadata ${metaMiB} MiB`)
  await fs.close()
})

sp('mount refuses a map that holds a block twice (a bug\'s work), alone and shared with a snapshot', async () => {
  for (const snap of [false, true]) {
    const { fs, vols } = await memFs(32 * MiB)
    const ino = await fs.create('/f', 0o644, 0, 0)
    await fs.write(ino, randomBytes(8 * 4096), 0)
    if (snap) await fs.snapshot('/f', 's')
    await fs.sync()
    // file block 5 pointed at file block 2's data block, as the checkpoint will store it
    const c = (fs as any).core
    const n = c.inodes.get(ino)
    const { vol, pb } = n.ext.lookup(2)
    n.ext.punch(5, 6)
    n.ext.insert(5, vol, pb, 1)
    markDirty(c, n, 5, 6)
    await fs.close()
    try {
      await FileSystem.mount(vols)
      assert.unreachable(`snapshot ${snap}: mounted`)
    } catch (e) {
      assert.match((e as Error).message, /maps a block of volume 0 twice/, `snapshot ${snap}`)
    }
  }
})

sp('punchHole (discard) deallocates whole blocks and zeroes the edges', async () => {
  const { fs } = await memFs()
  const ino = await fs.create('/img', 0o644, 0, 0)
  await fs.write(ino, Buffer.alloc(64 * 1024, 3), 0)
  const dev = fs.openFile('/img')
  await dev.discard!(1000, 20000)
  assert.is(fs.getattr('/img').blocks, (16 - 4) * 8)
  const b = Buffer.alloc(64 * 1024)
  await fs.read(ino, b, 0)
  assert.ok(b.subarray(0, 1000).equals(Buffer.alloc(1000, 3)))
  assert.ok(b.subarray(1000, 21000).equals(Buffer.alloc(20000)))
  assert.ok(b.subarray(21000).equals(Buffer.alloc(65536 - 21000, 3)))
  await fs.sync()
  await okCheck(fs)
})

sp.run()
