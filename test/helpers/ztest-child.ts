// The workload of the volume ztest (test/volume-ztest.test.ts), run as a child process
// so the parent's SIGKILL is a real kill -9. It opens the pool, reads every volume whole
// into <work>/snap-<vol>.bin for the parent to check, then writes seeded random blocks
// and flushes, reporting on stdout (synchronous on a pipe) each write before it is sent
// ("try") and the writes a resolved flush made durable ("ack"), while it runs random pool
// operations: offline/online, replace, grow/move/relayout with rates, scrub, and bytes
// flipped in one member's backing file. In "final" mode it waits for every job instead,
// scrubs each redundant volume and reports, and closes the pool.
import { promises as fsp } from 'fs'
import * as path from 'path'
import { Pool } from '../../src/volume/pool'
import type { BlockDev } from '../../src/block/blockdev'
import type { LayoutKind, PoolConfig, VolumeConfig } from '../../src/volume/config'

export const MiB = 1 << 20
export const LAYOUTS: LayoutKind[] = ['mirror', 'raid10', 'raid5', 'concat', 'stripe']
export const REDUNDANT = new Set<LayoutKind>(['mirror', 'raid10', 'raid5'])

/** A small seeded PRNG (mulberry32): the parent and the child derive the same numbers from a seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The contents of a write: len bytes derived from its seed. */
export function blockData(seed: number, len: number): Buffer {
  const out = Buffer.alloc(len + 3)
  let a = seed >>> 0
  for (let i = 0; i < len; i += 4) {
    a = (Math.imul(a ^ (a >>> 15), 0x2c1b3c6d) + 0x6d2b79f5 + i) >>> 0
    out.writeUInt32LE(a, i)
  }
  return out.subarray(0, len)
}

/** Devices able to hold a layout of n members, and how many a layout takes. */
export function membersFor(layout: LayoutKind, rnd: () => number): number {
  if (layout === 'raid10') return 4
  if (layout === 'raid5') return 3 + Math.floor(rnd() * 2)
  if (layout === 'mirror') return 2 + Math.floor(rnd() * 2)
  return (layout === 'stripe' ? 2 : 1) + Math.floor(rnd() * 2)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const out = (s: string) => process.stdout.write(s + '\n')
const errText = (e: unknown) => `${(e as { code?: string }).code ?? 'ERR'} ${(e as Error).message}`.split('\n')[0]

async function snapshot(pool: Pool, work: string, round: number, tag: string): Promise<void> {
  for (const v of pool.listVolumes()) {
    const dev = await pool.openVolume(v.name)
    const buf = Buffer.alloc(dev.size)
    for (let o = 0; o < dev.size; o += MiB) await dev.read(buf.subarray(o, Math.min(dev.size, o + MiB)), o)
    const file = path.join(work, `snap-${round}-${tag}-${v.name}.bin`)
    await fsp.writeFile(file, buf)
    out(`snap ${tag} ${v.name} ${dev.size} ${pool.volumeInfo(v.name).size} ${file}`)
  }
}

/** One writer per volume: up to 4 writes in flight, never overlapping, so issue order is landing order per byte. */
async function writer(name: string, dev: BlockDev, rnd: () => number, ids: { next: number }, stop: { now: boolean }) {
  const inflight = new Map<number, [number, number]>()
  const done: number[] = []
  let sinceFlush = 0
  const pending = new Set<Promise<void>>()
  while (!stop.now) {
    if (pending.size >= 4) { await Promise.race(pending); continue }
    const size = dev.size
    const len = rnd() < 0.5 ? 4096 * (1 + Math.floor(rnd() * 16)) : 1 + Math.floor(rnd() * 70000)
    let off = rnd() < 0.5 ? Math.floor(rnd() * (size / 4096)) * 4096 : Math.floor(rnd() * size)
    off = Math.min(off, size - len)
    if ([...inflight.values()].some(([a, b]) => off < b && a < off + len)) { await sleep(0); continue }
    const id = ids.next++
    const seed = Math.floor(rnd() * 2 ** 31)
    inflight.set(id, [off, off + len])
    out(`try ${id} ${name} ${off} ${len} ${seed}`)
    const p = dev.write(blockData(seed, len), off).then(() => { done.push(id) }, (e) => {
      out(`error write ${name} @${off}+${len}: ${errText(e)}`)
      process.exit(3)
    }).finally(() => { inflight.delete(id); pending.delete(p) })
    pending.add(p)
    if (++sinceFlush >= 1 + Math.floor(rnd() * 12)) {
      sinceFlush = 0
      const flushed = done.splice(0)
      await dev.flush().catch((e) => { out(`error flush ${name}: ${errText(e)}`); process.exit(3) })
      if (flushed.length) out(`ack ${flushed.join(' ')}`)
    }
    await sleep(rnd() * 4)
  }
  await Promise.all(pending)
}

/** Member i's data bytes in its device file: [start, end). */
function dataArea(cfg: PoolConfig, v: VolumeConfig, i: number): { file: string; start: number; end: number } {
  const m = v.members[i]
  const d = cfg.devices.find((x) => x.id === m.device)!
  return { file: d.path, start: d.dataOffset + m.offset + (v.journal ?? 0), end: d.dataOffset + m.offset + m.length - (v.checksums ?? 0) }
}

/** Pick and run one pool operation; returns a line describing it. */
async function operate(pool: Pool, work: string, rnd: () => number, note: { op: string }): Promise<string> {
  const cfg = pool.config
  const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)]
  const devName = (id: string) => cfg.devices.find((d) => d.id === id)!.name
  const vols = cfg.volumes
  const v = pick(vols)
  const online = cfg.devices.filter((d) => d.state === 'online').map((d) => d.name)
  const used = [...new Set(v.members.map((m) => devName(m.device)))]
  const free = online.filter((n) => !used.includes(n))
  const rate = () => (rnd() < 0.3 ? 0 : (2 + Math.floor(rnd() * 6)) * MiB)
  const act = async (desc: string, fn: () => Promise<unknown>) => { note.op = desc; await fn(); return desc }
  const down = cfg.devices.filter((d) => d.state === 'offline' || d.state === 'failed').map((d) => d.name)
  const r = rnd()
  // during a reshape these are refused (EBUSY, logged as the op's result) or go ahead on
  // volumes it does not touch; either way every acknowledged byte is checked at reopen
  if (r < 0.24) {
    if (down.length && (r < 0.1 || r >= 0.14)) { const d = pick(down); return act(`online ${d}`, () => pool.onlineDevice(d)) }
    const d = pick(online)
    return act(`offline ${d}`, () => pool.offlineDevice(d))
  }
  if (r < 0.38) {
    if (!free.length) return `replace ${v.name} (no free device)`
    const from = pick(used), to = pick(free), rt = rate()
    return act(`replace ${v.name} ${from} -> ${to} rate ${rt}`, () => pool.replaceMember(v.name, from, to, { rate: rt || undefined }))
  }
  if (r < 0.62) {
    const rt = rate() || 4 * MiB
    const k = rnd()
    if (k < 0.3) {
      const size = v.size + (1 + Math.floor(rnd() * 4)) * MiB
      return act(`grow ${v.name} to ${size} rate ${rt}`, () => pool.reshapeVolume(v.name, 'grow', { size, rate: rt }))
    }
    if (k < 0.5) {
      if (!free.length) return `move ${v.name} (no free device)`
      const from = pick(used), to = pick(free)
      return act(`move ${v.name} ${from} -> ${to} rate ${rt}`, () => pool.reshapeVolume(v.name, 'move', { from, to, rate: rt }))
    }
    const layout = pick(LAYOUTS)
    const n = Math.min(membersFor(layout, rnd), online.length)
    const devices = [...online].sort(() => rnd() - 0.5).slice(0, n)
    return act(`relayout ${v.name} to ${layout} on ${devices.join(',')} rate ${rt}`, () => pool.reshapeVolume(v.name, 'relayout', { layout, devices, rate: rt }))
  }
  if (r < 0.8) {
    if (!REDUNDANT.has(v.layout)) return `scrub ${v.name} (not redundant)`
    note.op = `scrub ${v.name}`
    const { job } = await pool.scrubVolume(v.name)
    const res = (await pool.jobs.wait(job))
    if (res.error) return `scrub ${v.name}: ${res.error.code} ${res.error.message}`
    const rep = res.result as { unrecoverable: unknown[]; repaired: unknown[] }
    if (rep.unrecoverable.length) { out(`error scrub ${v.name}: ${JSON.stringify(rep)}`); process.exit(3) }
    return `scrub ${v.name}: repaired ${rep.repaired.length}`
  }
  return corrupt(pool, work, v, rnd)
}

/**
 * Flip bytes in one member of a healthy, quiet redundant volume, then scrub it. A marker
 * file says a flip may be unrepaired, so the next child scrubs before anything can
 * take away the good copy (two faults are more than the layout promises to survive).
 */
async function corrupt(pool: Pool, work: string, v: VolumeConfig, rnd: () => number): Promise<string> {
  const info = pool.volumeInfo(v.name)
  if (!REDUNDANT.has(v.layout) || info.state !== 'healthy' || info.rebuild || v.reshape || pool.jobs.list().some((j) => j.state !== 'concluded')) {
    return `corrupt ${v.name} (not a healthy quiet redundant volume)`
  }
  const i = Math.floor(rnd() * v.members.length)
  const { file, start, end } = dataArea(pool.config, v, i)
  await fsp.writeFile(path.join(work, 'corrupt-pending'), v.name)
  const fh = await fsp.open(file, 'r+')
  const offs: number[] = []
  try {
    for (let k = 0; k < 1 + Math.floor(rnd() * 4); k++) {
      const at = start + Math.floor(rnd() * (end - start))
      const b = Buffer.alloc(1)
      await fh.read(b, 0, 1, at)
      b[0] ^= 1 + Math.floor(rnd() * 255)
      await fh.write(b, 0, 1, at)
      offs.push(at - start)
    }
    await fh.sync()
  } finally { await fh.close() }
  out(`op corrupt ${v.name} member ${i} at ${offs.join(',')}`)
  return scrubPending(pool, work)
}

async function scrubPending(pool: Pool, work: string): Promise<string> {
  const marker = path.join(work, 'corrupt-pending')
  const name = await fsp.readFile(marker, 'utf8').catch(() => null)
  if (name === null) return 'no pending corruption'
  const { job } = await pool.scrubVolume(name)
  const res = await pool.jobs.wait(job)
  if (res.error) { out(`error scrub ${name}: ${res.error.code} ${res.error.message}`); process.exit(3) }
  const rep = res.result as { unrecoverable: unknown[]; repaired: unknown[] }
  if (rep.unrecoverable.length) { out(`error scrub ${name}: unrecoverable ${JSON.stringify(rep.unrecoverable)}`); process.exit(3) }
  await fsp.unlink(marker)
  return `scrub ${name} after corruption: repaired ${rep.repaired.length}`
}

function reportFailedJobs(pool: Pool, seen: Set<number>): void {
  for (const j of pool.jobs.list()) {
    if (j.state !== 'concluded' || !j.error || seen.has(j.id)) continue
    seen.add(j.id)
    out(`joberr ${j.kind} ${j.error.code} ${j.error.message.split('\n')[0]}`)
  }
}

async function main() {
  const [home, work, seedArg, roundArg, mode] = process.argv.slice(2)
  const round = Number(roundArg)
  const rnd = prng(Number(seedArg))
  const pool = await Pool.open(home)
  const failedJobs = new Set<number>()
  if (mode === 'final') {
    await snapshot(pool, work, round, 'open')
    out(`op ${await scrubPending(pool, work)}`)
    for (const d of pool.listDevices()) if (d.state === 'offline' || d.state === 'failed') { await pool.onlineDevice(d.name); out(`op online ${d.name}`) }
    await pool.jobs.waitAll()
    reportFailedJobs(pool, failedJobs)
    for (const v of pool.listVolumes()) {
      out(`state ${v.name} ${v.layout} ${v.state} ${v.reshape ? 'reshape-pending' : 'settled'}`)
      if (!REDUNDANT.has(v.layout)) continue
      const { job } = await pool.scrubVolume(v.name)
      const res = await pool.jobs.wait(job)
      out(`scrubbed ${v.name} ${JSON.stringify(res.error ?? res.result)}`)
    }
    await snapshot(pool, work, round, 'final')
    await pool.close()
    out('done')
    return
  }
  await snapshot(pool, work, round, 'open')
  out('ready')
  const stop = { now: false }
  const ids = { next: round * 1_000_000 }
  const writers = pool.listVolumes().map(async (v) => writer(v.name, await pool.openVolume(v.name), prng(Math.floor(rnd() * 2 ** 31)), ids, stop))
  out(`op ${await scrubPending(pool, work)}`)
  void Promise.all(writers)
  for (;;) {
    await sleep(rnd() * 400)
    const note = { op: '' }
    let line: string
    try { line = await operate(pool, work, rnd, note) } catch (e) { line = `${note.op} -> ${errText(e)}` }
    out(`op ${line}`)
    reportFailedJobs(pool, failedJobs)
  }
}

if (require.main === module) {
  main().catch((e) => { out(`error ${errText(e)}`); process.exit(3) })
}
