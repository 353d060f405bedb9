// A ztest for the volume manager: a child process (helpers/ztest-child.ts) writes seeded
// random blocks to 1–2 volumes of random layouts on a pool of 5 sparse devices while it
// offlines/onlines devices, replaces members, grows/moves/relayouts at a rate, scrubs and
// flips bytes in one copy of a redundant volume; the parent kills it with SIGKILL at a
// random moment and starts the next child on the same pool, which must open, resume its
// jobs and read back every acknowledged (flushed) byte. At the end every job finishes,
// every redundant volume scrubs clean and every byte is checked again.
// Seeded: the seed is printed; ZTEST_SEED=n replays a run (as far as timing allows),
// ZTEST_ROUNDS=n runs longer.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import * as path from 'path'
import { promises as fsp } from 'fs'
import { spawn, ChildProcess } from 'child_process'
import { createInterface } from 'readline'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import { prng, blockData, membersFor, LAYOUTS, REDUNDANT } from './helpers/ztest-child'
import type { LayoutKind } from '../src/volume/config'

const SEED = Number(process.env.ZTEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
const ROUNDS = Number(process.env.ZTEST_ROUNDS ?? 10)
const CHILD = path.join(__dirname, 'helpers', 'ztest-child.js')
const DEVICES = 5

interface Write { id: number; vol: string; off: number; len: number; seed: number }
interface Snap { tag: string; vol: string; devSize: number; cfgSize: number; file: string }

/** What one child said before it died. */
interface RoundLog { writes: Write[]; acked: Set<number>; snaps: Snap[]; ops: string[]; errors: string[]; ready: boolean }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function startChild(home: string, work: string, seed: number, round: number, mode: string, log: RoundLog, children: Set<ChildProcess>, env: Record<string, string>) {
  const child = spawn(process.execPath, [CHILD, home, work, String(seed), String(round), mode], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  children.add(child)
  let stderr = ''
  child.stderr!.on('data', (d) => { stderr += d })
  let onReady: () => void = () => {}
  const ready = new Promise<void>((r) => { onReady = r })
  const lines = createInterface({ input: child.stdout! })
  lines.on('line', (line) => {
    const w = line.split(' ')
    if (w[0] === 'try') log.writes.push({ id: +w[1], vol: w[2], off: +w[3], len: +w[4], seed: +w[5] })
    else if (w[0] === 'ack') for (const id of w.slice(1)) log.acked.add(+id)
    else if (w[0] === 'snap') log.snaps.push({ tag: w[1], vol: w[2], devSize: +w[3], cfgSize: +w[4], file: w[5] })
    else if (w[0] === 'ready') { log.ready = true; onReady() }
    else if (w[0] === 'error') log.errors.push(line)
    else log.ops.push(line)
  })
  const exited = new Promise<{ code: number | null; signal: string | null; stderr: string }>((res) => {
    child.on('exit', (code, signal) => { lines.close(); children.delete(child); res({ code, signal, stderr }) })
  })
  return { child, ready, exited }
}

/** The pool and its volumes, from the seed. */
async function setup(home: string, dir: string, rnd: () => number): Promise<string[]> {
  const pool = await Pool.create(home)
  try {
    const devs = Array.from({ length: DEVICES }, (_, i) => `d${i}`)
    for (const d of devs) await pool.addDevice(d, path.join(dir, `${d}.img`), 64 * MiB)
    const made: string[] = []
    const count = rnd() < 0.6 ? 2 : 1
    for (let k = 0; k < count; k++) {
      // the first volume is always redundant, so the faults have something to be survived by
      const layouts = k === 0 ? LAYOUTS.filter((l) => REDUNDANT.has(l)) : LAYOUTS
      const layout: LayoutKind = layouts[Math.floor(rnd() * layouts.length)]
      const devices = [...devs].sort(() => rnd() - 0.5).slice(0, membersFor(layout, rnd))
      const size = (6 + Math.floor(rnd() * 7)) * MiB
      await pool.createVolume(`vol${k}`, { layout, devices, size })
      made.push(`vol${k} ${layout} ${devices.join(',')} ${size}`)
    }
    return made
  } finally {
    await pool.close()
  }
}

/** A volume as the last check read it, and which of its bytes any write ever covered. */
interface Model { data: Buffer; written: Uint8Array }

/**
 * Check a volume read at reopen against what the last child acknowledged: each byte holds
 * the last acknowledged write covering it (or what the previous check read), or a write
 * issued after that one and never acknowledged (it may have landed in part). Bytes no
 * write ever covered hold no promise: a flip there has no good copy to be told from
 * (checksum.ts: a block never written has no sum), and a copy of the volume carries it.
 */
function verify(where: string, model: Model, got: Buffer, snap: Snap, log: RoundLog): Model {
  const base = model.data
  assert.is(snap.devSize, snap.cfgSize, `${where}: volume ${snap.vol} assembles to ${snap.devSize} bytes, its config says ${snap.cfgSize}`)
  assert.ok(got.length >= base.length, `${where}: volume ${snap.vol} shrank from ${base.length} to ${got.length} bytes`)
  const size = got.length
  const expected = Buffer.alloc(size)
  base.copy(expected)
  const lastAck = new Int32Array(size).fill(-1)
  const writes = log.writes.filter((w) => w.vol === snap.vol)
  writes.forEach((w, k) => {
    if (!log.acked.has(w.id)) return
    assert.ok(w.off + w.len <= size, `${where}: volume ${snap.vol} is ${size} bytes but write ${w.id} at ${w.off}+${w.len} was acknowledged`)
    blockData(w.seed, w.len).copy(expected, w.off)
    lastAck.fill(k, w.off, w.off + w.len)
  })
  const ok = new Uint8Array(size)
  for (let b = 0; b < size; b++) ok[b] = got[b] === expected[b] || (!model.written[b] && lastAck[b] < 0) ? 1 : 0
  writes.forEach((w, k) => {
    if (log.acked.has(w.id)) return
    const data = blockData(w.seed, w.len)
    for (let b = w.off; b < Math.min(size, w.off + w.len); b++) if (!ok[b] && lastAck[b] < k && got[b] === data[b - w.off]) ok[b] = 1
  })
  const bad = ok.indexOf(0)
  if (bad < 0) {
    const written = new Uint8Array(size)
    written.set(model.written)
    for (const w of writes) written.fill(1, w.off, Math.min(size, w.off + w.len))
    return { data: got, written }
  }
  const k = lastAck[bad]
  const from = k >= 0 ? `acknowledged write ${writes[k].id} (${writes[k].off}+${writes[k].len})` : 'the previous check'
  let end = bad
  while (end < size && !ok[end]) end++
  throw new Error(`${where}: volume ${snap.vol} byte ${bad} reads 0x${got[bad].toString(16)}, expected 0x${expected[bad].toString(16)} from ${from}; ${end - bad} bad bytes from there`)
}

/** Rounds of children on one pool from seed; env goes to every child. */
async function ztest(SEED: number, ROUNDS: number, env: Record<string, string>): Promise<void> {
  console.log(`volume ztest: seed ${SEED}, ${ROUNDS} rounds${env.VSM_TABLE_CACHE ? `, table cache ${env.VSM_TABLE_CACHE}` : ''} (ZTEST_SEED=${SEED} replays, ZTEST_ROUNDS=n runs longer)`)
  const tmp = await tmpDir('vsm-ztest-')
  const children = new Set<ChildProcess>()
  const history: string[] = []
  try {
    const rnd = prng(SEED)
    const home = path.join(tmp.dir, 'home'), work = path.join(tmp.dir, 'work')
    await fsp.mkdir(work)
    const volumes = await setup(home, tmp.dir, rnd)
    history.push(...volumes.map((s) => `create ${s}`))
    const models = new Map<string, Model>()
    let log: RoundLog = { writes: [], acked: new Set(), snaps: [], ops: [], errors: [], ready: true }
    /** Checks the snaps a child took against the previous child's log; they become the new base. */
    const check = async (round: number, snaps: Snap[], prev: RoundLog) => {
      for (const s of snaps) {
        const got = await fsp.readFile(s.file)
        await fsp.rm(s.file)
        const empty = { data: Buffer.alloc(0), written: new Uint8Array(0) }
        models.set(s.vol, verify(`seed ${SEED} round ${round} (${s.tag})`, models.get(s.vol) ?? empty, got, s, prev))
      }
    }
    for (let round = 1; round <= ROUNDS + 1; round++) {
      const final = round > ROUNDS
      const cur: RoundLog = { writes: [], acked: new Set(), snaps: [], ops: [], errors: [], ready: false }
      const c = startChild(home, work, Math.floor(rnd() * 2 ** 31), round, final ? 'final' : 'work', cur, children, env)
      const early = rnd() < 0.15
      const wait = early ? rnd() * 400 : 300 + rnd() * 3500
      if (final) {
        // the final child runs to its end
      } else if (early) {
        await sleep(wait)
      } else {
        await Promise.race([c.ready, c.exited])
        await sleep(wait)
      }
      if (!final) c.child.kill('SIGKILL')
      const ex = await c.exited
      history.push(`round ${round}${final ? ' (final)' : early ? ' (killed early)' : ''}: ${cur.ops.join('; ')}`)
      const where = `seed ${SEED} round ${round}`
      assert.equal(cur.errors, [], `${where}: the child reported ${cur.errors[0]}`)
      assert.ok(final ? ex.code === 0 : ex.signal === 'SIGKILL', `${where}: the child exited with ${ex.code ?? ex.signal}: ${ex.stderr.trim().split('\n').slice(-3).join(' | ')}`)
      const opened = cur.snaps.filter((s) => s.tag === 'open')
      // a child killed before its snaps were all taken changed nothing acknowledged
      // a child killed before it had read every volume wrote nothing: the next one checks against the same log
      if (opened.length === volumes.length) {
        await check(round, opened, log)
        log = cur
      } else {
        for (const s of opened) await fsp.rm(s.file, { force: true })
      }
      if (final) {
        await check(round, cur.snaps.filter((s) => s.tag === 'final'), log)
        for (const line of cur.ops.filter((l) => l.startsWith('state '))) {
          const [, vol, layout, state, reshape] = line.split(' ')
          assert.is(`${state} ${reshape}`, 'healthy settled', `${where}: volume ${vol} (${layout}) ends ${state}, ${reshape}`)
        }
        for (const line of cur.ops.filter((l) => l.startsWith('scrubbed '))) {
          const r = JSON.parse(line.slice(line.indexOf('{')))
          assert.ok(!r.code && r.unrecoverable.length === 0, `${where}: final scrub of ${line.split(' ')[1]}: ${line.slice(line.indexOf('{'))}`)
        }
        assert.ok(models.size > 0, `${where}: no volume was checked`)
      }
    }
  } catch (e) {
    console.error(history.join('\n'))
    throw e
  } finally {
    for (const c of children) c.kill('SIGKILL')
    await Promise.all([...children].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))))
    await tmp.cleanup()
  }
}

test(`ztest: random faults and kill -9 lose no acknowledged byte (seed ${SEED}, ${ROUNDS} rounds)`, () => ztest(SEED, ROUNDS, {}))

// every checksum table page evicted and read back again and again, dirty ones written early
const FEW = Math.max(3, Math.ceil(ROUNDS / 2))
test(`ztest with a table cache of 3 pages (seed ${SEED + 1}, ${FEW} rounds)`, () => ztest(SEED + 1, FEW, { VSM_TABLE_CACHE: '12K' }))

test.run()
