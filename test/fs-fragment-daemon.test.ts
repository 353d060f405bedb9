// Issue 9's fragmentation case through the FUSE view: a disk filled, then random 4 KiB
// copy-on-write writes (an fsync every 64) with a snapshot after each third. No write or
// snapshot fails for metadata space, the disk reads as the model says, every snapshot
// reads as its disk was when it was taken, fs check is clean; and all of it again after
// a restart. VSM_FRAG_WRITES (default 12000) and VSM_FRAG_DISK_MIB (default 128) size it:
// the issue's case is VSM_FRAG_WRITES=300000 VSM_FRAG_DISK_MIB=2048. The snapshot and
// remount times are printed as figures, not asserted (npm run bench has the ratios).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { createHash, randomBytes } from 'crypto'
import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { rng } from './helpers/conformance'

const MiB = 1 << 20
const DISK_MIB = Number(process.env.VSM_FRAG_DISK_MIB ?? 128)
const WRITES = Number(process.env.VSM_FRAG_WRITES ?? 12_000)
const DISK = DISK_MIB * MiB
const vsm = makeVsm({ deviceSize: `${Math.max(1024, DISK_MIB * 3)}M` })
test.after(() => vsm.cleanup())

/** sha256 of each MiB of a file (or of a buffer): a snapshot's contents in little memory. */
function chunkSums(read: (buf: Buffer, off: number) => void): string[] {
  const out: string[] = []
  const b = Buffer.alloc(MiB)
  for (let off = 0; off < DISK; off += MiB) { read(b, off); out.push(createHash('sha256').update(b).digest('hex')) }
  return out
}
const fileSums = (path: string) => {
  const fd = openSync(path, 'r')
  try { return chunkSums((b, off) => { readSync(fd, b, 0, MiB, off) }) } finally { closeSync(fd) }
}

test(`${WRITES} random 4 KiB writes on a ${DISK_MIB} MiB disk with a snapshot every third: no metadata ENOSPC, every snapshot as taken, fs check clean, before and after a restart`, async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'frag.img', '--size', `${DISK_MIB}M`)
  const img = join(vsm.mount, 'frag.img')
  const model = Buffer.alloc(DISK)
  const fd = openSync(img, 'r+')
  const snaps: { name: string; sums: string[]; ms: number }[] = []
  const rates: number[] = []
  try {
    for (let off = 0; off < DISK; off += 4 * MiB) { randomBytes(4 * MiB).copy(model, off); writeSync(fd, model, off, 4 * MiB, off) }
    fsyncSync(fd)
    const snap = async (name: string) => {
      const t0 = Date.now()
      await vsm.run('snapshot', 'create', 'frag.img', name)
      snaps.push({ name, ms: Date.now() - t0, sums: chunkSums((b, off) => { model.copy(b, 0, off, off + MiB) }) })
    }
    await snap('fresh')
    const r = rng(0xf7a6)
    const block = Buffer.alloc(4096)
    let t0 = Date.now()
    for (let i = 1; i <= WRITES; i++) {
      const off = r(DISK / 4096) * 4096
      block.writeUInt32LE(i, 0)
      block.writeUInt32LE(off / 4096, 4)
      block.copy(model, off)
      writeSync(fd, block, 0, 4096, off)
      if (i % 64 === 0) fsyncSync(fd)
      if (i % Math.ceil(WRITES / 3) === 0) {
        fsyncSync(fd)
        rates.push(Math.round(Math.ceil(WRITES / 3) / ((Date.now() - t0) / 1000)))
        await snap(`after${i}`)
        t0 = Date.now()
      }
    }
    fsyncSync(fd)
  } finally { closeSync(fd) }
  console.log(`snapshot create: ${snaps.map((s) => `${s.name} ${s.ms} ms`).join(', ')}`)
  console.log(`writes per second (each third, fsync every 64): ${rates.join(', ')}`)

  const verify = async () => {
    assert.equal(fileSums(img), chunkSums((b, off) => { model.copy(b, 0, off, off + MiB) }), 'the disk reads as written')
    for (const s of snaps) assert.equal(fileSums(join(vsm.mount, '.snapshots', 'frag.img', s.name)), s.sums, `snapshot ${s.name} reads as taken`)
    const fsck = await vsm.json('fs', 'check')
    assert.ok(fsck.ok, fsck.errors.join('; '))
  }
  await verify()
  await vsm.down()
  const t0 = Date.now()
  await vsm.up()
  console.log(`restart (up) with ${WRITES} writes and ${snaps.length} snapshots: ${Date.now() - t0} ms`)
  await verify()
})

test.run()
