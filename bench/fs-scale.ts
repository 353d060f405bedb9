// The fs's metadata scale figures (issue 9 item 4), a section of `npm run bench`
// (bench.ts calls fsScaleBench), also runnable alone: node dist/bench/fs-scale.js [--json].
// In-process on one sparse backing file (BENCH_DIR, default /var/tmp): a disk of
// FS_SCALE_DISK_MIB (1024) filled sequentially, a snapshot of it (fresh), then
// FS_SCALE_WRITES (100000) random 4 KiB copy-on-write writes with an fsync every 16, a
// snapshot after each third (the last one on the fragmented disk); metadata bytes the
// fs wrote per 4 KiB write; mount time and heap after remount. Next to it the same
// extent count in the B+tree library (src/fs/btree) the fs's maps are moving onto:
// bytes per remap committed every 16 and every 4096 (a checkpoint applying the
// journal), snapshot (clone) cost, open time. The ratios and
// bytes are the figures; absolute times on a shared machine are noise.
import * as fs from 'fs'
import * as path from 'path'
import { randomBytes } from 'crypto'
import { FileSystem } from '../src/fs'
import { BtStore } from '../src/fs/btree/store'
import { clone, insert } from '../src/fs/btree/tree'
import { encodeExtent, extentTree } from '../src/fs/btree/extent-tree'
import { FreeMap } from '../src/fs/extents'
import { openDevice } from '../src/volume/device'

const MiB = 1 << 20
const BS = 4096
const FSYNC_EVERY = 16
/** Remaps between tree commits when the journal takes the fsyncs and checkpoints apply it to the trees. */
const CHECKPOINT_EVERY = 4096

export interface SnapshotFigure { ms: number; metaBytes: number; mapEntries: number; afterWrites: number }
export interface FsScaleBench {
  params: { diskMiB: number; volumeMiB: number; writes: number; fsyncEvery: number }
  /** Where the fs refused to go on (today: its fixed metadata area full), or null. */
  failed: { afterWrites: number; error: string } | null
  snapshot: { fresh: SnapshotFigure; fragmented: SnapshotFigure[]; fragmentedVsFresh: number }
  metaBytesPerWrite: number
  checkpointBytes: number
  mount: { ms: number; heapMiB: number }
  btree: { metaBytesPerWrite: number; perCheckpointBytesPerWrite: number; snapshotMs: number; snapshotNodesWritten: number; openMs: number; entries: number }
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6

export async function fsScaleBench(): Promise<FsScaleBench> {
  const diskMiB = Number(process.env.FS_SCALE_DISK_MIB ?? 1024)
  const writes = Number(process.env.FS_SCALE_WRITES ?? 100_000)
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? '/var/tmp', 'vsm-fs-scale-'))
  try {
    const volumeMiB = Number(process.env.FS_SCALE_VOL_MIB ?? 8192)
    const volBytes = volumeMiB * MiB
    const dev = await openDevice(path.join(dir, 'vol0.img'), { create: volBytes })
    await FileSystem.mkfs([dev])
    const fsys = await FileSystem.mount([dev])
    const ino = await fsys.create('/disk', 0o644, 0, 0)
    const chunk = randomBytes(MiB)
    for (let off = 0; off < diskMiB * MiB; off += MiB) await fsys.write(ino, chunk, off)
    await fsys.sync()
    let done = 0
    const snap = async (name: string): Promise<SnapshotFigure> => {
      const m0 = fsys.journalStats().metaBytes
      const t0 = process.hrtime.bigint()
      await fsys.snapshot('/disk', name)
      return { ms: ms(t0), metaBytes: fsys.journalStats().metaBytes - m0, mapEntries: fsys.extentMap(ino).length, afterWrites: done }
    }
    const fresh = await snap('fresh')
    const blocks = diskMiB * MiB / BS
    const buf = Buffer.alloc(BS)
    const fragmented: SnapshotFigure[] = []
    let metaInWrites = 0
    let failed: FsScaleBench['failed'] = null
    try {
      for (let phase = 1; phase <= 3; phase++) {
        const m0 = fsys.journalStats().metaBytes
        for (let i = 0; i < writes / 3; i++, done++) {
          buf.writeUInt32LE(i, 0)
          await fsys.write(ino, buf, Math.floor(Math.random() * blocks) * BS)
          if (i % FSYNC_EVERY === FSYNC_EVERY - 1) await fsys.fsync(ino)
        }
        await fsys.fsync(ino)
        metaInWrites += fsys.journalStats().metaBytes - m0
        fragmented.push(await snap(`frag${phase}`))
      }
    } catch (e) {
      failed = { afterWrites: done, error: (e as Error).message }
    }
    const beforeClose = fsys.journalStats().metaBytes
    // a full metadata area leaves the fs unusable: its close cannot checkpoint either
    await fsys.close().catch((e: Error) => { failed ??= { afterWrites: done, error: e.message } })
    const checkpointBytes = fsys.journalStats().metaBytes - beforeClose
    await dev.close()
    const { mountMs, heapMiB, entries } = await remount(path.join(dir, 'vol0.img'), ino)
    const last = fragmented[fragmented.length - 1]
    return {
      params: { diskMiB, volumeMiB, writes, fsyncEvery: FSYNC_EVERY },
      failed,
      snapshot: { fresh, fragmented, fragmentedVsFresh: last ? last.ms / fresh.ms : NaN },
      metaBytesPerWrite: metaInWrites / Math.max(1, done),
      checkpointBytes,
      mount: { ms: mountMs, heapMiB },
      btree: await btreeFigures(dir, entries, writes),
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** Mount time and the heap the mounted fs holds (run with --expose-gc for a figure without garbage). */
async function remount(file: string, ino: number) {
  global.gc?.()
  const heap0 = process.memoryUsage().heapUsed
  const dev = await openDevice(file)
  const t0 = process.hrtime.bigint()
  const fsys = await FileSystem.mount([dev])
  const mountMs = ms(t0)
  global.gc?.()
  const heapMiB = (process.memoryUsage().heapUsed - heap0) / MiB
  const entries = fsys.extentMap(ino).length
  await fsys.close()
  await dev.close()
  return { mountMs, heapMiB, entries }
}

/** The same map in the B+tree library: `entries` extents, then `writes` random 4 KiB remaps committed every FSYNC_EVERY. */
async function btreeFigures(dir: string, entries: number, writes: number) {
  const blocks = 1 << 20
  const dev = await openDevice(path.join(dir, 'meta.img'), { create: blocks * BS })
  const sb: [number, number] = [1, 2]
  await BtStore.format(dev, sb)
  const open = async () => {
    const { store, roots, used } = await BtStore.open(dev, { sb, cacheNodes: 1024 })
    const free = FreeMap.fromAllocated(3, blocks, used.map((b) => ({ start: b, len: 1 })), [])
    store.start({ alloc: () => free.alloc(1, -1)?.[0].start ?? null, available: () => free.free, release: (b) => free.release(b, 1) })
    return { store, roots }
  }
  let { store } = await open()
  const tree = extentTree()
  const val = (pb: number) => encodeExtent(0, pb, 1)
  let root = 0
  for (let k = 0; k < entries; k++) root = await insert(store, tree, root, k * 8, val(k))
  await store.commit({ root })
  let w0 = store.stats.nodesWritten
  const t0 = process.hrtime.bigint()
  const snap = await clone(store, tree, root)
  await store.commit({ root, snap })
  const snapshotMs = ms(t0)
  const snapshotNodesWritten = store.stats.nodesWritten - w0
  /** Metadata bytes per random remap when the trees are committed every `every` remaps (superblocks included). */
  const perWrite = async (every: number) => {
    const w = store.stats.nodesWritten, c = store.stats.commits
    for (let i = 0; i < writes; i++) {
      root = await insert(store, tree, root, Math.floor(Math.random() * entries * 8), val(entries + i))
      if (i % every === every - 1) await store.commit({ root, snap })
    }
    await store.commit({ root, snap })
    return ((store.stats.nodesWritten - w) + (store.stats.commits - c)) * BS / writes
  }
  const metaBytesPerWrite = await perWrite(FSYNC_EVERY)
  const perCheckpointBytesPerWrite = await perWrite(CHECKPOINT_EVERY)
  const t1 = process.hrtime.bigint()
  ;({ store } = await open())
  const openMs = ms(t1)
  await dev.close()
  return { metaBytesPerWrite, perCheckpointBytesPerWrite, snapshotMs, snapshotNodesWritten, openMs, entries }
}

export function describe(b: FsScaleBench): string[] {
  const f = (x: number, d = 1) => x.toFixed(d)
  const s = b.snapshot
  return [
    `fs scale (${b.params.diskMiB} MiB disk on a ${b.params.volumeMiB} MiB volume, ${b.params.writes} random 4 KiB writes, fsync every ${b.params.fsyncEvery}, in-process):`,
    ...(b.failed ? [`  the fs refused to go on after ${b.failed.afterWrites} writes: ${b.failed.error}`] : []),
    `  snapshot create: fresh ${f(s.fresh.ms)} ms (${s.fresh.mapEntries} map entries, ${s.fresh.metaBytes} B metadata); ` +
      `after ${s.fragmented.map((x) => `${x.afterWrites} writes ${f(x.ms)} ms (${x.mapEntries} entries, ${x.metaBytes} B)`).join(', ')}; fragmented/fresh ${f(s.fragmentedVsFresh, 0)}x`,
    `  metadata written per 4 KiB write: ${f(b.metaBytesPerWrite, 0)} B; a checkpoint of the fragmented fs ${f(b.checkpointBytes / MiB)} MiB; ` +
      `remount ${f(b.mount.ms)} ms, heap +${f(b.mount.heapMiB)} MiB`,
    `  B+tree library, same ${b.btree.entries} entries: snapshot ${f(b.btree.snapshotMs)} ms (${b.btree.snapshotNodesWritten} nodes written), ` +
      `${f(b.btree.metaBytesPerWrite, 0)} B per 4 KiB remap committed every ${b.params.fsyncEvery}, ${f(b.btree.perCheckpointBytesPerWrite, 0)} B committed every ${CHECKPOINT_EVERY} ` +
      `(the journal taking the fsyncs), open ${f(b.btree.openMs)} ms`,
  ]
}

if (require.main === module) {
  fsScaleBench().then((b) => {
    if (process.argv.includes('--json')) console.log(JSON.stringify(b))
    else for (const l of describe(b)) console.log(l)
  }).catch((e) => { console.error(e.message); process.exit(1) })
}
