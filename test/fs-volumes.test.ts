// The fs's own knowledge of its volumes: found from the superblock and labels alone,
// never formatted over (an fs made with an older superblock: fs-convert).
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { MemDev } from './helpers/fs-memdev'
import { dying, okCheck, MiB } from './helpers/fs-fixture'
import { FileSystem } from '../src/fs'
import { mountFromVolumes, VolumeSource } from '../src/fs/discover'
import { listPolicies, setPolicy } from '../src/fs/placement'
import { resumeFsJobs, startRemoveVolume } from '../src/fs/move'
import { probeVolume } from '../src/fs/layout'
import { heldBlocks } from '../src/fs/state'
import { Jobs } from '../src/control/jobs'
import { BlockDev, VsmError } from '../src/block/blockdev'

async function rejects(p: Promise<unknown>, code: string, re?: RegExp) {
  try { await p } catch (e) {
    assert.instance(e, VsmError)
    assert.is((e as VsmError).code, code, (e as Error).message)
    assert.not.match((e as Error).message, /\n/)
    if (re) assert.match((e as Error).message, re)
    return
  }
  assert.unreachable(`expected ${code}`)
}

const source = (vols: Record<string, BlockDev>): VolumeSource => ({
  names: () => Object.keys(vols),
  open: async (n) => vols[n],
})

async function image(dev: BlockDev): Promise<Buffer> {
  const b = Buffer.alloc(dev.size)
  await dev.read(b, 0)
  return b
}

const t = suite('fs volumes')

t('mkfs refuses a volume that holds an fs superblock, an fs label or a damaged superblock, and changes nothing', async () => {
  const vols = [new MemDev(32 * MiB), new MemDev(16 * MiB)]
  await FileSystem.mkfs(vols, { volumeNames: ['a', 'b'] })
  let fs = await FileSystem.mount(vols)
  const ino = await fs.create('/keep', 0o644, 0, 0, { volume: 1 })
  await fs.write(ino, Buffer.alloc(64 * 1024, 7), 0)
  await fs.close()
  const before = await Promise.all(vols.map(image))
  await rejects(FileSystem.mkfs([vols[0]]), 'EEXIST', /already holds a vsm file system/)
  await rejects(FileSystem.mkfs([new MemDev(32 * MiB), vols[1]]), 'EEXIST', /already part of vsm file system/)
  const after = await Promise.all(vols.map(image))
  assert.ok(before.every((b, i) => b.equals(after[i])), 'a refused mkfs wrote to a volume')
  // one damaged superblock copy: the other still mounts; both damaged: still never formatted over
  const junk = Buffer.alloc(100, 0xee)
  await vols[0].write(junk, 40)
  fs = await FileSystem.mount(vols)
  await fs.close()
  await vols[0].write(junk, 4096 + 40)
  await rejects(FileSystem.mkfs([vols[0]]), 'EEXIST', /damaged/)
})

t('the fs is found on the pool volumes from its superblock and labels, in any order', async () => {
  const a = new MemDev(32 * MiB), b = new MemDev(16 * MiB), other = new MemDev(8 * MiB)
  await FileSystem.mkfs([a, b], { volumeNames: ['fast', 'slow'] })
  let fs = await FileSystem.mount([a, b])
  const ino = await fs.create('/f', 0o644, 0, 0, { volume: 1 })
  await fs.write(ino, Buffer.alloc(8192, 3), 0)
  await fs.close()
  fs = (await mountFromVolumes(source({ other, slow: b, fast: a })))!
  assert.equal(fs.volumeNames(), ['fast', 'slow'])
  const got = Buffer.alloc(8192)
  await fs.read(fs.lookup('/f'), got, 0)
  assert.ok(got.equals(Buffer.alloc(8192, 3)))
  await okCheck(fs)
  await fs.close()
  // nothing on any volume: the caller may make an fs
  assert.is(await mountFromVolumes(source({ other })), null)
})

t('discovery refuses what it cannot be sure of, one line each', async () => {
  const a = new MemDev(32 * MiB), b = new MemDev(16 * MiB), c = new MemDev(32 * MiB)
  await FileSystem.mkfs([a, b], { volumeNames: ['a', 'b'] })
  await FileSystem.mkfs([c], { volumeNames: ['c'] })
  await rejects(mountFromVolumes(source({ a, b, c })), 'EEXIST', /refusing to guess/)
  await rejects(mountFromVolumes(source({ b })), 'ENOENT', /metadata volume is missing/)
  await rejects(mountFromVolumes(source({ a })), 'ENOENT', /spans volume\(s\) b/)
  const broken: VolumeSource = { names: () => ['x', 'y'], open: async (n) => { if (n === 'y') throw new VsmError('EIO', 'device gone'); return new MemDev(8 * MiB) } }
  await rejects(mountFromVolumes(broken), 'EIO', /y \(device gone\)/)
  const d = new MemDev(8 * MiB)
  await FileSystem.mkfs([d])
  await d.write(Buffer.alloc(100, 1), 40)
  await d.write(Buffer.alloc(100, 1), 4096 + 40)
  await rejects(mountFromVolumes(source({ d })), 'EIO', /damaged/)
})

t.run()

const on = suite('fs volumes online')

on('add a volume to a mounted fs: files go on it, and the fs is found on both after a remount', async () => {
  const a = new MemDev(32 * MiB), b = new MemDev(16 * MiB), c = new MemDev(16 * MiB)
  await FileSystem.mkfs([a], { volumeNames: ['a'] })
  let fs = await FileSystem.mount([a])
  const before = await fs.create('/before', 0o644, 0, 0)
  await fs.write(before, Buffer.alloc(8192, 1), 0)
  const added = await fs.addVolume(b, 'b')
  assert.equal(added, { name: 'b', size: 16 * MiB, index: 1 })
  assert.equal(fs.volumeNames(), ['a', 'b'])
  const s0 = fs.statfs()
  const ino = await fs.create('/onb', 0o644, 0, 0, { volume: fs.volumeIndex('b') })
  await fs.write(ino, Buffer.alloc(1 * MiB, 2), 0)
  assert.is(fs.statfs().bfree, s0.bfree - 256)
  assert.ok(fs.extentMap(ino).every((e) => e.volume === 'b'))
  await rejects(fs.addVolume(c, 'b'), 'EEXIST', /already part/)
  const other = new MemDev(16 * MiB)
  await FileSystem.mkfs([other])
  await rejects(fs.addVolume(other, 'other'), 'EEXIST', /already holds/)
  await okCheck(fs)
  await fs.close()
  fs = (await mountFromVolumes(source({ c, b, a })))!
  assert.equal(fs.volumeNames(), ['a', 'b'])
  const got = Buffer.alloc(1 * MiB)
  await fs.read(fs.lookup('/onb'), got, 0)
  assert.ok(got.equals(Buffer.alloc(1 * MiB, 2)))
  await okCheck(fs)
  await fs.close()
})

on('kill at every write of add-volume, with a volatile cache: the old or the new fs mounts, never neither', async () => {
  let sawOld = false, sawNew = false
  for (let limit = 0; limit < 8; limit++) {
    for (let seed = 1; seed <= 4; seed++) {
      const a = new MemDev(32 * MiB), b = new MemDev(16 * MiB)
      await FileSystem.mkfs([a], { volumeNames: ['a'] })
      let fs = await FileSystem.mount([a])
      const ino = await fs.create('/kept', 0o644, 0, 0)
      await fs.write(ino, Buffer.alloc(8192, 7), 0)
      await fs.sync()
      const [da, db] = dying([a, b], limit)
      ;(fs as any).core.vols[0] = da
      let added = true
      try { await fs.addVolume(db, 'b') } catch { added = false }
      let s = seed
      const r = (n: number) => { s = (s * 1103515245 + 12345) >>> 0; return (s >>> 16) % n }
      const ia = a.crashImage(r), ib = b.crashImage(r)
      fs = (await mountFromVolumes(source({ a: ia, b: ib })))!
      const names = fs.volumeNames()
      if (added) assert.equal(names, ['a', 'b'], `limit ${limit}: add-volume returned but the new volume is gone`)
      if (names.length === 1) sawOld = true
      else sawNew = true
      const got = Buffer.alloc(8192)
      await fs.read(fs.lookup('/kept'), got, 0)
      assert.ok(got.equals(Buffer.alloc(8192, 7)))
      await okCheck(fs)
      // an interrupted add leaves at most a label of this fs on b: adding it again works
      if (names.length === 1) await fs.addVolume(ib, 'b')
      assert.equal(fs.volumeNames(), ['a', 'b'])
      await fs.close()
    }
  }
  assert.ok(sawOld && sawNew)
})

on.run()

const mv = suite('fs relocate')

function pattern(seed: number, len: number): Buffer {
  const b = Buffer.alloc(len)
  let v = (seed * 2654435761) >>> 0
  for (let i = 0; i < len; i += 4) { v = (v * 1103515245 + 12345) >>> 0; b.writeUInt32LE(v, i) }
  return b
}

mv('relocate under concurrent writes: every byte as last written, snapshots keep sharing, the old volume empties', async () => {
  const a = new MemDev(64 * MiB), b = new MemDev(64 * MiB)
  await FileSystem.mkfs([a, b], { volumeNames: ['a', 'b'] })
  let fs = await FileSystem.mount([a, b])
  const SIZE = 8 * MiB
  const ino = await fs.create('/d', 0o644, 0, 0)
  const model = pattern(1, SIZE)
  await fs.write(ino, model, 0)
  await fs.snapshot('/d', 's1')
  const snapModel = Buffer.from(model)
  const free0 = fs.statfs().bfree
  let stop = false, writes = 0
  const writer = (async () => {
    let k = 0
    while (!stop) {
      const off = ((k * 7919) % (SIZE / 4096)) * 4096 + (k % 3) * 512
      const data = pattern(1000 + k, 4096)
      model.set(data, off)
      await fs.write(ino, data, off)
      writes++; k++
      if (k % 50 === 0) await fs.fsync(ino)
    }
  })()
  const span = fs.blockSpan(ino)
  let moved = 0
  fs.setPlacement(ino, 1)
  for (let blk = 0; blk < span; blk += 64) moved += await fs.relocate(ino, blk, Math.min(span, blk + 64), 1)
  stop = true
  await writer
  assert.ok(writes > 20, `only ${writes} writes ran during the move`)
  assert.ok(moved > 0)
  assert.equal(Object.keys(fs.placementOf(ino)), ['b'])
  // blocks still shared with the snapshot moved with the file (sharing kept); what only
  // the snapshot holds moves when the snapshot itself is relocated
  assert.ok(fs.sharedBlocks(ino) > 0, 'sharing with the snapshot was lost')
  const si = fs.snapshotIno('/d', 's1')
  await fs.relocate(si, 0, fs.blockSpan(si), 1)
  assert.equal(Object.keys(fs.placementOf(si)), ['b'])
  await fs.sync()
  // volume 0 keeps the extent trees' nodes and the checkpoint's state
  const core = (fs as any).core
  const state = heldBlocks(core.stateSegs)
  assert.is(core.free[0].free + core.storeBlocks + state, core.free[0].hi - core.free[0].lo, 'blocks left allocated on the old volume')
  const got = Buffer.alloc(SIZE)
  await fs.read(ino, got, 0)
  assert.ok(got.equals(model), 'file differs from the model after the move')
  await fs.read(fs.snapshotIno('/d', 's1'), got, 0)
  assert.ok(got.equals(snapModel), 'snapshot changed')
  await okCheck(fs)
  assert.ok(fs.statfs().bfree <= free0, 'space appeared from nowhere')
  await fs.close()
  fs = await FileSystem.mount([a, b])
  await fs.read(fs.lookup('/d'), got, 0)
  assert.ok(got.equals(model), 'file differs after remount')
  await okCheck(fs)
  await fs.close()
})

mv('kill at a random write during relocate, volatile cache: the fs mounts clean and every synced byte is there', async () => {
  for (let seed = 1; seed <= 24; seed++) {
    const a = new MemDev(32 * MiB), b = new MemDev(32 * MiB)
    await FileSystem.mkfs([a, b], { volumeNames: ['a', 'b'], journalBytes: 64 * 1024 })
    let fs = await FileSystem.mount([a, b])
    const ino = await fs.create('/d', 0o644, 0, 0)
    const model = pattern(seed, 2 * MiB)
    await fs.write(ino, model, 0)
    if (seed % 2) await fs.snapshot('/d', 's')
    await fs.sync()
    const [da, db] = dying([a, b], 2 + (seed * 37) % 60)
    ;(fs as any).core.vols[0] = da; (fs as any).core.vols[1] = db
    try {
      fs.setPlacement(ino, 1)
      for (let blk = 0; blk < 512; blk += 32) {
        await fs.relocate(ino, blk, blk + 32, 1)
        const data = pattern(seed * 100 + blk, 4096)
        await fs.write(ino, data, blk * 4096)
        await fs.fsync(ino)
        model.set(data, blk * 4096)
      }
    } catch { /* died */ }
    let s = seed
    const r = (n: number) => { s = (s * 1103515245 + 12345) >>> 0; return (s >>> 16) % n }
    const ia = a.crashImage(r), ib = b.crashImage(r)
    fs = await FileSystem.mount([ia, ib])
    await okCheck(fs)
    const got = Buffer.alloc(2 * MiB)
    await fs.read(fs.lookup('/d'), got, 0)
    assert.ok(got.equals(model), `seed ${seed}: acknowledged data lost`)
    await fs.close()
  }
})

mv.run()

const pl = suite('fs placement policy')

pl('new files land where the nearest directory rule says, by name pattern first; rules persist; bad rules change nothing', async () => {
  const vols = [new MemDev(32 * MiB), new MemDev(16 * MiB), new MemDev(16 * MiB)]
  await FileSystem.mkfs(vols, { volumeNames: ['a', 'b', 'c'] })
  let fs = await FileSystem.mount(vols)
  await fs.mkdir('/vm', 0o755, 0, 0)
  await fs.mkdir('/vm/sub', 0o755, 0, 0)
  await fs.mkdir('/other', 0o755, 0, 0)
  await setPolicy(fs, '/vm', 'b')
  await setPolicy(fs, 'vm', 'c', '*.iso')
  await setPolicy(fs, '/other', 'c')
  const volOf = (p: string) => (fs as any).core.inodes.get(fs.lookup(p)).vol
  for (const p of ['/top.img', '/vm/x.img', '/vm/sub/y.img', '/vm/z.iso', '/vm/sub/deep.iso', '/other/o.iso']) await fs.create(p, 0o644, 0, 0)
  assert.equal(['/top.img', '/vm/x.img', '/vm/sub/y.img', '/vm/z.iso', '/vm/sub/deep.iso', '/other/o.iso'].map(volOf), [0, 1, 1, 2, 2, 2])
  // a nearer directory's default wins over a farther pattern
  await setPolicy(fs, '/vm/sub', 'a')
  await fs.create('/vm/sub/w.iso', 0o644, 0, 0)
  assert.is(volOf('/vm/sub/w.iso'), 0)
  // the same match again replaces the rule
  await setPolicy(fs, '/vm', 'a', '*.iso')
  assert.equal(listPolicies(fs), [
    { dir: '/other', volume: 'c', match: null },
    { dir: '/vm', volume: 'a', match: '*.iso' },
    { dir: '/vm', volume: 'b', match: null },
    { dir: '/vm/sub', volume: 'a', match: null },
  ])
  const before = JSON.stringify(listPolicies(fs))
  await rejects(setPolicy(fs, '/top.img', 'b'), 'ENOTDIR')
  await rejects(setPolicy(fs, '/vm', 'nosuch'), 'ENOENT')
  await rejects(setPolicy(fs, '/vm', 'b', 'a/b'), 'EINVAL')
  await rejects(setPolicy(fs, '/nodir', 'b'), 'ENOENT')
  assert.is(JSON.stringify(listPolicies(fs)), before)
  await fs.close()
  fs = await FileSystem.mount(vols)
  assert.is(JSON.stringify(listPolicies(fs)), before)
  await fs.create('/vm/again.img', 0o644, 0, 0)
  assert.is(volOf('/vm/again.img'), 1)
  await okCheck(fs)
  await fs.close()
})

pl.run()

const rmv = suite('fs remove-volume')

rmv('remove-volume moves files, snapshots and clones off a volume under writes, then drops it; the rest refuse cleanly', async () => {
  const a = new MemDev(64 * MiB), b = new MemDev(32 * MiB)
  await FileSystem.mkfs([a, b], { volumeNames: ['a', 'b'] })
  // reads from b take a turn of the event loop, as a real device's do: the writer runs meanwhile
  const slowB: BlockDev = { size: b.size, read: async (x, o) => { await new Promise((r) => setImmediate(r)); return b.read(x, o) },
    write: (x, o) => b.write(x, o), flush: () => b.flush(), close: () => b.close() }
  let fs = await FileSystem.mount([a, slowB])
  const jobs = new Jobs()
  const ino = await fs.create('/d', 0o644, 0, 0, { volume: 1 })
  const model = pattern(5, 4 * MiB)
  await fs.write(ino, model, 0)
  await fs.snapshot('/d', 's')
  const snapModel = Buffer.from(model)
  await fs.clone('/d', 's', '/c')
  await fs.mkdir('/p', 0o755, 0, 0)
  await setPolicy(fs, '/p', 'b')
  await rejects(startRemoveVolume(fs, jobs, 'b'), 'EBUSY', /policy on \/p/)
  await rejects(startRemoveVolume(fs, jobs, 'a'), 'EBUSY', /metadata/)
  await setPolicy(fs, '/p', 'a')
  let stop = false, writes = 0
  const writer = (async () => {
    for (let k = 0; !stop; k++, writes++) {
      const off = ((k * 131) % 1024) * 4096
      const data = pattern(500 + k, 4096)
      model.set(data, off)
      await fs.write(ino, data, off)
      await new Promise((r) => setImmediate(r)) // in-memory volumes never leave the microtask queue: let the job run
    }
  })()
  const { job } = await startRemoveVolume(fs, jobs, 'b')
  await rejects(fs.create('/late', 0o644, 0, 0, { volume: 1 }), 'EBUSY', /being removed/)
  const done = await jobs.wait(job)
  stop = true
  await writer
  assert.is(done.error, undefined, String(done.error))
  assert.ok(writes > 2, `only ${writes} writes ran during the removal`)
  assert.equal(fs.volumeNames(), ['a'])
  for (const i of [ino, fs.snapshotIno('/d', 's'), fs.lookup('/c')]) assert.equal(Object.keys(fs.placementOf(i)), ['a'])
  const got = Buffer.alloc(4 * MiB)
  await fs.read(ino, got, 0)
  assert.ok(got.equals(model))
  await fs.read(fs.lookup('/c'), got, 0)
  assert.ok(got.equals(snapModel))
  await okCheck(fs)
  await fs.close()
  assert.is((await probeVolume(b)).kind, 'blank', 'the removed volume keeps its fs label')
  fs = (await mountFromVolumes(source({ a, b })))!
  assert.equal(fs.volumeNames(), ['a'])
  await fs.read(fs.lookup('/d'), got, 0)
  assert.ok(got.equals(model))
  await okCheck(fs)
  // the volume can come back, in a new slot
  await fs.addVolume(b, 'b')
  assert.equal(fs.volumeNames(), ['a', 'b'])
  await fs.write(await fs.create('/again', 0o644, 0, 0, { volume: fs.volumeIndex('b') }), Buffer.alloc(8192, 1), 0)
  await okCheck(fs)
  await fs.close()
  fs = (await mountFromVolumes(source({ a, b })))!
  await okCheck(fs)
  await fs.close()
})

rmv('remove-volume --to a named volume: files, snapshots and new writes go there, also when a crash interrupts it; bad targets change nothing', async () => {
  const a = new MemDev(32 * MiB), b = new MemDev(32 * MiB), c = new MemDev(32 * MiB)
  await FileSystem.mkfs([a, b, c], { volumeNames: ['a', 'b', 'c'] })
  const fs = await FileSystem.mount([a, b, c])
  const jobs = new Jobs()
  const ino = await fs.create('/d', 0o644, 0, 0, { volume: 1 })
  const model = pattern(7, 2 * MiB)
  await fs.write(ino, model, 0)
  await fs.snapshot('/d', 's')
  const empty = await fs.create('/e', 0o644, 0, 0, { volume: 1 })
  await rejects(startRemoveVolume(fs, jobs, 'b', 'b'), 'EINVAL', /target is the volume being removed/)
  await rejects(startRemoveVolume(fs, jobs, 'b', 'zz'), 'ENOENT', /zz is not part of the file system/)
  await rejects(startRemoveVolume(fs, jobs, 'a', 'c'), 'EBUSY', /metadata/)
  assert.equal(fs.volumeNames(), ['a', 'b', 'c'])
  await fs.write(await fs.create('/still', 0o644, 0, 0, { volume: 1 }), Buffer.alloc(4096, 2), 0)
  const started = await startRemoveVolume(fs, jobs, 'b', 'c')
  assert.is(started.to, 'c')
  // what kill -9 right after the start leaves: the intent names the target
  const crashed = [a, b, c].map((v) => v.crashImage(() => 0))
  const done = await jobs.wait(started.job)
  assert.is(done.error, undefined, String(done.error))
  const verify = async (f: FileSystem) => {
    assert.equal(f.volumeNames(), ['a', 'c'])
    for (const i of [ino, f.snapshotIno('/d', 's')]) assert.equal(Object.keys(f.placementOf(i)), ['c'])
    const got = Buffer.alloc(2 * MiB)
    await f.read(ino, got, 0)
    assert.ok(got.equals(model))
    await f.write(empty, Buffer.alloc(4096, 3), 0)
    assert.equal(Object.keys(f.placementOf(empty)), ['c'], 'a file placed on the removed volume now grows on the target')
    await okCheck(f)
  }
  await verify(fs)
  await fs.close()
  const fs2 = await FileSystem.mount(crashed)
  assert.equal(fs2.volumeNames(), ['a', 'b', 'c'])
  const jobs2 = new Jobs()
  const resumed = await resumeFsJobs(fs2, jobs2)
  assert.is(resumed.length, 1)
  assert.is(((await jobs2.wait(resumed[0].job!)).result as { to: string }).to, 'c')
  await verify(fs2)
  await fs2.close()
})

rmv.run()
