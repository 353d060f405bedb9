// fs crash tests, ztest style: each iteration runs a random mix of namespace ops,
// writes (some concurrent), truncates, xattrs, fsync/sync and (two volumes) ranges
// relocated to the other volume under concurrent writes, on a volume wrapped
// in FaultDev(stopAfterWrites=N, tearBytes), so the "process" dies at a random
// write. The underlying device is then mounted fresh: check() must be clean,
// the namespace must equal the last synced state or a later one, and every byte
// acknowledged by a resolved fsync/sync must be there.
//
// Two backends: a file-backed volume (everything that reached the file survives)
// and an in-memory volume modelling a volatile write cache (a crash keeps a random
// subset of the writes since the last flush, some torn).
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as path from 'path'
import { rng } from './helpers/conformance'
import { FileDev, tempDir } from './helpers/fs-filedev'
import { MemDev } from './helpers/fs-memdev'
import { FaultDev } from '../src/block/fault'
import { FileSystem } from '../src/fs'
import { SEGMENTS } from '../src/fs/state'
import { BlockDev, VsmError } from '../src/block/blockdev'

const MiB = 1 << 20
const VOL = 32 * MiB
const ITERS = Number(process.env.VSM_FS_CRASH_ITERS || 150)

type MNode = { dir: true; x: Map<string, string> } | { dir: false; ino: number; data: Buffer; x: Map<string, string> }
type NS = Map<string, MNode>
type LogEnt = { ino: number; kind: 'w'; off: number; len: number } | { ino: number; kind: 't'; size: number }

function cloneNs(ns: NS): NS {
  const out: NS = new Map()
  for (const [p, n] of ns) out.set(p, n.dir ? { dir: true, x: new Map(n.x) } : { dir: false, ino: n.ino, data: Buffer.from(n.data), x: new Map(n.x) })
  return out
}

function fill(r: (n: number) => number, len: number, tag: number): Buffer {
  const b = Buffer.alloc(len)
  let v = (tag * 2654435761) >>> 0
  for (let i = 0; i < len; i++) { v = (v * 1103515245 + 12345) >>> 0; b[i] = (v >>> 16) & 0xff }
  if (r(4) === 0) b.fill(0, 0, Math.min(len, 100)) // some zeros too
  return b
}

async function readNs(fs: FileSystem) {
  const out = new Map<string, { dir: boolean; ino: number; size: number; x: Map<string, string> }>()
  const walk = (p: string) => {
    for (const name of fs.readdir(p)) {
      const full = p === '/' ? `/${name}` : `${p}/${name}`
      const st = fs.getattr(full)
      const dir = (st.mode & 0o170000) === 0o040000
      const x = new Map(fs.listxattr(full).map((k) => [k, fs.getxattr(full, k)!.toString()]))
      out.set(full, { dir, ino: st.ino, size: st.size, x })
      if (dir) walk(full)
    }
  }
  walk('/')
  return out
}

/** Volume 1 of a two-volume fs: dies with volume 0 (one process, one crash). */
function diesWith(fdev: FaultDev, inner: BlockDev): BlockDev {
  const gate = () => { if (fdev.stopped) throw new VsmError('EIO', 'injected: process died') }
  return {
    size: inner.size,
    read: async (b, o) => { gate(); return inner.read(b, o) },
    write: async (b, o) => { gate(); return inner.write(b, o) },
    flush: async () => { gate(); return inner.flush() },
    discard: async (o, l) => { gate(); return inner.discard!(o, l) },
    close: () => inner.close(),
  }
}

async function runIteration(seed: number, backend: 'mem' | 'mem2' | 'file', tmp: string) {
  const r = rng(seed)
  let base: BlockDev
  const file = path.join(tmp, `vol-${seed}`)
  if (backend === 'file') base = await FileDev.create(file, VOL)
  else base = new MemDev(VOL)
  const base1 = backend === 'mem2' ? new MemDev(VOL) : null
  await FileSystem.mkfs(base1 ? [base, base1] : [base], { journalBytes: (r(2) ? 16 : 64) * 1024 })
  let stopAfter = r(3) === 0 ? r(40) : r(600)
  if (process.env.VSM_FS_NOSTOP) stopAfter = 1e9
  const fdev = new FaultDev(base, { stopAfterWrites: stopAfter, tearBytes: r(2) ? 1 + r(16384) : 0 })
  const vols = base1 ? [fdev, diesWith(fdev, base1)] : [fdev]

  const model: NS = new Map()
  const snaps: { ns: NS; at: number }[] = [{ ns: new Map(), at: 0 }]
  const log: LogEnt[] = []
  let lastSync = 0
  const files = () => [...model].filter(([, n]) => !n.dir) as [string, MNode & { dir: false }][]
  const dirs = () => ['/', ...[...model].filter(([, n]) => n.dir).map(([p]) => p)]
  const pick = <T>(a: T[]) => a[r(a.length)]
  const child = (d: string) => (d === '/' ? '/' : d + '/') + pick(['a', 'b', 'c', 'd', 'e'])
  const snap = () => { snaps.push({ ns: cloneNs(model), at: log.length }); return snaps.length - 1 }
  const writeModel = (f: MNode & { dir: false }, off: number, data: Buffer) => {
    if (off + data.length > f.data.length) { const nb = Buffer.alloc(off + data.length); f.data.copy(nb); f.data = nb }
    data.copy(f.data, off)
    log.push({ ino: f.ino, kind: 'w', off, len: data.length })
  }

  // snapshots by `${ino}:${name}` (names are unique): the file's content when taken
  const snapData = new Map<string, Buffer>()
  const snapX = new Map<string, Map<string, string>>()
  const liveSnaps = new Map<number, string[]>()
  const snapOf = () => {
    const fl = files().filter(([, f]) => liveSnaps.get(f.ino)?.length)
    if (!fl.length) return null
    const [p, f] = pick(fl)
    return { p, f, name: pick(liveSnaps.get(f.ino)!) }
  }
  let fs: FileSystem | null = null
  const trace: string[] = []
  let tag = seed * 1000
  try {
    fs = await FileSystem.mount(vols)
    snaps[0] = { ns: new Map(), at: 0 }
    for (let step = 0; step < 400; step++) {
      const c = r(100)
      if (vols.length > 1 && r(10) === 0) {
        // a range of a file moves to the other volume (fs move, remove-volume, the HSM's
        // step) while writes land in it: the data is unchanged, wherever it lives
        const fl = files().filter(([, f]) => f.data.length > 0); if (!fl.length) continue
        const [p, f] = pick(fl)
        const span = Math.max(1, fs.blockSpan(f.ino)), b0 = r(span), b1 = b0 + 1 + r(span - b0), to = r(vols.length)
        const jobs: Promise<unknown>[] = [fs.relocate(f.ino, b0, b1, to)]
        const used: [number, number][] = []
        for (let k = r(4); k > 0; k--) {
          const len = 512 * (1 + r(32)), off = Math.max(0, Math.min(f.data.length - len, b0 * 4096 + 512 * r(64)))
          if (used.some(([o, l]) => off < o + l && o < off + len)) continue // concurrent writes: disjoint, so any order gives the model's bytes
          used.push([off, len])
          const data = fill(r, len, tag++)
          writeModel(f, off, data)
          jobs.push(fs.write(f.ino, data, off))
        }
        trace.push(`relocate ${p} ino ${f.ino} ${b0}..${b1} to ${to} with ${jobs.length - 1} writes`)
        await Promise.all(jobs)
      } else if (c < 10) {
        const p = child(pick(dirs()))
        if (model.has(p)) continue
        const ino = await fs.create(p, 0o644, 0, 0, { volume: r(vols.length) })
        trace.push(`create ${p} ${ino}`)
        model.set(p, { dir: false, ino, data: Buffer.alloc(0), x: new Map() })
      } else if (c < 14) {
        const p = child(pick(dirs()))
        if (model.has(p)) continue
        await fs.mkdir(p, 0o755, 0, 0)
        trace.push(`mkdir ${p}`)
        model.set(p, { dir: true, x: new Map() })
      } else if (c < 40) {
        const fl = files(); if (!fl.length) continue
        const [, f] = pick(fl)
        const len = r(2) ? 512 * (1 + r(256)) : 1 + r(20000)
        const off = r(2) ? 512 * r(1024) : r(600_000)
        const data = fill(r, len, tag++)
        trace.push(`write ino ${f.ino} ${off}+${len} (size ${f.data.length})`)
        writeModel(f, off, data) // first: a write cut short by the crash may still land in part
        await fs.write(f.ino, data, off)
      } else if (c < 50) {
        // concurrent writes within the current sizes, with concurrent fsyncs (group commit)
        const fl = files().filter(([, f]) => f.data.length > 8192); if (!fl.length) continue
        const s = snap()
        const jobs: Promise<unknown>[] = []
        const pend: [MNode & { dir: false }, number, Buffer][] = []
        const used: [number, number, number][] = []
        for (let k = 0; k < 2 + r(6); k++) {
          const [, f] = pick(fl)
          const len = 512 * (1 + r(16))
          if (f.data.length < len + 512) continue
          const off = 512 * r(Math.floor((f.data.length - len) / 512))
          if (used.some(([i, o, l]) => i === f.ino && off < o + l && o < off + len)) continue
          used.push([f.ino, off, len])
          const data = fill(r, len, tag++)
          pend.push([f, off, data])
          jobs.push(fs.write(f.ino, data, off))
          if (r(3) === 0) jobs.push(fs.fsync(f.ino))
        }
        for (const [f, off, data] of pend) writeModel(f, off, data) // exempt ranges from the snapshot on
        trace.push(`batch snap ${s}: ${pend.map(([f, o, d]) => `${f.ino}:${o}+${d.length}`).join(' ')} jobs ${jobs.length}`)
        await Promise.all(jobs)
        if (jobs.length) { await fs.sync(); lastSync = s }
      } else if (c < 56) {
        const fl = files(); if (!fl.length) continue
        const [p, f] = pick(fl)
        const size = r(3) === 0 ? 0 : r(700_000)
        trace.push(`truncate ${p} ino ${f.ino} ${size} (was ${f.data.length})`)
        log.push({ ino: f.ino, kind: 't', size: Math.min(size, f.data.length) })
        if (size < f.data.length) f.data = Buffer.from(f.data.subarray(0, size))
        else { const nb = Buffer.alloc(size); f.data.copy(nb); f.data = nb }
        await fs.truncate(p, size)
      } else if (c < 64) {
        const all = [...model.keys()]; if (!all.length) continue
        const from = pick(all)
        const to = child(pick(dirs()))
        const fn = model.get(from)!, tn = model.get(to)
        if (to === from || to.startsWith(from + '/')) continue
        if (tn && (tn.dir !== fn.dir || (tn.dir && [...model.keys()].some((k) => k.startsWith(to + '/'))))) continue
        await fs.rename(from, to)
        trace.push(`mv ${from} ${to}`)
        if (tn) { model.delete(to) }
        const moved = [...model].filter(([k]) => k === from || k.startsWith(from + '/'))
        for (const [k] of moved) model.delete(k)
        for (const [k, v] of moved) model.set(to + k.slice(from.length), v)
      } else if (c < 69) {
        const fl = files(); if (!fl.length) continue
        const [p] = pick(fl)
        await fs.unlink(p)
        trace.push(`unlink ${p}`)
        model.delete(p)
      } else if (c < 72) {
        const ds = dirs().filter((d) => d !== '/' && ![...model.keys()].some((k) => k.startsWith(d + '/')))
        if (!ds.length) continue
        const d = pick(ds)
        await fs.rmdir(d)
        trace.push(`rmdir ${d}`)
        model.delete(d)
      } else if (c < 78) {
        const all = [...model.keys()]; if (!all.length) continue
        const p = pick(all)
        const v = `v${tag++}`, key = 'user.k' + r(3)
        await fs.setxattr(p, key, Buffer.from(v))
        model.get(p)!.x.set(key, v)
      } else if (c < 90) {
        const fl = files()
        const s = snap()
        if (fl.length && r(2)) await fs.fsync(pick(fl)[1].ino)
        else await fs.sync()
        trace.push(`sync snap ${s}`)
        lastSync = s
      } else if (c < 94) {
        const fl = files(); if (!fl.length) continue
        const [p, f] = pick(fl)
        const name = `s${tag++}`
        const s = snap()
        snapData.set(`${f.ino}:${name}`, Buffer.from(f.data))
        snapX.set(`${f.ino}:${name}`, new Map(f.x))
        trace.push(`snapshot ${p} ${name} snap ${s}`)
        await fs.snapshot(p, name)
        liveSnaps.set(f.ino, [...liveSnaps.get(f.ino) ?? [], name])
        lastSync = s
      } else if (c < 96) {
        const x = snapOf(); if (!x) continue
        const s = snap()
        trace.push(`snapshot delete ${x.p} ${x.name} snap ${s}`)
        await fs.deleteSnapshot(x.p, x.name)
        liveSnaps.set(x.f.ino, liveSnaps.get(x.f.ino)!.filter((n) => n !== x.name))
        lastSync = s
      } else if (c < 97) {
        const x = snapOf(); if (!x) continue
        const p = child(pick(dirs()))
        if (model.has(p)) continue
        // the model first: a clone whose commit lands just before the crash still counts
        const ino = (fs as unknown as { core: { nextIno: number } }).core.nextIno
        model.set(p, { dir: false, ino, data: Buffer.from(snapData.get(`${x.f.ino}:${x.name}`)!), x: new Map(snapX.get(`${x.f.ino}:${x.name}`)!) })
        const s = snap()
        trace.push(`clone ${x.p}@${x.name} ${p} ${ino} snap ${s}`)
        assert.is(await fs.clone(x.p, x.name, p), ino)
        lastSync = s
      } else if (c < 98) {
        const fl = files(); if (!fl.length) continue
        const [p, f] = pick(fl)
        trace.push(`flatten ${p}`)
        await fs.unshare(f.ino, 0, fs.blockSpan(f.ino))
      } else if (c < 99) {
        const x = snapOf(); if (!x) continue
        log.push({ ino: x.f.ino, kind: 't', size: 0 }) // until durable, either content
        x.f.data = Buffer.from(snapData.get(`${x.f.ino}:${x.name}`)!)
        const s = snap()
        trace.push(`revert ${x.p} ${x.name} snap ${s}`)
        await fs.revert(x.p, x.name)
        lastSync = s
      }
    }
    const s = snap()
    await fs.sync()
    lastSync = s
    stats.completed++
  } catch (e) {
    stats.crashed++
    if (!fdev.stopped) { console.log(`seed ${seed} live error`, (e as Error).stack, trace.slice(-10)); throw e }
  }
  if (fs) { const js = fs.journalStats(); stats.wraps += js.wraps; stats.checkpoints += js.checkpoints; stats.records += js.records }
  // ---- crash: mount what is on the medium now, without the dead fs
  let dev: BlockDev
  if (backend !== 'file') dev = (base as MemDev).crashImage(r)
  else { await base.close(); dev = await FileDev.open(file) }
  const devs = base1 ? [dev, base1.crashImage(r)] : [dev]
  try {
    const fs2 = await FileSystem.mount(devs)
    for (const k of (fs2 as any).core.stateSegs.keys()) if (typeof k === 'string') stats.bucketsRead++
    const c = await fs2.check()
    assert.ok(c.ok, `seed ${seed}: check failed: ${c.errors.slice(0, 5).join('; ')}`)
    assert.is(c.leakedBytes, 0, `seed ${seed}: leaked`)
    const got = await readNs(fs2)
    const reasons: string[] = []
    let matched = false
    for (let k = snaps.length - 1; k >= lastSync && !matched; k--) {
      const { ns, at } = snaps[k]
      const why = await compare(fs2, ns, got, log.slice(at))
      if (!why) matched = true
      else reasons.push(`snap ${k}: ${why}`)
    }
    if (!matched && process.env.VSM_FS_TRACE) {
      console.log(trace.join('\n'))
      for (const [ino, n] of (fs as any)?.core.inodes ?? []) console.log('live', ino, n.size, JSON.stringify(n.ext.toArray()))
      for (const [ino, n] of (fs2 as any).core.inodes) console.log('rec ', ino, n.size, JSON.stringify(n.ext.toArray()))
    }
    assert.ok(matched, `seed ${seed} (stop ${stopAfter}, ${backend}): recovered state matches no synced-or-later snapshot (lastSync ${lastSync} of ${snaps.length - 1}): ${reasons.slice(0, 3).join(' | ')}`)
    for (const [p, g] of got) {
      if (g.dir) continue
      for (const sn of fs2.snapshots(p)) {
        const want = snapData.get(`${g.ino}:${sn.name}`)
        assert.ok(want, `seed ${seed}: unknown snapshot ${sn.name} of ${p}`)
        const b = Buffer.alloc(want!.length)
        assert.is(sn.size, want!.length, `seed ${seed}: size of snapshot ${sn.name} of ${p}`)
        await fs2.read(sn.ino, b, 0)
        assert.ok(b.equals(want!), `seed ${seed}: content of snapshot ${sn.name} of ${p}`)
        stats.snapshotsChecked++
      }
    }
    // the recovered fs is fully usable
    const ino = await fs2.create('/after-crash', 0o644, 0, 0)
    await fs2.write(ino, Buffer.alloc(100_000, 1), 0)
    await fs2.close()
    const fs3 = await FileSystem.mount(devs)
    const c3 = await fs3.check()
    assert.ok(c3.ok && c3.leakedBytes === 0, `seed ${seed}: after remount: ${c3.errors.join('; ')}`)
    assert.is(fs3.getattr('/after-crash').size, 100_000)
    await fs3.close()
  } finally {
    await dev.close()
  }
  return { stopAfter, snaps: snaps.length }
}

async function compare(fs: FileSystem, ns: NS, got: Map<string, { dir: boolean; ino: number; size: number; x: Map<string, string> }>, after: LogEnt[]): Promise<string | null> {
  if (ns.size !== got.size) return `entry count ${got.size} != ${ns.size}: got ${[...got.keys()].sort()} want ${[...ns.keys()].sort()}`
  for (const [p, n] of ns) {
    const g = got.get(p)
    if (!g) return `missing ${p}`
    if (g.dir !== n.dir) return `type of ${p}`
    if (JSON.stringify([...g.x].sort()) !== JSON.stringify([...n.x].sort())) return `xattrs of ${p}`
    if (n.dir) continue
    if (g.ino !== n.ino) return `ino of ${p}`
    if (g.size !== n.data.length) return `size of ${p}: ${g.size} != ${n.data.length}`
    const buf = Buffer.alloc(n.data.length)
    await fs.read(g.ino, buf, 0)
    // bytes written or truncated away after the snapshot may hold either value
    const exempt: [number, number][] = []
    for (const e of after) {
      if (e.ino !== n.ino) continue
      if (e.kind === 'w') exempt.push([e.off, e.off + e.len])
      else exempt.push([e.size, Infinity])
    }
    for (let i = 0; i < buf.length; i++) {
      if (buf[i] === n.data[i]) continue
      if (exempt.some(([a, b]) => i >= a && i < b)) continue
      return `data of ${p} differs at ${i}: got ${buf.subarray(i, i + 8).toString('hex')} want ${n.data.subarray(i, i + 8).toString('hex')}`
    }
  }
  return null
}

const stats = { crashed: 0, completed: 0, wraps: 0, checkpoints: 0, records: 0, snapshotsChecked: 0, bucketsRead: 0 }
const t = suite('fs crash consistency')

async function crashRun(first: number, iters: number): Promise<void> {
  const td = await tempDir()
  try {
    const t0 = Date.now()
    const before = { ...stats }
    let n = 0
    for (let i = first; i < iters; i++) {
      await runIteration(0xc0ffee + i * 7919, i % 4 === 3 ? 'file' : i % 4 === 1 ? 'mem2' : 'mem', td.dir)
      n++
    }
    console.log(`  ${n} crash iterations in ${((Date.now() - t0) / 1000).toFixed(1)}s: ${JSON.stringify(stats)}`)
    const d = (k: keyof typeof stats) => stats[k] - before[k]
    assert.ok(d('crashed') > n / 2 && d('wraps') > 0 && d('checkpoints') > n, 'the workload must crash mid-way, wrap the journal and checkpoint')
    assert.ok(d('snapshotsChecked') > n, 'snapshots must survive crashes and be checked')
  } finally { await td.cleanup() }
}

t(`${ITERS} random crash points (memory volumes with a volatile cache, one or two volumes; file volume)`, () =>
  crashRun(Number(process.env.VSM_FS_FIRST || 0), ITERS))

t(`${Math.ceil(ITERS / 3)} more with every directory of more than one name kept in buckets of about one (the checkpoint's name buckets) and segments of about two inodes (their cuts move with every create and unlink)`, async () => {
  const saved = { ...SEGMENTS }
  Object.assign(SEGMENTS, { inodes: 2, bucketMin: 1, bucketNames: 1 })
  const before = stats.bucketsRead
  try { await crashRun(ITERS, ITERS + Math.ceil(ITERS / 3)) } finally { Object.assign(SEGMENTS, saved) }
  assert.ok(stats.bucketsRead > before, 'no recovered state held a bucket of names')
})

t.run()
