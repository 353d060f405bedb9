// The volume layer against device size (issue 13), a section of `npm run bench`
// (bench.ts calls volumeScaleBench), also runnable alone: node dist/bench/volume-scale.js
// [--json]. For each size in VOLUME_SCALE_SIZES (1G,64G,1T,8T): a first `vsm up` in a new
// home (BENCH_DIR, default /var/tmp) makes the default pool on two sparse devices of that
// size; the figures are its time, the daemon's resident memory after it (VmRSS) and at
// its peak (VmHWM), and the bytes the backing files hold afterwards (what creation wrote:
// labels, bitmaps, checksum tables, the fs). Then a third sparse device of that size
// replaces d1 (the rebuild's time and the bytes it copied: only what was ever written)
// and vol0 is scrubbed (time, bytes read), then vsm down. Times on a shared machine are
// noise; how the figures grow with size is the point.
import * as fs from 'fs'
import * as path from 'path'
import { execFileSync } from 'child_process'

const VSM = path.resolve(__dirname, '..', '..', 'bin', 'vsm')
const MiB = 1 << 20

export interface ScaleRow {
  size: string; upMs: number; rssMiB: number; peakMiB: number; heldMiB: number
  rebuildMs: number; rebuildCopiedMiB: number; scrubMs: number; scrubReadMiB: number
}

function status(pid: number, key: string): number {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

export async function volumeScaleBench(): Promise<ScaleRow[]> {
  const sizes = (process.env.VOLUME_SCALE_SIZES ?? '1G,64G,1T,8T').split(',')
  const rows: ScaleRow[] = []
  for (const size of sizes) {
    const home = fs.mkdtempSync(path.join(process.env.BENCH_DIR ?? '/var/tmp', 'vsm-scale-bench-'))
    try {
      const t0 = process.hrtime.bigint()
      execFileSync(VSM, ['up', '--home', home, '--device-size', size], { stdio: ['ignore', 'ignore', 'pipe'] })
      const upMs = Number(process.hrtime.bigint() - t0) / 1e6
      const pid = Number(fs.readFileSync(path.join(home, 'vsm.pid'), 'utf8'))
      let held = 0
      for (const d of ['d0', 'd1']) held += fs.statSync(path.join(home, 'devices', `${d}.img`)).blocks * 512
      const rssMiB = status(pid, 'VmRSS')
      const vsm = (...args: string[]) => execFileSync(VSM, ['--home', home, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      const since = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6
      vsm('device', 'add', 'n', path.join(home, 'n.img'), '--size', size)
      let t = process.hrtime.bigint()
      const job = /job (\d+)/.exec(vsm('volume', 'replace', 'vol0', 'd1', 'n'))![1]
      const rebuilt = JSON.parse(vsm('job', 'wait', job, '--json')).result
      const rebuildMs = since(t)
      t = process.hrtime.bigint()
      const scrubbed = JSON.parse(vsm('volume', 'scrub', 'vol0', '--json'))
      const scrubMs = since(t)
      rows.push({
        size, upMs, rssMiB, peakMiB: status(pid, 'VmHWM'), heldMiB: held / MiB,
        rebuildMs, rebuildCopiedMiB: rebuilt.copied / MiB, scrubMs, scrubReadMiB: scrubbed.checkedBytes / MiB,
      })
    } finally {
      try { execFileSync(VSM, ['down', '--home', home], { stdio: 'ignore' }) } catch { /* it did not start */ }
      fs.rmSync(home, { recursive: true, force: true })
    }
  }
  return rows
}

export function describe(rows: ScaleRow[]): string[] {
  return [
    'volume scale (first vsm up, default pool on two sparse devices of each size; then d1 replaced by a new device, then a scrub):',
    '  device   up ms   RSS MiB   peak MiB   held MiB   rebuild ms   copied MiB   scrub ms   read MiB',
    ...rows.map((r) => `  ${r.size.padEnd(6)} ${r.upMs.toFixed(0).padStart(7)} ${r.rssMiB.toFixed(0).padStart(9)} ${r.peakMiB.toFixed(0).padStart(10)} ${r.heldMiB.toFixed(1).padStart(10)}` +
      ` ${r.rebuildMs.toFixed(0).padStart(12)} ${r.rebuildCopiedMiB.toFixed(1).padStart(12)} ${r.scrubMs.toFixed(0).padStart(10)} ${r.scrubReadMiB.toFixed(1).padStart(10)}`),
  ]
}

if (require.main === module) {
  volumeScaleBench().then((rows) => {
    if (process.argv.includes('--json')) console.log(JSON.stringify(rows))
    else for (const l of describe(rows)) console.log(l)
  }).catch((e) => { console.error(e.message); process.exit(1) })
}
