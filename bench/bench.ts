// Runs the fio benchmark against targets that bench/run has set up (a raw file, the same
// kind of file through qemu-storage-daemon's FUSE export, a vsm disk served by each FUSE
// binding), prints one table of throughput/IOPS and ratios, and writes it to
// bench/results/latest.json.
//
// Usage: node dist/bench/bench.js --target raw=PATH --target qsd=PATH [--target vsm=PATH] [--target vsm-fuse-native=PATH]
//          [--skip vsm='why'] [--size 256M] [--runtime 10] [--rounds 1] [--out FILE] [--vsm-home DIR]
// With --vsm-home (the daemon serving the vsm target) it also times snapshot create on a
// 64 MiB disk and on a 4 GiB disk holding 1 GiB (ms, metadata bytes the fs wrote, bytes the
// daemon wrote), and measures the depth ratio: 4K random IOPS of the vsm target with 16
// snapshots against the same disk with none.
// Absolute numbers on shared machines are noisy; the ratios of one run are the figure, so
// each job runs on every target back to back rather than target after target. With
// --rounds N (bench/run: BENCH_ROUNDS) every job runs N times on each target, the rounds
// interleaved; the table gives each target's median and the ratios of those medians, and
// a line per job the range of the round-by-round ratios (qsd alone moved by ±30% between
// single runs on this machine, more than most changes being measured).
import { execFile } from 'child_process'
import { randomBytes } from 'crypto'
import { constants as fsc, promises as fsp, readFileSync } from 'fs'
import { performance } from 'perf_hooks'
import { ControlClient } from '../src/control/client'
import * as os from 'os'
import * as path from 'path'
import { VolumeBench, volumeBench } from './volume'
import { describe as describeFsScale, fsScaleBench } from './fs-scale'
import { describe as describeVolumeScale, volumeScaleBench } from './volume-scale'
import { describe as describeHsm, hsmBench } from './hsm'
import { describe as describeRepl, replBench } from './repl'

/** QD1 jobs use psync; the QD16 ones libaio (with O_DIRECT, so they really queue). */
interface Job { name: string; rw: string; bs: string; unit: 'MB/s' | 'IOPS'; iodepth?: number; fdatasync?: boolean }
const JOBS: Job[] = [
  { name: 'seq-write-1M', rw: 'write', bs: '1M', unit: 'MB/s' },
  { name: 'seq-read-1M', rw: 'read', bs: '1M', unit: 'MB/s' },
  { name: 'rand-read-4K', rw: 'randread', bs: '4k', unit: 'IOPS' },
  { name: 'rand-write-4K', rw: 'randwrite', bs: '4k', unit: 'IOPS' },
  { name: 'rand-write-4K-fdatasync', rw: 'randwrite', bs: '4k', unit: 'IOPS', fdatasync: true },
  { name: 'rand-read-4K-qd16', rw: 'randread', bs: '4k', unit: 'IOPS', iodepth: 16 },
  { name: 'rand-write-4K-qd16', rw: 'randwrite', bs: '4k', unit: 'IOPS', iodepth: 16 },
]
const TARGET_ORDER = ['raw', 'qsd', 'vsm', 'vsm-fuse-native']
/** vsm targets: the disk served by each FUSE binding. */
const isVsm = (n: string) => n === 'vsm' || n.startsWith('vsm-')

interface Target { name: string; path: string; status: 'ok' | 'skipped' | 'failed'; note?: string; direct: boolean }
interface Sample { value: number; latUsMean: number; latUsP99: number | null }

function parseArgs(argv: string[]) {
  const targets = new Map<string, Target>()
  let size = '256M', runtime = 10, rounds = 1, out = path.join(repoRoot(), 'bench', 'results', 'latest.json'), vsmHome = ''
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i], v = () => { const x = argv[++i]; if (x === undefined) throw new Error(`${a} needs a value`); return x }
    const kv = (s: string) => { const j = s.indexOf('='); if (j < 1) throw new Error(`${a} wants NAME=VALUE, got ${s}`); return [s.slice(0, j), s.slice(j + 1)] }
    if (a === '--target') { const [n, p] = kv(v()); targets.set(n, { name: n, path: p, status: 'ok', direct: true }) }
    else if (a === '--skip') { const [n, why] = kv(v()); targets.set(n, { name: n, path: '', status: 'skipped', note: why, direct: true }) }
    else if (a === '--size') size = v()
    else if (a === '--runtime') runtime = Number(v())
    else if (a === '--rounds') rounds = Number(v())
    else if (a === '--out') out = v()
    else if (a === '--vsm-home') vsmHome = v()
    else throw new Error(`unknown argument ${a}`)
  }
  if (!targets.size) throw new Error('no --target given (bench/run sets them up)')
  if (!(runtime > 0)) throw new Error('--runtime must be a positive number of seconds')
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a whole number from 1')
  return { targets, size, runtime, rounds, out, vsmHome }
}

function repoRoot(): string {
  // dist/bench/bench.js → two levels up; bench/bench.ts → one.
  const up = path.resolve(__dirname, '..')
  return path.basename(up) === 'dist' ? path.dirname(up) : up
}

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as any).code === 'number' ? (err as any).code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

/** fio's own message for a refused O_DIRECT is easy to miss among its JSON; check first. */
async function directRefused(file: string): Promise<string | null> {
  try {
    const fh = await fsp.open(file, fsc.O_RDWR | fsc.O_DIRECT)
    await fh.close()
    return null
  } catch (e) {
    const err = e as NodeJS.ErrnoException
    return err.code === 'EINVAL' ? `open(O_DIRECT) refused with EINVAL on ${file}` : `open(O_DIRECT) failed: ${err.message}`
  }
}

/** numberIos: instead of running for `runtime`, do exactly that many I/Os (the same offsets as a timed run's first ones). */
async function fio(t: Target, job: Job, size: string, runtime: number, numberIos = 0): Promise<Sample & { ios: number }> {
  const args = [
    `--name=${job.name}`, `--filename=${t.path}`, `--rw=${job.rw}`, `--bs=${job.bs}`, `--size=${size}`,
    `--ioengine=${job.iodepth ? 'libaio' : 'psync'}`, `--direct=${t.direct ? 1 : 0}`, `--iodepth=${job.iodepth ?? 1}`, '--numjobs=1',
    ...(job.fdatasync ? ['--fdatasync=1'] : []),
    ...(numberIos ? [`--number_ios=${numberIos}`] : ['--time_based', `--runtime=${runtime}`, '--ramp_time=1']),
    // Same offsets on every target, so random jobs compare like with like.
    '--randrepeat=1', '--random_generator=tausworthe64',
    '--output-format=json',
  ]
  const r = await run('fio', args)
  const jsonStart = r.stdout.indexOf('{')
  if (r.code !== 0 || jsonStart < 0) throw new Error(`fio ${job.name} on ${t.name} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-800)}`)
  const doc = JSON.parse(r.stdout.slice(jsonStart))
  const j = doc.jobs?.[0]
  if (!j) throw new Error(`fio ${job.name} on ${t.name}: no job in JSON output`)
  if (j.error) throw new Error(`fio ${job.name} on ${t.name}: error ${j.error}`)
  const side = job.rw.includes('read') ? j.read : j.write
  const clat = side.clat_ns ?? {}
  const p99 = clat.percentile?.['99.000000']
  return {
    ios: side.total_ios,
    value: job.unit === 'MB/s' ? side.bw_bytes / 1e6 : side.iops,
    latUsMean: (clat.mean ?? 0) / 1000,
    latUsP99: typeof p99 === 'number' ? p99 / 1000 : null,
  }
}

/** The sample with the median value (the lower middle one of an even count). */
function median(ss: Sample[]): Sample {
  return [...ss].sort((x, y) => x.value - y.value)[Math.floor((ss.length - 1) / 2)]
}

/** a/b of each round both completed. */
function roundRatios(a: Sample[] = [], b: Sample[] = []): number[] {
  return a.length === b.length ? a.map((x, i) => ratio(x.value, b[i].value)).filter((r): r is number => r !== null) : []
}

const fmt = (x: number | null | undefined, digits = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits))
const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined && b > 0 ? a / b : null)

async function main() {
  const { targets, size, runtime, rounds, out, vsmHome } = parseArgs(process.argv.slice(2))
  const names = [...TARGET_ORDER.filter((n) => targets.has(n)), ...[...targets.keys()].filter((n) => !TARGET_ORDER.includes(n))]
  const notes: string[] = []

  for (const t of targets.values()) {
    if (t.status !== 'ok') { notes.push(`${t.name}: skipped: ${t.note}`); continue }
    const refused = await directRefused(t.path)
    if (refused === null) continue
    // Buffered numbers would measure the page cache, not the target; only on request.
    if (process.env.BENCH_ALLOW_BUFFERED === '1') {
      t.direct = false
      t.note = `${refused}; ran with --direct=0 (BENCH_ALLOW_BUFFERED=1): these numbers include the page cache`
    } else {
      t.status = 'failed'
      t.note = `${refused}: O_DIRECT is not supported on this target; set BENCH_ALLOW_BUFFERED=1 to run it buffered`
    }
    notes.push(`${t.name}: ${t.note}`)
    console.error(`bench: ${t.name}: ${t.note}`)
  }

  /** Per job and target, the samples of the rounds it completed. */
  const samples: Record<string, Record<string, Sample[]>> = Object.fromEntries(JOBS.map((j) => [j.name, {}]))
  for (let round = 1; round <= rounds; round++) {
    for (const job of JOBS) {
      for (const n of names) {
        const t = targets.get(n)!
        if (t.status === 'skipped' || t.status === 'failed') continue
        process.stderr.write(`bench: ${job.name} on ${n} (${runtime}s${rounds > 1 ? `, round ${round} of ${rounds}` : ''})... `)
        try {
          const s = await fio(t, job, size, runtime)
          ;(samples[job.name][n] ??= []).push(s)
          process.stderr.write(`${fmt(s.value)} ${job.unit}\n`)
        } catch (e) {
          process.stderr.write('failed\n')
          const msg = (e as Error).message
          notes.push(`${n}: ${msg}`)
          console.error(`bench: ${msg}`)
        }
      }
    }
  }
  // a target that failed any round has no figure for that job: its other rounds are not a median of N
  const results: Record<string, Record<string, Sample>> = Object.fromEntries(JOBS.map((j) => [j.name,
    Object.fromEntries(Object.entries(samples[j.name]).filter(([, ss]) => ss.length === rounds).map(([n, ss]) => [n, median(ss)]))]))

  // every FUSE target against the raw file and every vsm binding against qsd
  const pairs: [string, string][] = [
    ...names.filter((n) => n !== 'raw').map((n) => [n, 'raw'] as [string, string]),
    ...names.filter(isVsm).map((n) => [n, 'qsd'] as [string, string]),
  ]
  const ratioCols = pairs.map(([a, b]) => `${a}/${b}`)
  const cols = [...names, ...ratioCols]
  const rows = JOBS.map((job) => {
    const r = results[job.name]
    const row: Record<string, string | number | null> = { job: job.name, unit: job.unit }
    for (const n of names) row[n] = r[n] ? Number(r[n].value.toFixed(2)) : null
    for (const [a, b] of pairs) {
      const x = ratio(r[a]?.value, r[b]?.value)
      row[`${a}/${b}`] = x === null ? null : Number(x.toFixed(3))
    }
    return row
  })

  const header = ['job', 'unit', ...cols]
  const lines = rows.map((row) => header.map((h) => {
    const v = row[h]
    if (typeof v === 'string') return v
    return h.includes('/') ? fmt(v, 2) : fmt(v, job2digits(row.unit as string))
  }))
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')
  console.log(`fio, O_DIRECT on every target; psync at QD1, libaio at QD16; size ${size}, ${runtime}s per job${rounds > 1 ? `, median of ${rounds} rounds` : ''}. ` +
    'qsd, vsm and vsm-fuse-native all keep their backing files in the host page cache')
  console.log(line(header))
  for (const l of lines) console.log(line(l))
  if (rounds > 1) {
    for (const job of JOBS) {
      const spread = pairs.map(([a, b]) => {
        const xs = roundRatios(samples[job.name][a], samples[job.name][b])
        return xs.length ? `${a}/${b} ${fmt(Math.min(...xs), 2)}-${fmt(Math.max(...xs), 2)}` : null
      }).filter((x) => x)
      console.log(`rounds of ${job.name} (ratio within each round, lowest-highest): ${spread.join(', ')}`)
    }
  }
  for (const n of notes) console.log(`note: ${n}`)

  let snapshots: Awaited<ReturnType<typeof snapshotBench>> | null = null
  const vsmTarget = targets.get('vsm')
  if (vsmHome && vsmTarget?.status === 'ok') {
    try {
      snapshots = await snapshotBench(vsmHome, vsmTarget, size, runtime)
      const c = snapshots.create
      console.log(`snapshot create: 64 MiB disk ${fmt(c.small.ms, 1)} ms, ${c.small.metaBytes} B fs metadata, ${c.small.daemonWriteBytes} B written by the daemon; ` +
        `4 GiB disk with 1 GiB data ${fmt(c.big.ms, 1)} ms, ${c.big.metaBytes} B fs metadata, ${c.big.daemonWriteBytes} B written by the daemon`)
      const d = snapshots.depth
      console.log(`depth (16 snapshots vs none): rand-read-4K ${fmt(d.randRead.ratio, 2)} (${fmt(d.randRead.none, 0)} -> ${fmt(d.randRead.deep, 0)} IOPS), ` +
        `rand-write-4K on private blocks ${fmt(d.randWriteSteady.ratio, 2)} (${fmt(d.randWriteSteady.none, 0)} -> ${fmt(d.randWriteSteady.deep, 0)} IOPS)`)
      console.log(`first writes to shared blocks (copy-on-write + fresh blocks): 16 snapshots vs 1 ${fmt(d.randWriteFirstCow.ratio, 2)} ` +
        `(${fmt(d.randWriteFirstCow.oneSnapshot, 0)} -> ${fmt(d.randWriteFirstCow.deep, 0)} IOPS), vs no snapshot ${fmt(d.randWriteFirstVsNone.ratio, 2)}`)
    } catch (e) {
      notes.push(`vsm snapshots: ${(e as Error).message}`)
      console.error(`bench: snapshot section failed: ${(e as Error).message}`)
    }
  }

  let volume: VolumeBench | null = null
  if (!process.env.BENCH_SKIP_VOLUME) {
    try {
      volume = await volumeBench()
      const r = volume.ratios
      console.log(`volume layouts (1 MiB sequential, in-process, vs one device): stripe of 2 write ${fmt(r.stripe2VsSingleWrite, 2)} read ${fmt(r.stripe2VsSingleRead, 2)}; ` +
        `mirror write ${fmt(r.mirrorWriteVsSingle, 2)}; raid5 write ${fmt(r.raid5WriteVsSingle, 2)}; rebuild vs backing sequential write ${fmt(r.rebuildVsBackingWrite, 2)}`)
    } catch (e) {
      notes.push(`volume layouts: ${(e as Error).message}`)
      console.error(`bench: volume section failed: ${(e as Error).message}`)
    }
  }

  /** A section with its own describe(): left out when env `skip` is set; its failure is a note, not the bench's end. */
  async function section<T>(skip: string, name: string, bench: () => Promise<T>, describe: (r: T) => string[]): Promise<T | null> {
    if (process.env[skip]) return null
    try {
      const r = await bench()
      for (const l of describe(r)) console.log(l)
      return r
    } catch (e) {
      notes.push(`${name}: ${(e as Error).message}`)
      console.error(`bench: ${name} section failed: ${(e as Error).message}`)
      return null
    }
  }
  const fsScale = await section('BENCH_SKIP_FS_SCALE', 'fs scale', fsScaleBench, describeFsScale)
  const volumeScale = await section('BENCH_SKIP_VOLUME_SCALE', 'volume scale', volumeScaleBench, describeVolumeScale)
  const hsm = await section('BENCH_SKIP_HSM', 'hsm', hsmBench, describeHsm)
  const repl = await section('BENCH_SKIP_REPL', 'replication', replBench, describeRepl)

  const latency: Record<string, Record<string, { meanUs: number; p99Us: number | null }>> = {}
  for (const [job, r] of Object.entries(results)) {
    latency[job] = {}
    for (const [n, s] of Object.entries(r)) latency[job][n] = { meanUs: Number(s.latUsMean.toFixed(1)), p99Us: s.latUsP99 === null ? null : Number(s.latUsP99.toFixed(1)) }
  }
  const doc = {
    date: new Date().toISOString(),
    host: { kernel: os.release(), cpus: os.cpus().length, memGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)) },
    params: { ioengine: 'psync at QD1, libaio at QD16', size, runtimeSec: runtime, rounds, jobs: JOBS },
    targets: Object.fromEntries([...targets.values()].map((t) => [t.name, { path: t.path, status: t.status, direct: t.direct, note: t.note ?? null }])),
    columns: cols,
    rows,
    latency,
    snapshots,
    volume,
    fsScale,
    hsm,
    repl,
    volumeScale,
    notes,
  }
  await fsp.mkdir(path.dirname(out), { recursive: true })
  await fsp.writeFile(out, JSON.stringify(doc, null, 2) + '\n')
  console.log(`wrote ${path.relative(process.cwd(), out) || out}`)
  // A target that was asked for and produced nothing is a failed bench, not a quiet gap.
  const broken = [...targets.values()].some((t) => t.status === 'failed') ||
    names.some((n) => targets.get(n)!.status === 'ok' && JOBS.some((j) => !results[j.name][n]))
  process.exitCode = broken ? 1 : 0
}

/** Bytes this process (the vsm daemon) has passed to write(2) and friends. */
function wchar(pid: number): number {
  const m = /^wchar:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))
  return m ? Number(m[1]) : NaN
}

async function fill(file: string, bytes: number) {
  const fh = await fsp.open(file, 'r+')
  try {
    const chunk = randomBytes(4 << 20)
    for (let off = 0; off < bytes; off += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, bytes - off), off)
    await fh.sync()
  } finally { await fh.close() }
}

/** Snapshot create cost by disk size, and 4K random IOPS with 16 snapshots against none. */
async function snapshotBench(home: string, vsm: Target, size: string, runtime: number) {
  // A connection per command: the daemon closes one that stays idle for 60 s, which the
  // fio runs between commands here outlast.
  const sock = path.join(home, 'vsm.sock')
  const c = {
    call: async (name: string, args?: Record<string, unknown>) => {
      const cc = await ControlClient.connect(sock)
      try { return await cc.call(name, args) } finally { cc.close() }
    },
  }
  const pid = Number(readFileSync(path.join(home, 'vsm.pid'), 'utf8'))
  const mount = path.join(home, 'mnt')
  const timed = async (disk: string, bytes: number, data: number) => {
    await c.call('disk.create', { path: disk, size: bytes })
    process.stderr.write(`bench: snapshot of a ${bytes / 2 ** 20} MiB disk holding ${data / 2 ** 20} MiB... `)
    await fill(path.join(mount, disk), data)
    const meta0 = (await c.call('fs.stat')).journal.metaBytes, w0 = wchar(pid)
    const conn = await ControlClient.connect(sock)
    const t0 = performance.now()
    try { await conn.call('snapshot.create', { path: disk, name: 'bench' }) } finally { conn.close() }
    const ms = performance.now() - t0
    const r = { diskBytes: bytes, dataBytes: data, ms: Number(ms.toFixed(2)), metaBytes: (await c.call('fs.stat')).journal.metaBytes - meta0, daemonWriteBytes: wchar(pid) - w0 }
    process.stderr.write(`${r.ms} ms\n`)
    await c.call('disk.delete', { path: disk, recursive: true })
    return r
  }
  const create = { small: await timed('snap-64m.img', 64 * 2 ** 20, 64 * 2 ** 20), big: await timed('snap-4g.img', 4096 * 2 ** 20, 1024 * 2 ** 20) }

  // Depth: a disk with 16 snapshots against the same kind of disk with none (the vsm
  // target) and with one. Copying a shared block on its first write is the price of any
  // snapshot, deep or not, and the first write of a block also allocates it in the
  // sparse backing files; so the write figures are (a) the first pass against the same
  // pass with one snapshot, and (b) a second pass over exactly the same offsets (blocks
  // now private) against the disk with none: the steady-state hot path.
  const [rr, rw] = [JOBS.find((j) => j.name === 'rand-read-4K')!, JOBS.find((j) => j.name === 'rand-write-4K')!]
  const iops = async (t: Target, job: Job, label: string, numberIos = 0) => {
    process.stderr.write(`bench: ${job.name} on ${label}${numberIos ? ` (${numberIos} I/Os)` : ` (${runtime}s)`}... `)
    const s = await fio(t, job, size, runtime, numberIos)
    process.stderr.write(`${fmt(s.value)} IOPS\n`)
    return s
  }
  const snapDisk = async (name: string, snaps: number) => {
    await c.call('disk.create', { path: name, size: (await fsp.stat(vsm.path)).size })
    const file = path.join(mount, name)
    await fill(file, (await fsp.stat(file)).size)
    // each snapshot after some scattered writes, so they differ and the disk's extents
    // are a mix of shared and copied blocks
    const fh = await fsp.open(file, 'r+')
    const blocks = Math.floor((await fh.stat()).size / 4096)
    for (let k = 0; k < snaps; k++) {
      for (let i = 0; i < 256; i++) await fh.write(randomBytes(4096), 0, 4096, Math.floor(Math.random() * blocks) * 4096)
      await fh.sync()
      await c.call('snapshot.create', { path: name, name: `depth${k}` })
    }
    await fh.close()
    return { ...vsm, path: file }
  }
  // none and deep alternate, twice each, so drift on a shared machine hits both alike
  const alternate = async (job: Job, deep: Target, numberIos = 0) => {
    const sum = { none: 0, deep: 0 }
    for (let k = 0; k < 2; k++) {
      sum.none += (await iops(vsm, job, 'vsm, no snapshot', numberIos)).value
      sum.deep += (await iops(deep, job, 'vsm, 16 snapshots', numberIos)).value
    }
    return { none: sum.none / 2, deep: sum.deep / 2 }
  }
  const one = await snapDisk('depth1.img', 1)
  const oneCow = (await iops(one, rw, 'vsm, 1 snapshot, first writes')).value
  await c.call('disk.delete', { path: 'depth1.img', recursive: true })
  const deep = await snapDisk('depth16.img', 16)
  const read = await alternate(rr, deep)
  const cow = await iops(deep, rw, 'vsm, 16 snapshots, first writes')
  const noneWrite = (await iops(vsm, rw, 'vsm, no snapshot')).value
  // the same offsets again: on the deep disk every one of them is private now
  const steady = await alternate(rw, deep, cow.ios)
  await c.call('disk.delete', { path: 'depth16.img', recursive: true })
  const r3 = (x: number) => Number(x.toFixed(3))
  return {
    create,
    depth: {
      snapshots: 16,
      randRead: { none: read.none, deep: read.deep, ratio: r3(read.deep / read.none) },
      randWriteSteady: { none: steady.none, deep: steady.deep, ratio: r3(steady.deep / steady.none) },
      randWriteFirstCow: { oneSnapshot: oneCow, deep: cow.value, ratio: r3(cow.value / oneCow) },
      randWriteFirstVsNone: { none: noneWrite, deep: cow.value, ratio: r3(cow.value / noneWrite) },
    },
  }
}

function job2digits(unit: string) { return unit === 'IOPS' ? 0 : 1 }

main().catch((e) => { console.error(`bench: ${(e as Error).message}`); process.exit(2) })
