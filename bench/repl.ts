// The replicator's figures (issue 11), a section of `npm run bench` (bench.ts calls
// replBench), also runnable alone: node dist/bench/repl.js [--json]. Two homes on this
// machine and a real OpenSSH sshd on 127.0.0.1 (test/helpers/sshd), through the CLI as
// an operator would: a primary with one disk and an async group to a secondary.
// 1. Lag under a steady load: 64 KiB random writes at REPL_BENCH_RATE (8M) per second,
//    an fdatasync every 16, for REPL_BENCH_SECONDS (15); the group's lagBytes and
//    lagSeconds sampled every 250 ms (median, p99, max), then how long the secondary takes
//    to hold everything once the load stops.
// 2. 4 KiB random writes each followed by fdatasync (QD1) for REPL_BENCH_SECONDS, in async
//    mode and then in sync mode (vsm repl set): IOPS and mean latency side by side. The
//    link is loopback: the sync figure is the cost of the round trip through ssh and the
//    secondary's durable apply, not of a network.
import { execFile } from 'child_process'
import { mkdtempSync, rmSync } from 'fs'
import { join, resolve } from 'path'
import { until } from '../test/helpers/repl-sites'
import { startSshd, type Sshd } from '../test/helpers/sshd'

const VSM = resolve(__dirname, '..', '..', 'bin', 'vsm')

export interface ReplBench {
  params: { rate: string; seconds: number }
  lag: { samples: number; bytes: { median: number; p99: number; max: number }; seconds: { median: number; p99: number; max: number }; drainSeconds: number; writtenMB: number }
  fdatasync: { async: { iops: number; meanUs: number }; sync: { iops: number; meanUs: number }; syncVsAsync: number }
}

function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((res, rej) => execFile(cmd, args, { maxBuffer: 64 << 20 }, (e, out, err) => (e ? rej(new Error(`${cmd} ${args.slice(0, 3).join(' ')}: ${err || e.message}`)) : res(out))))
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const pct = (xs: number[], p: number) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? 0

export async function replBench(): Promise<ReplBench> {
  const rate = process.env.REPL_BENCH_RATE ?? '8M'
  const seconds = Number(process.env.REPL_BENCH_SECONDS ?? 15)
  const dir = mkdtempSync(join(process.env.BENCH_DIR ?? '/var/tmp', 'vsm-repl-bench-'))
  const primary = join(dir, 'primary'), secondary = join(dir, 'secondary')
  const vsm = (home: string, ...a: string[]) => sh(VSM, [...a, '--home', home])
  const json = async (home: string, ...a: string[]) => JSON.parse(await vsm(home, ...a, '--json'))
  const status = async () => (await json(primary, 'repl', 'status', 'g'))[0]
  let sshd: Sshd | null = null
  const up: string[] = []
  try {
    sshd = await startSshd(dir)
    await vsm(secondary, 'up', '--secondary', '--device-size', '2G')
    up.push(secondary)
    await vsm(primary, 'up', '--device-size', '512M')
    up.push(primary)
    await vsm(primary, 'device', 'add', 'e0', join(dir, 'e0.img'), '--size', '128M')
    await vsm(primary, 'disk', 'create', 'd.img', '--size', '256M')
    await vsm(primary, 'repl', 'create', 'g', '--target', `ssh://root@127.0.0.1:${sshd.port}${secondary}`, '--identity', sshd.identity,
      '--known-hosts', sshd.knownHosts, '--remote-vsm', VSM, '--mode', 'async', '--log-size', '64M')
    /** Seconds until the secondary holds everything. */
    const caughtUp = async (ms: number) => {
      const t0 = Date.now()
      await until([secondary, primary], 'the secondary to catch up', status, (s) => s.state === 'replicating' && s.lagBytes === 0, ms)
      return (Date.now() - t0) / 1000
    }
    await caughtUp(120_000)
    const img = join(primary, 'mnt', 'd.img')
    const fio = async (...a: string[]) => JSON.parse(await sh('fio', ['--name=r', `--filename=${img}`, '--size=256M', '--direct=1', '--ioengine=psync',
      '--time_based', `--runtime=${seconds}`, '--randrepeat=1', '--output-format=json', ...a])).jobs[0]

    const load = fio('--rw=randwrite', '--bs=64k', `--rate=${rate}`, '--fdatasync=16')
    const lagBytes: number[] = [], lagSeconds: number[] = []
    let running = true
    void load.finally(() => { running = false })
    while (running) {
      const s = await status()
      lagBytes.push(s.lagBytes)
      lagSeconds.push(s.lagSeconds)
      await sleep(250)
    }
    const written = (await load).write
    const drainSeconds = await caughtUp(300_000)

    const qd1 = ['--rw=randwrite', '--bs=4k', '--fdatasync=1']
    const a = await fio(...qd1)
    await vsm(primary, 'repl', 'set', 'g', '--mode', 'sync')
    const s = await fio(...qd1)
    // a write's latency and its fdatasync's, which fio counts apart
    const side = (j: { write: { iops: number; clat_ns: { mean: number } }; sync?: { lat_ns?: { mean: number } } }) => ({ iops: j.write.iops, meanUs: (j.write.clat_ns.mean + (j.sync?.lat_ns?.mean ?? 0)) / 1000 })
    return {
      params: { rate, seconds },
      lag: {
        samples: lagBytes.length,
        bytes: { median: pct(lagBytes, 0.5), p99: pct(lagBytes, 0.99), max: Math.max(0, ...lagBytes) },
        seconds: { median: pct(lagSeconds, 0.5), p99: pct(lagSeconds, 0.99), max: Math.max(0, ...lagSeconds) },
        drainSeconds,
        writtenMB: written.io_bytes / 1e6,
      },
      fdatasync: { async: side(a), sync: side(s), syncVsAsync: s.write.iops / a.write.iops },
    }
  } finally {
    for (const h of up.reverse()) await vsm(h, 'down', '--force').catch(() => undefined)
    sshd?.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

export function describe(b: ReplBench): string[] {
  const mb = (x: number) => (x / 1e6).toFixed(1)
  return [
    `replication (two homes, real sshd on loopback, async group; ${b.params.rate}/s of 64 KiB writes with an fdatasync every 16 for ${b.params.seconds} s, ${b.lag.writtenMB.toFixed(0)} MB):`,
    `  lag median ${mb(b.lag.bytes.median)} MB / ${b.lag.seconds.median.toFixed(2)} s, p99 ${mb(b.lag.bytes.p99)} MB / ${b.lag.seconds.p99.toFixed(2)} s, max ${mb(b.lag.bytes.max)} MB / ${b.lag.seconds.max.toFixed(2)} s over ${b.lag.samples} samples; caught up ${b.lag.drainSeconds.toFixed(1)} s after the load stopped`,
    `  4 KiB write + fdatasync QD1: async ${b.fdatasync.async.iops.toFixed(0)} IOPS (${b.fdatasync.async.meanUs.toFixed(0)} us), sync ${b.fdatasync.sync.iops.toFixed(0)} IOPS (${b.fdatasync.sync.meanUs.toFixed(0)} us): sync/async ${b.fdatasync.syncVsAsync.toFixed(2)}`,
  ]
}

if (require.main === module) {
  replBench().then((b) => {
    if (process.argv.includes('--json')) console.log(JSON.stringify(b))
    else for (const l of describe(b)) console.log(l)
  }, (e) => { console.error(`repl bench: ${(e as Error).message}`); process.exitCode = 1 })
}
