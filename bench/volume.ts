// Volume-layer bench, a section of `npm run bench` (bench.ts calls volumeBench), also
// runnable alone: node dist/bench/volume.js [--json]. Ratios measured in one run
// on sparse backing files in one directory (BENCH_DIR, default /var/tmp): stripe of 2
// vs one device (1 MiB sequential), mirror write vs one device, raid5 write vs one
// device, rebuild throughput vs the backing file's own sequential write throughput.
// Writes are timed until their flush returns, on every layout and the bare file alike.
// Absolute MiB/s on shared machines are noise; the ratios are the figure, and each is
// taken against a reference written just before it: on this VM a write into page cache
// the guest has not touched lately runs at the host's pace of backing fresh memory
// (measured: a fresh 256 MiB file at 55 MiB/s right after the layouts' writes, 700-1000
// MiB/s at the start of the run), so a reference from the start of the run made the
// rebuild look 10x worse than the layer is (0.06-0.11 against 0.90-0.93).
import * as fs from 'fs'
import * as path from 'path'
import { Pool } from '../src/volume/pool'
import { openDevice } from '../src/volume/device'
import type { BlockDev } from '../src/block/blockdev'
import type { VolumeSpec } from '../src/volume/config'

const MiB = 1 << 20
const TOTAL = Number(process.env.VOLUME_BENCH_MIB ?? 256) * MiB
const DEPTH = 4

/** MiB/s of `op` over [0, TOTAL) in 1 MiB requests, DEPTH in flight (fio's iodepth), then `end`. */
async function seq(op: (b: Buffer, off: number) => Promise<unknown>, end?: () => Promise<void>): Promise<number> {
  const b = Buffer.alloc(MiB, 7)
  let off = 0
  const t0 = process.hrtime.bigint()
  await Promise.all(Array.from({ length: DEPTH }, async () => {
    while (off + MiB <= TOTAL) { const o = off; off += MiB; await op(b, o) }
  }))
  await end?.()
  return TOTAL / MiB / (Number(process.hrtime.bigint() - t0) / 1e9)
}

// Timed until the flush returns: untimed, a bare device's figure was a copy into the page
// cache while a mirror paid for its write-intent bits (and everything its device flushes
// wrote out) inside the clock, and rebuild (which flushes) was set against such a figure.
const write = (d: BlockDev) => seq((b, o) => d.write(b, o), () => d.flush())
const read = (d: BlockDev) => seq((b, o) => d.read(b, o))

export interface VolumeBench {
  ratios: Record<string, number>
  /** write: each layout's, and single: a one-device volume's written just before it; backingWrite: the bare file's, just before the rebuild. */
  mibPerSecond: { write: Record<string, number>; single: Record<string, number>; read: Record<string, number>; rebuild: number; backingWrite: number }
}

export async function volumeBench(): Promise<VolumeBench> {
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? '/var/tmp', 'vsm-volume-bench-'))
  try {
    const pool = await Pool.create(path.join(dir, 'home'))
    for (const n of ['a', 'b', 'c', 'd']) await pool.addDevice(n, path.join(dir, `${n}.img`), TOTAL * 6)
    const specs: [string, VolumeSpec][] = [
      ['stripe2', { layout: 'stripe', devices: ['a', 'b'], size: TOTAL }],
      ['mirror2', { layout: 'mirror', devices: ['c', 'd'], size: TOTAL + MiB }],
      ['raid5x3', { layout: 'raid5', devices: ['b', 'c', 'd'], size: TOTAL }],
    ]
    const w: Record<string, number> = {}, single: Record<string, number> = {}, r: Record<string, number> = {}
    const measure = async (name: string, spec: VolumeSpec) => {
      await pool.createVolume(name, spec)
      const v = await pool.openVolume(name)
      return { w: await write(v), r: await read(v) }
    }
    for (const [name, spec] of specs) {
      const one = await measure(`single-${name}`, { layout: 'concat', devices: ['a'], size: TOTAL })
      single[name] = one.w
      r.single ??= one.r
      const m = await measure(name, spec)
      w[name] = m.w
      r[name] = m.r
    }
    const raw = await openDevice(path.join(dir, 'raw.img'), { create: TOTAL + MiB })
    const rawWrite = await write(raw)
    await raw.close()
    const t0 = Date.now()
    const { job } = await pool.replaceMember('mirror2', 'd', 'a')
    const info = await pool.jobs.wait(job!)
    const rebuild = (info.result as { copied: number }).copied / MiB / ((Date.now() - t0) / 1000)
    await pool.close()
    const ratios = {
      stripe2VsSingleRead: r.stripe2 / r.single,
      stripe2VsSingleWrite: w.stripe2 / single.stripe2,
      mirrorWriteVsSingle: w.mirror2 / single.mirror2,
      raid5WriteVsSingle: w.raid5x3 / single.raid5x3,
      rebuildVsBackingWrite: rebuild / rawWrite,
    }
    return { ratios, mibPerSecond: { write: w, single, read: r, rebuild, backingWrite: rawWrite } }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

if (require.main === module) {
  volumeBench().then((b) => {
    if (process.argv.includes('--json')) console.log(JSON.stringify(b))
    else for (const [k, x] of Object.entries(b.ratios)) console.log(`${k.padEnd(24)} ${x.toFixed(2)}`)
  }).catch((e) => { console.error(e.message); process.exit(1) })
}
