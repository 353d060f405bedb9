// The HSM's recall figures (issue 12), a section of `npm run bench` (bench.ts calls
// hsmBench), also runnable alone: node dist/bench/hsm.js [--json]. In-process, the fs on
// one sparse backing file and a directory archive tier beside it (BENCH_DIR, default
// /var/tmp): a disk of HSM_BENCH_DISK_MIB (1024) filled with random data and migrated to
// the archive in 1 MiB steps (fs relocate, as the HSM's jobs do); then the first-byte
// latency of a 4 KiB read at HSM_BENCH_READS (20) random places of the archived disk
// (each recalls its block and 256 KiB of read-ahead, nothing more), against recalling the
// whole disk (every 1 MiB step home, as `vsm hsm recall` does). Every byte read back is
// compared. The archive is a local directory: the figures are the HSM's own cost (object
// reads with their checksums, pool writes, remaps), not a network's.
import * as fs from 'fs'
import * as path from 'path'
import { randomBytes } from 'crypto'
import { FileSystem } from '../src/fs'
import { openDevice } from '../src/volume/device'
import { openArchive } from '../src/hsm/archive'
import { ArchiveDev } from '../src/hsm/archive-dev'

const MiB = 1 << 20
const BS = 4096
const STEP = 256

export interface HsmBench {
  params: { diskMiB: number; reads: number }
  migrate: { seconds: number; mbPerSec: number }
  /** One 4 KiB read of an archived block: ms, and bytes it brought home. */
  firstByte: { medianMs: number; p90Ms: number; maxMs: number; recalledBytesEach: number }
  /** The whole disk home. */
  wholeFile: { seconds: number; mbPerSec: number }
  wholeVsBlock: number
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6
const pct = (xs: number[], p: number) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]

export async function hsmBench(): Promise<HsmBench> {
  const diskMiB = Number(process.env.HSM_BENCH_DISK_MIB ?? 1024)
  const reads = Number(process.env.HSM_BENCH_READS ?? 20)
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? '/var/tmp', 'vsm-hsm-bench-'))
  try {
    const dev = await openDevice(path.join(dir, 'vol0.img'), { create: (diskMiB + 256) * MiB })
    await FileSystem.mkfs([dev])
    const fsys = await FileSystem.mount([dev])
    fs.mkdirSync(path.join(dir, 'archive'))
    const archive = new ArchiveDev('archive:bench', openArchive({ archive: path.join(dir, 'archive') }), 30_000)
    const to = fsys.attachArchive(0, archive)
    const ino = await fsys.create('/disk', 0o644, 0, 0)
    // each 4 KiB block is random bytes with its own number in front: any block back in the wrong place shows
    const base = randomBytes(MiB)
    const expect = (off: number, len: number) => {
      const b = Buffer.alloc(len)
      for (let at = 0; at < len; at += BS) {
        base.copy(b, at, (off + at) % MiB, (off + at) % MiB + BS)
        b.writeUInt32LE((off + at) / BS, at)
      }
      return b
    }
    for (let off = 0; off < diskMiB * MiB; off += MiB) await fsys.write(ino, expect(off, MiB), off)
    await fsys.sync()
    const blocks = diskMiB * MiB / BS
    const poolBytes = () => fsys.placementOf(ino).vol0 ?? 0

    let t0 = process.hrtime.bigint()
    for (let b = 0; b < blocks; b += STEP) await fsys.relocate(ino, b, Math.min(blocks, b + STEP), to)
    await fsys.sync()
    const migrateS = ms(t0) / 1000
    if (poolBytes() !== 0) throw new Error(`migration left ${poolBytes()} bytes in the pool`)

    const lat: number[] = []
    let recalled = 0
    const buf = Buffer.alloc(BS)
    for (let i = 0; i < reads; i++) {
      // distinct MiBs, so no read finds its block brought home by an earlier one's read-ahead
      const at = (Math.floor(i * diskMiB / reads) * MiB) + Math.floor(Math.random() * (MiB / BS - 64)) * BS
      const before = poolBytes()
      t0 = process.hrtime.bigint()
      await fsys.read(ino, buf, at)
      lat.push(ms(t0))
      recalled = Math.max(recalled, poolBytes() - before)
      if (!buf.equals(expect(at, BS))) throw new Error(`the block at ${at} came back wrong`)
    }

    t0 = process.hrtime.bigint()
    for (let b = 0; b < blocks; b += STEP) await fsys.relocate(ino, b, Math.min(blocks, b + STEP), 0)
    await fsys.sync()
    const wholeS = ms(t0) / 1000
    if (poolBytes() !== diskMiB * MiB) throw new Error(`the recall left ${diskMiB * MiB - poolBytes()} bytes archived`)
    const back = Buffer.alloc(MiB)
    for (let off = 0; off < diskMiB * MiB; off += MiB) {
      await fsys.read(ino, back, off)
      if (!back.equals(expect(off, MiB))) throw new Error(`MiB ${off / MiB} came back wrong`)
    }
    await fsys.close()
    await archive.close()
    await dev.close()
    const median = pct(lat, 0.5)
    return {
      params: { diskMiB, reads },
      migrate: { seconds: migrateS, mbPerSec: diskMiB / migrateS },
      firstByte: { medianMs: median, p90Ms: pct(lat, 0.9), maxMs: Math.max(...lat), recalledBytesEach: recalled },
      wholeFile: { seconds: wholeS, mbPerSec: diskMiB / wholeS },
      wholeVsBlock: wholeS * 1000 / median,
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

export function describe(b: HsmBench): string[] {
  const f = (x: number, d = 1) => x.toFixed(d)
  return [
    `hsm recall (${b.params.diskMiB} MiB disk migrated to a directory archive, in-process):`,
    `  migrate ${f(b.migrate.seconds)} s (${f(b.migrate.mbPerSec, 0)} MB/s); first byte of an archived 4 KiB block: median ${f(b.firstByte.medianMs)} ms, ` +
      `p90 ${f(b.firstByte.p90Ms)} ms, max ${f(b.firstByte.maxMs)} ms over ${b.params.reads} reads (each brought home ${b.firstByte.recalledBytesEach / 1024} KiB); ` +
      `the whole disk ${f(b.wholeFile.seconds)} s (${f(b.wholeFile.mbPerSec, 0)} MB/s): ${f(b.wholeVsBlock, 0)}x one block's wait`,
  ]
}

if (require.main === module) {
  hsmBench().then((b) => {
    if (process.argv.includes('--json')) console.log(JSON.stringify(b))
    else for (const l of describe(b)) console.log(l)
  }).catch((e) => { console.error(e.message); process.exit(1) })
}
