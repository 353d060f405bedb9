// The fs's scale figures side by side with ext4 (issue 9 item 4), a section of `npm run
// bench` (bench.ts calls fsScaleBench), also runnable alone: node dist/bench/fs-scale.js
// [--json]. Scratch files go under BENCH_DIR (default /var/tmp).
//
// vsm's fs in-process on one sparse volume file of FS_SCALE_VOL_MIB (8192): a disk of
// FS_SCALE_DISK_MIB (1024) filled sequentially, a snapshot of it (fresh), then
// FS_SCALE_WRITES (100000) random 4 KiB copy-on-write writes with an fsync every 16, a
// snapshot after each third (the last one on the fragmented disk); metadata bytes the fs
// wrote per 4 KiB write (its own count: journal records, checkpoints, tree nodes) and in
// the checkpoint at close; then a second file of FS_SCALE_MOUNT_EXTENTS (1000000)
// one-block extents (every other block written, 64 writes in flight); mount time, and
// the heap and RSS it adds, in a fresh process; then FS_SCALE_FILES (100000) files
// created, stat'ed and unlinked in one directory through its API (with what a checkpoint
// after one more create there writes). And the allocator on
// free space in FS_SCALE_FREE_RUNS (1000000) one-block runs (every other block free, as
// deleting snapshots of a disk rewritten at random leaves it): 1 MiB no run holds, one
// block at its goal.
//
// ext4 on a sparse loop file of the same size (ext4-loop.ts: mkfs.ext4 defaults with the
// inode tables zeroed at mkfs, default mount options, as root), in the same run: the
// same disk and writes with the same fsync cadence, its metadata being the bytes written
// to the loop device minus the data, and what its umount writes; the same file of
// one-block extents and the mount time of the fs holding both; the same files through
// Node's sync fs calls. ext4
// has no snapshots: that figure is n/a. The files again through vsm's FUSE view (a `vsm
// up` of its own, same Node calls), so one namespace ratio has the kernel on both sides.
//
// Ratios are vsm/ext4; absolute times on a shared machine are noise.
import { execFileSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import { randomBytes } from 'crypto'
import { FileSystem } from '../src/fs'
import { FreeMap } from '../src/fs/extents'
import { stateBytes, type SegKey, type Segment } from '../src/fs/state'
import { openDevice } from '../src/volume/device'
import { Ext4Loop } from './ext4-loop'

const MiB = 1 << 20
const BS = 4096
const FSYNC_EVERY = 16
const VSM = path.resolve(__dirname, '..', '..', 'bin', 'vsm')

export interface SnapshotFigure { ms: number; metaBytes: number; mapEntries: number; afterWrites: number }
/** Operations per second, each phase ended by a sync so its figure includes making it durable. */
export interface NsRates { create: number; stat: number; unlink: number }
export interface FsScaleBench {
  params: { diskMiB: number; volumeMiB: number; writes: number; fsyncEvery: number; files: number; mountExtents: number }
  /** Where the fs refused to go on, or null. */
  failed: { afterWrites: number; error: string } | null
  /** ext4 has no snapshots: only vsm's. */
  snapshot: { fresh: SnapshotFigure; fragmented: SnapshotFigure[]; fragmentedVsFresh: number }
  metaBytesPerWrite: { vsm: number; ext4: number; ratio: number }
  /** vsm: the checkpoint at close; ext4: what umount wrote. */
  closeBytes: { vsm: number; ext4: number; ratio: number }
  /** The fs holding the fragmented disk (and its snapshots: vsm) and the file of one-block extents. */
  mount: { vsm: { ms: number; heapMiB: number; rssMiB: number; extents: number; diskEntries: number }; ext4: { ms: number; extents: number }; ratio: number }
  namespace: {
    vsm: NsRates; vsmFuse: NsRates; ext4: NsRates
    ratios: { inProcess: NsRates; fuse: NsRates }
    /** vsm: the checkpoint after one more create in the full directory, and the whole state's bytes. */
    oneCreate: { bytes: number; stateBytes: number }
  }
  /** vsm's allocator alone (ext4 n/a). */
  alloc: { freeRuns: number; mibMs: number; blockAtGoalUs: number }
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6

export async function fsScaleBench(): Promise<FsScaleBench> {
  const diskMiB = Number(process.env.FS_SCALE_DISK_MIB ?? 1024)
  const writes = Number(process.env.FS_SCALE_WRITES ?? 100_000)
  const volumeMiB = Number(process.env.FS_SCALE_VOL_MIB ?? 8192)
  const files = Number(process.env.FS_SCALE_FILES ?? 100_000)
  const mountExtents = Number(process.env.FS_SCALE_MOUNT_EXTENTS ?? 1_000_000)
  const freeRuns = Number(process.env.FS_SCALE_FREE_RUNS ?? 1_000_000)
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? '/var/tmp', 'vsm-fs-scale-'))
  try {
    const v = await vsmFigures(dir, volumeMiB * MiB, diskMiB, writes, mountExtents, files)
    const e = await ext4Figures(dir, volumeMiB * MiB, diskMiB, v.done, mountExtents, files)
    const vsmFuse = await fuseNamespace(dir, files)
    return {
      params: { diskMiB, volumeMiB, writes, fsyncEvery: FSYNC_EVERY, files, mountExtents },
      failed: v.failed,
      snapshot: v.snapshot,
      metaBytesPerWrite: { vsm: v.metaBytesPerWrite, ext4: e.metaBytesPerWrite, ratio: v.metaBytesPerWrite / e.metaBytesPerWrite },
      closeBytes: { vsm: v.closeBytes, ext4: e.closeBytes, ratio: v.closeBytes / e.closeBytes },
      mount: { vsm: v.mount, ext4: e.mount, ratio: v.mount.ms / e.mount.ms },
      namespace: {
        vsm: v.namespace, vsmFuse, ext4: e.namespace,
        ratios: { inProcess: ratios(v.namespace, e.namespace), fuse: ratios(vsmFuse, e.namespace) },
        oneCreate: v.oneCreate,
      },
      alloc: allocFigures(freeRuns),
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const ratios = (a: NsRates, b: NsRates): NsRates => ({ create: a.create / b.create, stat: a.stat / b.stat, unlink: a.unlink / b.unlink })

/**
 * `n` random 4 KiB writes over a file of `blocks` blocks, an fsync after every FSYNC_EVERY
 * and at the end; `tally.writes` counts them (and keeps the count when a write throws).
 */
async function randomWrites(n: number, blocks: number, tally: { writes: number },
  write: (buf: Buffer, offset: number) => unknown, fsync: () => unknown): Promise<void> {
  const buf = Buffer.alloc(BS)
  for (let i = 0; i < n; i++, tally.writes++) {
    buf.writeUInt32LE(tally.writes, 0)
    await write(buf, Math.floor(Math.random() * blocks) * BS)
    if (i % FSYNC_EVERY === FSYNC_EVERY - 1) await fsync()
  }
  await fsync()
}

/** One directory of some fs, as the namespace figure drives it. */
interface Namespace { create(name: string): unknown; stat(name: string): unknown; unlink(name: string): unknown; sync(): unknown }

/** The rates; `full` runs while the directory holds all the files. */
async function namespaceRates(ns: Namespace, files: number, full?: () => Promise<void>): Promise<NsRates> {
  const phase = async (op: (name: string) => unknown) => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < files; i++) await op(`f${i}`)
    await ns.sync()
    return files / (ms(t0) / 1000)
  }
  const create = await phase(ns.create)
  await full?.()
  return { create, stat: await phase(ns.stat), unlink: await phase(ns.unlink) }
}

/** What a checkpoint writes after one more create in a directory that holds `files` names, and the state it is part of. */
async function oneCreateCheckpoint(fsys: FileSystem, dir: string): Promise<{ bytes: number; stateBytes: number }> {
  const core = (fsys as unknown as { core: { wantCkpt: boolean; stateSegs: Map<SegKey, Segment> } }).core
  core.wantCkpt = true
  await fsys.sync()
  const m0 = fsys.journalStats().metaBytes
  await fsys.create(`${dir}/one-more`, 0o644, 0, 0)
  core.wantCkpt = true
  await fsys.sync()
  const bytes = fsys.journalStats().metaBytes - m0
  await fsys.unlink(`${dir}/one-more`)
  return { bytes, stateBytes: stateBytes(core.stateSegs) }
}

/** vsm's fs through its API: create makes the inode (no handle to close), getattr, unlink; sync commits. */
function fsNamespace(fsys: FileSystem, dir: string): Namespace {
  return {
    create: (n) => fsys.create(`${dir}/${n}`, 0o644, 0, 0),
    stat: (n) => fsys.getattr(`${dir}/${n}`),
    unlink: (n) => fsys.unlink(`${dir}/${n}`),
    sync: () => fsys.sync(),
  }
}

/** A directory of a mounted fs through Node's sync calls: open(O_CREAT|O_EXCL) + close, stat, unlink; fsync of the directory. */
function kernelNamespace(dir: string): Namespace {
  fs.mkdirSync(dir)
  const p = (n: string) => path.join(dir, n)
  return {
    create: (n) => fs.closeSync(fs.openSync(p(n), 'wx', 0o644)),
    stat: (n) => fs.statSync(p(n)),
    unlink: (n) => fs.unlinkSync(p(n)),
    sync: () => {
      const fd = fs.openSync(dir, 'r')
      try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
    },
  }
}

async function vsmFigures(dir: string, volBytes: number, diskMiB: number, writes: number, mountExtents: number, files: number) {
  const file = path.join(dir, 'vol0.img')
  const dev = await openDevice(file, { create: volBytes })
  await FileSystem.mkfs([dev])
  const fsys = await FileSystem.mount([dev])
  const ino = await fsys.create('/disk', 0o644, 0, 0)
  const chunk = randomBytes(MiB)
  for (let off = 0; off < diskMiB * MiB; off += MiB) await fsys.write(ino, chunk, off)
  await fsys.sync()
  const tally = { writes: 0 }
  const snap = async (name: string): Promise<SnapshotFigure> => {
    const m0 = fsys.journalStats().metaBytes
    const t0 = process.hrtime.bigint()
    await fsys.snapshot('/disk', name)
    return { ms: ms(t0), metaBytes: fsys.journalStats().metaBytes - m0, mapEntries: fsys.extentMap(ino).length, afterWrites: tally.writes }
  }
  const fresh = await snap('fresh')
  const fragmented: SnapshotFigure[] = []
  let metaInWrites = 0
  let failed: FsScaleBench['failed'] = null
  try {
    for (let phase = 1; phase <= 3; phase++) {
      const m0 = fsys.journalStats().metaBytes
      await randomWrites(writes / 3, diskMiB * MiB / BS, tally, (buf, off) => fsys.write(ino, buf, off), () => fsys.fsync(ino))
      metaInWrites += fsys.journalStats().metaBytes - m0
      fragmented.push(await snap(`frag${phase}`))
    }
  } catch (e) {
    failed = { afterWrites: tally.writes, error: (e as Error).message }
  }
  const oneBlock = await fsys.create('/fragmented', 0o644, 0, 0)
  await writeFragmentedFs(fsys, oneBlock, mountExtents)
  const beforeClose = fsys.journalStats().metaBytes
  // a full metadata area leaves the fs unusable: its close cannot checkpoint either
  await fsys.close().catch((e: Error) => { failed ??= { afterWrites: tally.writes, error: e.message } })
  const closeBytes = fsys.journalStats().metaBytes - beforeClose
  await dev.close()
  const { mount, namespace, oneCreate } = await remount(file, ino, oneBlock, files)
  const last = fragmented[fragmented.length - 1]
  return {
    done: tally.writes, failed, closeBytes, mount, namespace, oneCreate,
    snapshot: { fresh, fragmented, fragmentedVsFresh: last ? last.ms / fresh.ms : NaN },
    metaBytesPerWrite: metaInWrites / Math.max(1, tally.writes),
  }
}

/** Mean times of alloc() on a FreeMap of `runs` one-block free runs, each allocation given back before the next. */
function allocFigures(runs: number): FsScaleBench['alloc'] {
  const m = FreeMap.fromAllocated(0, 2 * runs, Array.from({ length: runs }, (_, i) => ({ start: 2 * i, len: 1 })), [])
  const mean = (n: number, one: () => void) => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) one()
    return ms(t0) / n
  }
  const giveBack = (got: { start: number; len: number }[] | null) => { for (const g of got!) m.release(g.start, g.len) }
  return {
    freeRuns: runs,
    mibMs: mean(50, () => giveBack(m.alloc(256, -1))),
    blockAtGoalUs: 1000 * mean(10_000, () => giveBack(m.alloc(1, 2 * Math.floor(Math.random() * runs) + 1))),
  }
}

/** The mount figure (in a process of its own), then the namespace figure on that fs (it holds the fragmented disk, as ext4's does). */
async function remount(file: string, ino: number, oneBlock: number, files: number) {
  const mount = mountInChild(file, ino, oneBlock)
  const dev = await openDevice(file)
  try {
    const fsys = await FileSystem.mount([dev])
    try {
      await fsys.mkdir('/ns', 0o755, 0, 0)
      let oneCreate = { bytes: 0, stateBytes: 0 }
      const namespace = await namespaceRates(fsNamespace(fsys, '/ns'), files, async () => { oneCreate = await oneCreateCheckpoint(fsys, '/ns') })
      return { mount, namespace, oneCreate }
    } finally {
      await fsys.close()
    }
  } finally {
    await dev.close()
  }
}

type MountFigure = FsScaleBench['mount']['vsm']

/**
 * Mount time, and the heap and RSS the mounted fs adds to a process that held nothing
 * else (the daemon's case; in this one the writes before leave their own): this file
 * run again as a child with --mount-figure.
 */
function mountInChild(file: string, ino: number, oneBlock: number): MountFigure {
  const out = execFileSync(process.execPath, ['--expose-gc', __filename, '--mount-figure', file, String(ino), String(oneBlock)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  return JSON.parse(out) as MountFigure
}

async function mountFigure(file: string, ino: number, oneBlock: number): Promise<MountFigure> {
  const dev = await openDevice(file)
  try {
    global.gc!()
    const { heapUsed: heap0, rss: rss0 } = process.memoryUsage()
    const t0 = process.hrtime.bigint()
    const fsys = await FileSystem.mount([dev])
    const mountMs = ms(t0)
    try {
      global.gc!()
      const { heapUsed, rss } = process.memoryUsage()
      return { ms: mountMs, heapMiB: (heapUsed - heap0) / MiB, rssMiB: (rss - rss0) / MiB, extents: fsys.extentMap(oneBlock).length, diskEntries: fsys.extentMap(ino).length }
    } finally {
      await fsys.close()
    }
  } finally {
    await dev.close()
  }
}

/** The same workload on ext4 on a loop file: `writes` as many as vsm took, a file of `extents` extents. */
async function ext4Figures(dir: string, volBytes: number, diskMiB: number, writes: number, extents: number, files: number) {
  const loop = Ext4Loop.create(path.join(dir, 'ext4.img'), volBytes, path.join(dir, 'ext4'))
  try {
    const fd = fs.openSync(path.join(loop.mnt, 'disk'), 'w')
    let b0: number
    try {
      const chunk = randomBytes(MiB)
      for (let off = 0; off < diskMiB * MiB; off += MiB) fs.writeSync(fd, chunk, 0, MiB, off)
      fs.fsyncSync(fd)
      // the fill's metadata (block bitmaps, extent tree, inode) on the device before counting
      execFileSync('sync', ['-f', loop.mnt])
      b0 = loop.bytesWritten()
      await randomWrites(writes, diskMiB * MiB / BS, { writes: 0 }, (buf, off) => fs.writeSync(fd, buf, 0, BS, off), () => fs.fsyncSync(fd))
    } finally {
      fs.closeSync(fd)
    }
    const b1 = loop.bytesWritten()
    loop.umount()
    const closeBytes = loop.bytesWritten() - b1
    loop.mount()
    writeFragmented(path.join(loop.mnt, 'fragmented'), extents)
    loop.umount()
    const mountMs = loop.mount()
    return {
      metaBytesPerWrite: (b1 - b0 - writes * BS) / Math.max(1, writes),
      closeBytes,
      mount: { ms: mountMs, extents },
      namespace: await namespaceRates(kernelNamespace(path.join(loop.mnt, 'ns')), files),
    }
  } finally {
    loop.destroy()
  }
}

/** A file of `extents` one-block extents: every other block written, so no two can merge. */
function writeFragmented(file: string, extents: number): void {
  const fd = fs.openSync(file, 'w')
  try {
    const buf = randomBytes(BS)
    for (let i = 0; i < extents; i++) fs.writeSync(fd, buf, 0, BS, 2 * i * BS)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/** writeFragmented through the fs's API, 64 writes in flight (no two of the file's blocks are adjacent: the order they land in cannot merge any). */
async function writeFragmentedFs(fsys: FileSystem, ino: number, extents: number): Promise<void> {
  const buf = randomBytes(BS)
  let next = 0
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (next < extents) await fsys.write(ino, buf, 2 * next++ * BS)
  }))
  await fsys.sync()
}

/** The namespace figure through vsm's FUSE view: a `vsm up` in a home of its own, stopped in `finally`. */
async function fuseNamespace(dir: string, files: number): Promise<NsRates> {
  const home = path.join(dir, 'vsm-home')
  fs.mkdirSync(home)
  try {
    execFileSync(VSM, ['up', '--home', home], { stdio: ['ignore', 'ignore', 'pipe'] })
    return await namespaceRates(kernelNamespace(path.join(home, 'mnt', 'ns')), files)
  } finally {
    try {
      execFileSync(VSM, ['down', '--home', home], { stdio: 'ignore' })
    } catch {
      // down refuses while anything is open; the bench has closed all it opened, so force it
      try { execFileSync(VSM, ['down', '--force', '--home', home], { stdio: 'ignore' }) } catch { /* it did not start */ }
    }
  }
}

export function describe(b: FsScaleBench): string[] {
  const f = (x: number, d = 1) => x.toFixed(d)
  const r = (x: number) => x.toFixed(x < 10 ? 2 : 0)
  const rates = (x: NsRates) => `${f(x.create, 0)} / ${f(x.stat, 0)} / ${f(x.unlink, 0)}`
  const ratios = (x: NsRates) => `${r(x.create)} / ${r(x.stat)} / ${r(x.unlink)}`
  const s = b.snapshot, n = b.namespace
  return [
    `fs scale, vsm's fs in-process vs ext4 on a loop file (${b.params.diskMiB} MiB disk on a ${b.params.volumeMiB} MiB volume, ` +
      `${b.params.writes} random 4 KiB writes, fsync every ${b.params.fsyncEvery}; ratios vsm/ext4):`,
    ...(b.failed ? [`  the fs refused to go on after ${b.failed.afterWrites} writes: ${b.failed.error}`] : []),
    `  snapshot create: fresh ${f(s.fresh.ms)} ms (${s.fresh.mapEntries} map entries, ${s.fresh.metaBytes} B metadata); ` +
      `after ${s.fragmented.map((x) => `${x.afterWrites} writes ${f(x.ms)} ms (${x.mapEntries} entries, ${x.metaBytes} B)`).join(', ')}; ` +
      `fragmented/fresh ${f(s.fragmentedVsFresh, 0)}x; ext4 n/a (no snapshots)`,
    `  metadata written per 4 KiB write: vsm ${f(b.metaBytesPerWrite.vsm, 0)} B (its journal, checkpoints, tree nodes), ` +
      `ext4 ${f(b.metaBytesPerWrite.ext4, 0)} B (loop device bytes minus data), ratio ${r(b.metaBytesPerWrite.ratio)}; ` +
      `at close: vsm's checkpoint ${f(b.closeBytes.vsm / MiB, 2)} MiB, ext4's umount ${f(b.closeBytes.ext4 / MiB, 2)} MiB, ratio ${r(b.closeBytes.ratio)}`,
    `  mount holding the fragmented disk and a file of ${b.mount.vsm.extents} one-block extents: vsm ${f(b.mount.vsm.ms)} ms ` +
      `(FileSystem.mount; the disk's map ${b.mount.vsm.diskEntries} entries, ${s.fragmented.length + 1} snapshots; heap +${f(b.mount.vsm.heapMiB)} MiB, RSS +${f(b.mount.vsm.rssMiB)} MiB), ` +
      `ext4 ${f(b.mount.ext4.ms)} ms (mount(8) run, ${b.mount.ext4.extents} one-block extents; kernel memory n/a), ratio ${r(b.mount.ratio)}`,
    `  ${b.params.files} files in one directory, create / stat / unlink per second: vsm in-process (its API, no kernel) ${rates(n.vsm)}; ` +
      `vsm FUSE view (vsm up, Node sync fs calls) ${rates(n.vsmFuse)}; ext4 (same calls) ${rates(n.ext4)}; ` +
      `ratios in-process/ext4 ${ratios(n.ratios.inProcess)}, FUSE/ext4 ${ratios(n.ratios.fuse)}; ` +
      `a checkpoint after one more create there writes ${f(n.oneCreate.bytes / 1024, 0)} KiB of a ${f(n.oneCreate.stateBytes / MiB, 1)} MiB state (vsm)`,
    `  allocation in free space of ${b.alloc.freeRuns} one-block runs: 1 MiB ${f(b.alloc.mibMs, 2)} ms, one block at its goal ` +
      `${f(b.alloc.blockAtGoalUs, 2)} µs (FreeMap in-process; ext4 n/a)`,
  ]
}

if (require.main === module && process.argv[2] === '--mount-figure') {
  const [file, ino, oneBlock] = process.argv.slice(3)
  mountFigure(file, Number(ino), Number(oneBlock)).then((m) => console.log(JSON.stringify(m)))
    .catch((e) => { console.error(e.message); process.exit(1) })
} else if (require.main === module) {
  fsScaleBench().then((b) => {
    if (process.argv.includes('--json')) console.log(JSON.stringify(b))
    else for (const l of describe(b)) console.log(l)
  }).catch((e) => { console.error(e.message); process.exit(1) })
}
