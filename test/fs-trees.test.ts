// The extent maps on the B+trees against the in-memory maps as the model: random
// writes, truncates, punched holes, unshares, relocations between two volumes,
// snapshots, clones, reverts, snapshot deletes, unlinks and shared ranges
// (copy_file_range), with checkpoints at random points between them (so rebases, drops and changed ranges meet in one checkpoint in
// every order); after each checkpoint check() compares every map with its tree and
// the trees' reference counts with their holders, and now and then a remount must
// read every file and snapshot back as the model has it. Seed printed
// (VSM_FS_TREES_SEED, VSM_FS_TREES_OPS).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { rng } from './helpers/conformance'
import { MemDev } from './helpers/fs-memdev'
import { okCheck } from './helpers/fs-fixture'
import { FileSystem } from '../src/fs'

const MiB = 1 << 20
const BS = 4096
const SEED = Number(process.env.VSM_FS_TREES_SEED || Date.now() % 1e9)
const OPS = Number(process.env.VSM_FS_TREES_OPS || 1500)
const SPAN = 256 // blocks per file

test(`random map changes with checkpoints between them: every tree equals its map (seed ${SEED}, ${OPS} ops)`, async () => {
  const r = rng(SEED)
  const vols = [new MemDev(64 * MiB), new MemDev(32 * MiB)]
  await FileSystem.mkfs(vols)
  let fs = await FileSystem.mount(vols)
  /** path -> content model (block tags), and per path its snapshots' models */
  const files = new Map<string, Uint32Array>()
  const snaps = new Map<string, Map<string, Uint32Array>>()
  let tag = 1, names = 0
  const blockOf = (t: number) => { const b = Buffer.alloc(BS); b.fill(t % 251); b.writeUInt32LE(t, 0); return b }
  const pick = <T>(a: T[]) => a[r(a.length)]
  const checkpoint = async () => { (fs as any).core.wantCkpt = true; await fs.sync(); await okCheck(fs) }
  const verify = async (what: string) => {
    for (const [p, m] of files) {
      const ino = fs.lookup(p)
      for (let b = 0; b < SPAN; b++) {
        const got = Buffer.alloc(BS)
        await fs.read(ino, got, b * BS)
        assert.is(got.readUInt32LE(0), m[b], `${what}: ${p} block ${b} (seed ${SEED})`)
      }
      for (const [name, sm] of snaps.get(p)!) {
        const si = fs.snapshotIno(p, name)
        for (let b = 0; b < SPAN; b += 7) {
          const got = Buffer.alloc(BS)
          await fs.read(si, got, b * BS)
          assert.is(got.readUInt32LE(0), sm[b], `${what}: ${p}@${name} block ${b} (seed ${SEED})`)
        }
      }
    }
  }
  const newFile = async () => {
    const p = `/f${names++}`
    const ino = await fs.create(p, 0o644, 0, 0, { volume: r(2) })
    await fs.truncate(p, SPAN * BS)
    files.set(p, new Uint32Array(SPAN))
    snaps.set(p, new Map())
    return ino
  }
  await newFile()
  for (let i = 0; i < OPS; i++) {
    const paths = [...files.keys()]
    const p = pick(paths)
    const ino = fs.lookup(p)
    const m = files.get(p)!
    const k = r(100)
    if (k < 5 && paths.length > 1) {
      // copy_file_range's block sharing: p's blocks b.. now also at d.. of another file
      const q = pick(paths.filter((x) => x !== p)), mq = files.get(q)!
      const b = r(SPAN), d = r(SPAN), n = Math.min(1 + r(16), SPAN - b, SPAN - d)
      // refused (false) where q already holds one of those blocks elsewhere: then the data is copied, as the view does
      if (!(await fs.shareRange(ino, b * BS, fs.lookup(q), d * BS, n * BS))) {
        for (let j = 0; j < n; j++) { const blk = Buffer.alloc(BS); await fs.read(ino, blk, (b + j) * BS); await fs.write(fs.lookup(q), blk, (d + j) * BS) }
      }
      mq.set(m.subarray(b, b + n), d)
    } else if (k < 45) {
      const b = r(SPAN), n = 1 + r(4)
      for (let j = 0; j < n && b + j < SPAN; j++) { await fs.write(ino, blockOf(tag), (b + j) * BS); m[b + j] = tag++ }
    } else if (k < 50) {
      const b = r(SPAN), n = 1 + r(16)
      await fs.punchHole(ino, b * BS, n * BS)
      for (let j = b; j < Math.min(SPAN, b + n); j++) m[j] = 0
    } else if (k < 53) {
      const keep = r(SPAN)
      await fs.truncate(p, keep * BS)
      await fs.truncate(p, SPAN * BS)
      for (let j = keep; j < SPAN; j++) m[j] = 0
    } else if (k < 58) {
      const b = r(SPAN)
      await fs.unshare(ino, b, Math.min(SPAN, b + 1 + r(8)))
    } else if (k < 63) {
      const b = r(SPAN)
      await fs.relocate(ino, b, Math.min(SPAN, b + 1 + r(32)), r(2))
    } else if (k < 71 && snaps.get(p)!.size < 4) {
      const name = `s${names++}`
      await fs.snapshot(p, name)
      snaps.get(p)!.set(name, m.slice())
    } else if (k < 75 && snaps.get(p)!.size) {
      const name = pick([...snaps.get(p)!.keys()])
      await fs.deleteSnapshot(p, name)
      snaps.get(p)!.delete(name)
    } else if (k < 79 && snaps.get(p)!.size) {
      const name = pick([...snaps.get(p)!.keys()])
      await fs.revert(p, name)
      files.set(p, snaps.get(p)!.get(name)!.slice())
    } else if (k < 84 && snaps.get(p)!.size && files.size < 8) {
      const name = pick([...snaps.get(p)!.keys()])
      const q = `/f${names++}`
      await fs.clone(p, name, q)
      files.set(q, snaps.get(p)!.get(name)!.slice())
      snaps.set(q, new Map())
    } else if (k < 87 && files.size > 1) {
      await fs.unlink(p)
      files.delete(p)
      snaps.delete(p)
    } else if (k < 90 && files.size < 8) {
      await newFile()
    } else if (k < 97) {
      await checkpoint()
    } else {
      await fs.close()
      fs = await FileSystem.mount(vols)
      await okCheck(fs)
      await verify(`after remount at op ${i}`)
    }
  }
  await checkpoint()
  await verify('at the end')
  await fs.close()
  fs = await FileSystem.mount(vols)
  await okCheck(fs)
  await verify('after the last remount')
  await fs.close()
})

test('tree nodes come from the top of volume 0: a file written across checkpoints stays one extent', async () => {
  const vols = [new MemDev(64 * MiB)]
  await FileSystem.mkfs(vols)
  const fs = await FileSystem.mount(vols)
  const ino = await fs.create('/seq', 0o644, 0, 0)
  for (let k = 0; k < 64; k++) {
    await fs.write(ino, Buffer.alloc(64 << 10, k), k * (64 << 10))
    ;(fs as any).core.wantCkpt = true
    await fs.sync()
  }
  assert.is(fs.extentMap(ino).length, 1, JSON.stringify(fs.extentMap(ino).slice(0, 4)))
  await okCheck(fs)
  await fs.close()
})

test.run()
