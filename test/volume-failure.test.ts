// Failures ridden through: a member that errors goes out with no error to the caller,
// the volume degrades and says so; a device taken offline and brought back is
// resynced by what it missed, not in full; replace and hot spares rebuild as jobs
// (rate-limited, resumable after a crash), and reads during a rebuild are correct.
import * as path from 'path'
import { promises as fsp } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { tmpDir, MiB, copyData } from './helpers/volume-tmp'
import { conformance } from './helpers/conformance'
import { Pool } from '../src/volume/pool'
import { FaultDev } from '../src/block/fault'
import type { BlockDev, VsmError } from '../src/block/blockdev'
import type { LayoutKind } from '../src/volume/config'

const t = suite('volume failures')
let tmp: { dir: string; cleanup: () => Promise<void> }
let pools: Pool[] = []
let faults: Map<string, FaultDev>
t.before.each(async () => { tmp = await tmpDir(); pools = []; faults = new Map() })
t.after.each(async () => {
  for (const p of pools) await p.close().catch(() => {})
  await tmp.cleanup()
})
const f = (n: string) => path.join(tmp.dir, n)
const home = () => f('home')
/** Every device behind a FaultDev the test can switch on and off by name. */
const opts = () => ({ wrapDevice: (n: string, d: BlockDev) => { const fd = new FaultDev(d); faults.set(n, fd); return fd } })
const open = async () => { const p = await Pool.open(home(), opts()); pools.push(p); return p }

async function makePool(layout: LayoutKind, devs: string[], size: number, extra: string[] = []) {
  const pool = await Pool.create(home(), opts())
  pools.push(pool)
  for (const n of [...devs, ...extra]) await pool.addDevice(n, f(`${n}.img`), 48 * MiB)
  await pool.createVolume('v', { layout, devices: devs, size })
  return pool
}

function events(pool: Pool): [string, any][] {
  const seen: [string, any][] = []
  pool.useEvents({ publish: (n: string, d: unknown) => { seen.push([n, d]) } })
  return seen
}

async function fill(v: BlockDev): Promise<Buffer> {
  const b = randomBytes(v.size)
  await v.write(b, 0)
  await v.flush()
  return b
}

async function readAll(v: BlockDev): Promise<Buffer> {
  const b = Buffer.alloc(v.size)
  await v.read(b, 0)
  return b
}


/** Device b starts failing every I/O; a write lands meanwhile and everything reads back. */
async function failB(v: BlockDev, data: Buffer, len: number, off: number): Promise<void> {
  faults.get('b')!.setRules([{ op: 'any' }])
  const more = randomBytes(len)
  await v.write(more, off)
  more.copy(data, off)
  assert.ok((await readAll(v)).equals(data), 'degraded reads')
}

t('a mirror copy returning EIO goes out: no error to the caller, event and degraded state', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 32 * MiB)
  const seen = events(pool)
  const v = await pool.openVolume('v')
  const data = await fill(v)
  await failB(v, data, 3 * MiB, 5 * MiB)
  const info = pool.volumeInfo('v')
  assert.is(info.state, 'degraded')
  assert.is(info.members[1].state, 'failed')
  assert.match(info.members[1].reason!, /injected/)
  assert.is(pool.listDevices().find((d) => d.name === 'b')!.state, 'failed')
  const ev = seen.find(([n]) => n === 'volume.member-failed')
  assert.ok(ev, 'event emitted')
  assert.equal({ volume: ev![1].volume, device: ev![1].device, state: ev![1].state }, { volume: 'v', device: 'b', state: 'degraded' })
})

t('a member failure when pool.json cannot be written (the home full): the labels hold it, the write is acknowledged, the next change has its own seq, a reopen finds the member failed', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 32 * MiB)
  const seen = events(pool)
  const v = await pool.openVolume('v')
  const data = await fill(v)
  const seq = pool.config.seq
  // pool.json cannot be replaced: a rename over a directory that is not empty fails
  const old = await fsp.readFile(path.join(home(), 'pool.json'))
  await fsp.rm(path.join(home(), 'pool.json'))
  await fsp.mkdir(path.join(home(), 'pool.json', 'x'), { recursive: true })
  await failB(v, data, MiB, 2 * MiB)
  assert.is(pool.config.seq, seq + 1)
  assert.is(pool.volumeInfo('v').members[1].state, 'failed')
  assert.ok(seen.some(([n]) => n === 'pool.file-failed'), 'pool.file-failed reported')
  await pool.addDevice('c', f('c.img'), 48 * MiB)
  assert.is(pool.config.seq, seq + 2)
  await v.flush()
  await pool.close()
  pools = []
  // what the full home kept: the version from before the failure
  await fsp.rm(path.join(home(), 'pool.json'), { recursive: true })
  await fsp.writeFile(path.join(home(), 'pool.json'), old)
  const again = await open()
  assert.is(again.volumeInfo('v').members[1].state, 'failed')
  assert.ok(again.listDevices().some((d) => d.name === 'c'))
  assert.ok((await readAll(await again.openVolume('v'))).equals(data))
})

t('a write failing on every copy (both backing files full) is ENOSPC, leaves its blocks readable, and the copy it failed comes back online', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 32 * MiB)
  const v = await pool.openVolume('v')
  const data = await fill(v)
  // the data area only: the labels (the pool's record of the failure) still take writes
  for (const n of ['a', 'b']) faults.get(n)!.setRules([{ op: 'write', offset: 2 * MiB, length: 40 * MiB, code: 'ENOSPC' }])
  let failed = ''
  await v.write(randomBytes(64 * 1024), 3 * MiB).catch((e: VsmError) => { failed = `${e.code}: ${e.message}` })
  // ENOSPC, not EIO: QEMU (werror=enospc) pauses the guest instead of failing its write
  assert.match(failed, /^ENOSPC: mirror write failed on every copy/, failed)
  for (const n of ['a', 'b']) faults.get(n)!.setRules([])
  // the write landed nowhere: its blocks read as before (they failed verification on every copy)
  assert.ok((await readAll(v)).equals(data))
  const { jobs } = await pool.onlineDevice('a')
  const done = await pool.jobs.wait(jobs[0])
  assert.not.ok(done.error, done.error?.message)
  assert.is(pool.volumeInfo('v').state, 'healthy')
  assert.ok((await readAll(v)).equals(data))
})

t('every state change goes through the pool\'s sink, with its object, reason and level', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 16 * MiB, ['c', 's'])
  const seen: string[] = []
  const data: Record<string, any> = {}
  pool.useEvents({ publish: (n: string, d: any, level?: string) => { seen.push(`${n}:${level}`); data[n] = d } })
  const v = await pool.openVolume('v')
  await fill(v)
  await pool.offlineDevice('b')
  const on = await pool.onlineDevice('b')
  await Promise.all(on.jobs.map((j) => pool.jobs.wait(j)))
  const { job } = await pool.reshapeVolume('v', 'relayout', { layout: 'concat', devices: ['c'], rate: MiB })
  pool.jobs.cancel(job)
  await pool.jobs.wait(job)
  // a byte flipped in one copy, found by scrub
  const m = pool.volumeInfo('v').members[0]
  const fh = await fsp.open(f(`${m.device}.img`), 'r+')
  try {
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, MiB + m.offset + 4096)
    b[0] ^= 0x5a
    await fh.write(b, 0, 1, MiB + m.offset + 4096)
  } finally { await fh.close() }
  await pool.jobs.wait((await pool.scrubVolume('v')).job)
  assert.equal(seen, [
    'volume.member-failed:warn', 'device.offline:warn', 'device.online:info', 'volume.rebuild-started:info', 'volume.rebuilt:info',
    'volume.reshape-started:info', 'volume.reshape-aborted:warn', 'volume.scrubbed:warn',
  ])
  assert.equal(data['device.offline'], { device: 'b', reason: 'taken offline by the operator', volumes: ['v'] })
  assert.is(data['volume.rebuild-started'].kind, 'resync')
  assert.is(data['volume.reshape-aborted'].reason, 'relayout of v to concat cancelled')
  assert.is(data['volume.scrubbed'].repaired, 1)
  assert.is(data['volume.scrubbed'].repairs[0].offset, 4096)
})

t('a failed member with a hot spare: the takeover is an event; a member failed at open is reported once a sink is given', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 16 * MiB)
  await pool.addDevice('s', f('s.img'), 48 * MiB, true)
  const seen: [string, any][] = []
  pool.useEvents({ publish: (n: string, d: any) => { seen.push([n, d]) } })
  const v = await pool.openVolume('v')
  await fill(v)
  faults.get('b')!.setRules([{ op: 'any' }])
  await v.write(randomBytes(4096), 0)
  for (let i = 0; i < 500 && !seen.some(([n]) => n === 'volume.rebuilt'); i++) await new Promise((r) => setTimeout(r, 10))
  assert.equal(seen.map(([n]) => n), ['volume.member-failed', 'volume.spare-takeover', 'volume.replace', 'volume.rebuild-started', 'volume.rebuilt'])
  assert.equal(seen[1][1], { volume: 'v', from: 'b', spare: 's', reason: seen[0][1].reason })
  assert.is(seen[2][1].takeover, true)
  await pool.close()
  pools.pop()
  await fsp.rename(f('s.img'), f('s.gone'))
  const p2 = await open()
  const later: [string, any, string?][] = []
  p2.useEvents({ publish: (n: string, d: any, level?: string) => { later.push([n, d, level]) } })
  // the assembly that found the device gone says so, then what that did to the volume
  assert.equal(later.map(([n, d, l]) => `${n} ${d.device} ${l}`), ['device.missing s warn', 'volume.member-failed s error'])
  assert.is(later[0][1].path, f('s.img'))
  assert.match(later[0][1].reason, /^cannot open .*s\.img: /)
  assert.match(later[1][1].reason, /device s .* is missing/)
})

t('opening a volume a crash left dirty publishes what its recovery took', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 16 * MiB)
  await pool.addDevice('c', f('c.img'), 48 * MiB)
  await pool.createVolume('r', { layout: 'raid5', devices: ['a', 'b', 'c'], size: 8 * MiB })
  for (const name of ['v', 'r']) {
    const v = await pool.openVolume(name)
    await v.write(randomBytes(1 << 20), 0)
    await v.flush()
    await v.write(randomBytes(1 << 20), 2 << 20)
  }
  await pool.abandon()
  pools.pop()
  const p2 = await open()
  const seen: [string, any, string?][] = []
  p2.useEvents({ publish: (n: string, d: any, level?: string) => { seen.push([n, d, level]) } })
  await p2.openVolume('v')
  await p2.openVolume('r')
  const rec = seen.filter(([n]) => n === 'volume.recovered')
  assert.equal(rec.map(([, d, l]) => `${d.volume} ${l}`), ['v warn', 'r warn'])
  assert.ok(rec[0][1].resyncedBytes > 0, JSON.stringify(rec[0][1]))
  assert.match(rec[0][1].reason, /^unclean stop: \d+ bytes of dirty regions resynced$/)
  assert.ok(rec[1][1].replayedRecords > 0, JSON.stringify(rec[1][1]))
  assert.match(rec[1][1].reason, /^unclean stop: \d+ stripe journal records replayed$/)
  // a clean close leaves nothing to recover, and nothing is said
  await p2.close()
  pools.pop()
  const p3 = await open()
  const after: string[] = []
  p3.useEvents({ publish: (n: string) => { after.push(n) } })
  await p3.openVolume('v')
  await p3.openVolume('r')
  assert.not.ok(after.includes('volume.recovered'), after.join(' '))
})

t('a backing file cut short under the volume: short reads fail that copy, the caller sees nothing', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 32 * MiB)
  const v = await pool.openVolume('v')
  const data = await fill(v)
  await fsp.truncate(f('b.img'), 8 * MiB)
  for (let k = 0; k < 2; k++) assert.ok((await readAll(v)).equals(data), `read ${k}`)
  const m = pool.volumeInfo('v').members[1]
  assert.is(m.state, 'failed')
  assert.match(m.reason!, /short read/)
})

/**
 * Take b offline, write three pieces (each in one or two 1 MiB regions), restart the
 * pool, bring b back; returns what its resync job copied.
 */
async function awayAndBack(layout: LayoutKind, devs: string[]) {
  let pool = await makePool(layout, devs, 40 * MiB)
  let v = await pool.openVolume('v')
  const data = await fill(v)
  await pool.offlineDevice('b')
  assert.is(pool.volumeInfo('v').state, 'degraded')
  assert.is(pool.listDevices().find((d) => d.name === 'b')!.state, 'offline')
  for (const off of [2 * MiB + 100, 17 * MiB, 33 * MiB + 4096]) {
    const b = randomBytes(300_000)
    await v.write(b, off)
    b.copy(data, off)
  }
  await v.flush()
  await pool.close()
  pool = await open()
  v = await pool.openVolume('v')
  assert.is(pool.volumeInfo('v').state, 'degraded', 'still degraded after a restart')
  const { jobs } = await pool.onlineDevice('b')
  assert.is(jobs.length, 1)
  const done = await pool.jobs.wait(jobs[0])
  assert.not.ok(done.error, done.error?.message)
  assert.is(pool.volumeInfo('v').state, 'healthy')
  assert.ok((await readAll(v)).equals(data))
  return { pool, v, data, copied: (done.result as { copied: number }).copied }
}

t('offline, writes, restart, online: the returning copy gets only what it missed', async () => {
  const { pool, copied } = await awayAndBack('mirror', ['a', 'b'])
  assert.ok(copied > 0 && copied <= 4 * MiB, `delta resync copied ${copied} bytes, not the whole ${40 * MiB}`)
  await pool.close()
  assert.ok((await copyData(pool, 'v', 0)).equals(await copyData(pool, 'v', 1)), 'copies identical')
})

t('raid5: offline, writes, restart, online: only the rows of regions written meanwhile are rebuilt', async () => {
  const { v, data, copied } = await awayAndBack('raid5', ['a', 'b', 'c'])
  // at most two regions of each 20 MiB member per write
  assert.ok(copied > 0 && copied <= 6 * MiB, `delta rebuild wrote ${copied} bytes, not the whole ${20 * MiB}-byte member`)
  // b must carry what it missed: lose a and read everything through b
  faults.get('a')!.setRules([{ op: 'any' }])
  await v.write(Buffer.alloc(512), 0)
  data.fill(0, 0, 512)
  assert.ok((await readAll(v)).equals(data), 'reads through the resynced member')
})

t('raid5: a member failing reads under a scrub goes out; the scrub stops with the error, reads go on', async () => {
  const pool = await makePool('raid5', ['a', 'b', 'c'], 24 * MiB)
  const v = await pool.openVolume('v')
  const data = await fill(v)
  faults.get('b')!.setRules([{ op: 'read' }])
  const { job } = await pool.scrubVolume('v')
  const done = await pool.jobs.wait(job)
  assert.match(done.error?.message ?? '', /injected read error/)
  assert.is(pool.volumeInfo('v').members[1].state, 'failed')
  assert.ok((await readAll(v)).equals(data))
})

t('raid5: a crash mid-rebuild resumes from the checkpoint; rows the reopen replays below it are rebuilt again', async () => {
  let pool = await makePool('raid5', ['a', 'b', 'c'], 24 * MiB, ['d'])
  let v = await pool.openVolume('v')
  const data = await fill(v)
  await pool.replaceMember('v', 'b', 'd', { rate: 4 * MiB })
  await new Promise((r) => setTimeout(r, 1600))
  const saved = pool.config.volumes[0].members[1].rebuilt!
  const vc = pool.config.volumes[0]
  const su = vc.stripeUnit!
  assert.ok(saved > 8 * su, `checkpoint persisted past the rows written next: ${saved}`)
  // rows 0-7, below the checkpoint, written and not flushed: the crash leaves their records to replay
  const more = randomBytes(16 * su)
  await v.write(more, 0)
  more.copy(data, 0)
  await pool.abandon() // kill -9
  // and a host crash may drop d's unflushed copy of them
  const m = vc.members[1], dd = pool.config.devices.find((x) => x.id === m.device)!
  const fh = await fsp.open(dd.path, 'r+')
  try { await fh.write(Buffer.alloc(8 * su), 0, 8 * su, dd.dataOffset + m.offset + vc.journal!) } finally { await fh.close() }
  pool = await open()
  v = await pool.openVolume('v')
  assert.ok(pool.volumeInfo('v').replayedRecords! >= 8)
  const again = pool.volumeInfo('v').rebuild!
  assert.ok(again, 'rebuild resumed at open')
  const done = await pool.jobs.wait(again.job)
  assert.not.ok(done.error, done.error?.message)
  const copied = (done.result as { copied: number }).copied
  assert.ok(copied < m.length - vc.journal! - saved + 16 * su, `resumed at ${saved}, not restarted: copied ${copied}`)
  assert.is(pool.volumeInfo('v').state, 'healthy')
  assert.ok((await readAll(v)).equals(data))
  const { job } = await pool.scrubVolume('v')
  const r = (await pool.jobs.wait(job)).result as { repaired: unknown[]; unrecoverable: unknown[]; parityRowsFixed: number }
  assert.equal([r.repaired.length, r.unrecoverable.length, r.parityRowsFixed], [0, 0, 0], 'scrub clean')
  faults.get('a')!.setRules([{ op: 'any' }])
  await v.write(Buffer.alloc(512), 0)
  data.fill(0, 0, 512)
  assert.ok((await readAll(v)).equals(data), 'reads through the rebuilt member')
})

t('offline is refused when a volume would stop; bad names are clear errors', async () => {
  const pool = await makePool('raid5', ['a', 'b', 'c'], 32 * MiB)
  await pool.offlineDevice('a')
  await pool.offlineDevice('b').then(() => assert.unreachable(), (e) => assert.match(e.message, /cannot run without device b/))
  await pool.offlineDevice('zz').then(() => assert.unreachable(), (e) => assert.is(e.code, 'ENOENT'))
  await pool.onlineDevice('b').then(() => assert.unreachable(), (e) => assert.match(e.message, /not offline or failed/))
})

for (const layout of ['mirror', 'raid10', 'raid5'] as const) {
  t(`${layout}: a hot spare takes over a failed member and the rebuilt copy carries the data`, async () => {
    const devs = layout === 'mirror' ? ['a', 'b'] : layout === 'raid10' ? ['a', 'b', 'c', 'd'] : ['a', 'b', 'c']
    const pool = await makePool(layout, devs, 24 * MiB)
    await pool.addDevice('s', f('s.img'), 48 * MiB, true)
    assert.is(pool.listDevices().find((d) => d.name === 's')!.state, 'spare')
    const seen = events(pool)
    const v = await pool.openVolume('v')
    const data = await fill(v)
    await failB(v, data, 2 * MiB, 3 * MiB)
    for (let i = 0; i < 100 && !pool.volumeInfo('v').rebuild; i++) await new Promise((r) => setTimeout(r, 10))
    const rb = pool.volumeInfo('v').rebuild
    assert.ok(rb, 'rebuild started on the spare')
    const done = await pool.jobs.wait(rb!.job)
    assert.not.ok(done.error, done.error?.message)
    const info = pool.volumeInfo('v')
    assert.is(info.state, 'healthy')
    assert.ok(info.devices.includes('s') && !info.devices.includes('b'))
    assert.ok(seen.some(([n]) => n === 'volume.rebuilt'))
    // the rebuilt member must now carry real data: lose b's partner (mirror, raid10) or any original (raid5)
    faults.get('a')!.setRules([{ op: 'any' }])
    await v.write(Buffer.alloc(512), 0) // so the mirror notices a at once
    data.fill(0, 0, 512)
    assert.ok((await readAll(v)).equals(data), 'reads from the rebuilt copy')
  })
}

t('replace with a rate limit: progress and ETA shown; a crash mid-rebuild resumes from the checkpoint', async () => {
  let pool = await makePool('mirror', ['a', 'b'], 24 * MiB, ['c'])
  let v = await pool.openVolume('v')
  const data = await fill(v)
  const { job } = await pool.replaceMember('v', 'b', 'c', { rate: 8 * MiB })
  assert.ok(job)
  await new Promise((r) => setTimeout(r, 1600))
  const rb = pool.volumeInfo('v').rebuild!
  assert.ok(rb.done > 0 && rb.done < rb.total, `partial progress ${rb.done}/${rb.total}`)
  assert.ok(rb.bytesPerSecond <= 10 * MiB, `rate held: ${rb.bytesPerSecond}`)
  assert.ok(rb.etaSeconds !== null && rb.etaSeconds > 0)
  const more = randomBytes(MiB)
  await v.write(more, 20 * MiB)
  more.copy(data, 20 * MiB)
  const saved = pool.config.volumes[0].members[1].rebuilt!
  assert.ok(saved > 0, 'checkpoint persisted')
  await pool.abandon() // kill -9
  pool = await open()
  v = await pool.openVolume('v')
  const again = pool.volumeInfo('v').rebuild!
  assert.ok(again, 'rebuild resumed at open')
  const done = await pool.jobs.wait(again.job)
  assert.not.ok(done.error, done.error?.message)
  const copied = (done.result as { copied: number }).copied
  assert.ok(copied < 24 * MiB, `resumed, not restarted: copied ${copied}`)
  assert.is(pool.volumeInfo('v').state, 'healthy')
  assert.ok((await readAll(v)).equals(data))
  await pool.close()
  assert.ok((await copyData(pool, 'v', 0)).equals(await copyData(pool, 'v', 1)), 'copies identical')
})

// the rebuild reads the next chunk while it writes one (two held from writes at a time):
// paused between chunks, it must hold none from writes
t('a paused rebuild holds up no write; resumed, it ends with identical copies', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 24 * MiB, ['c'])
  const v = await pool.openVolume('v')
  const data = await fill(v)
  const { job } = await pool.replaceMember('v', 'b', 'c', { rate: 16 * MiB })
  await new Promise((r) => setTimeout(r, 500))
  pool.jobs.pause(job!)
  await new Promise((r) => setTimeout(r, 400))
  const at = pool.volumeInfo('v').rebuild!.done
  assert.ok(at > 0 && at < 24 * MiB, `paused part way: ${at}`)
  for (let off = 0; off < 24 * MiB; off += MiB) {
    const b = randomBytes(4096)
    const wrote = v.write(b, off + 8192).then(() => true)
    assert.ok(await Promise.race([wrote, new Promise((r) => setTimeout(() => r(false), 3000))]), `write at ${off} waits on the paused rebuild`)
    b.copy(data, off + 8192)
  }
  assert.is(pool.volumeInfo('v').rebuild!.done, at, 'still paused')
  pool.jobs.resume(job!)
  const done = await pool.jobs.wait(job!)
  assert.not.ok(done.error, done.error?.message)
  assert.ok((await readAll(v)).equals(data))
  await pool.close()
  assert.ok((await copyData(pool, 'v', 0)).equals(await copyData(pool, 'v', 1)), 'copies identical')
})

t('a rebuild at full speed under random writes across its chunks: every write is on both copies', async () => {
  const pool = await makePool('mirror', ['a', 'b'], 40 * MiB, ['c'])
  const v = await pool.openVolume('v')
  const data = await fill(v)
  const { job } = await pool.replaceMember('v', 'b', 'c')
  let writes = 0, ended = false
  const ends = pool.jobs.wait(job!).finally(() => { ended = true })
  // four writers, each aiming near a 4 MiB chunk's edge half the time: the rebuild copies
  // one chunk while the one before is still landing
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (!ended || writes < 64) {
      const len = 4096 * (1 + Math.floor(Math.random() * 16))
      const edge = Math.floor(Math.random() * 10) * 4 * MiB
      const near = Math.max(0, Math.min(v.size - len, edge + 4096 * Math.floor((Math.random() - 0.5) * 32)))
      const off = Math.random() < 0.5 ? near : 4096 * Math.floor(Math.random() * ((v.size - len) / 4096))
      const b = randomBytes(len)
      b.copy(data, off)
      await v.write(b, off)
      writes++
    }
  }))
  const done = await ends
  assert.not.ok(done.error, done.error?.message)
  assert.ok(writes >= 64, `${writes} writes`)
  assert.ok((await readAll(v)).equals(data), 'the volume reads what was written')
  await pool.close()
  assert.ok((await copyData(pool, 'v', 0)).equals(await copyData(pool, 'v', 1)), 'copies identical')
})

t('two copies back at once: one rebuild runs at a time, and the second starts when the first ends', async () => {
  const pool = await makePool('mirror', ['a', 'b', 'c'], 8 * MiB)
  const v = await pool.openVolume('v')
  await pool.offlineDevice('b')
  await pool.offlineDevice('c')
  const data = await fill(v)
  const { jobs: [first] } = await pool.onlineDevice('b')
  const { jobs: [same] } = await pool.onlineDevice('c')
  assert.is(same, first, 'c waits for the rebuild of b')
  await pool.jobs.waitAll()
  const rebuilt = pool.jobs.list().filter((j) => j.kind === 'volume.rebuild')
  assert.equal(rebuilt.map((j) => j.error?.message ?? (j.result as { device: string }).device), ['b', 'c'])
  assert.is(pool.volumeInfo('v').state, 'healthy')
  assert.ok((await readAll(v)).equals(data))
})

t('raid5: a member replaced again while its rebuild runs: that rebuild stops, the new device is rebuilt, all of it survives a restart', async () => {
  const pool = await makePool('raid5', ['a', 'b', 'c'], 8 * MiB, ['d', 'e'])
  const v = await pool.openVolume('v')
  const data = await fill(v)
  const first = await pool.replaceMember('v', 'c', 'd', { rate: MiB })
  // long enough for the rebuild onto d to reach a checkpoint
  await new Promise((r) => setTimeout(r, 1200))
  const second = await pool.replaceMember('v', 'd', 'e')
  assert.is.not(second.job, first.job, 'a rebuild of its own for the new device')
  assert.is(pool.jobs.get(first.job!).state, 'concluded', 'the rebuild onto d has stopped')
  assert.not.ok((await pool.jobs.wait(second.job!)).error)
  assert.is(pool.volumeInfo('v').state, 'healthy')
  await pool.abandon()
  const p2 = await open()
  assert.ok((await readAll(await p2.openVolume('v'))).equals(data), 'every byte reads back after the restart')
})

t.run()

// Reads and writes during a rebuild: the conformance suite runs while a slow rebuild copies.
for (const layout of ['mirror', 'raid5'] as const) {
  conformance(`${layout} during a rebuild`, async () => {
    const t2 = await tmpDir()
    const devs = layout === 'mirror' ? ['a', 'b'] : ['a', 'b', 'c']
    const pool = await Pool.create(path.join(t2.dir, 'home'))
    for (const n of [...devs, 'n']) await pool.addDevice(n, path.join(t2.dir, `${n}.img`), 48 * MiB)
    await pool.createVolume('v', { layout, devices: devs, size: 32 * MiB })
    const dev = await pool.openVolume('v')
    // written whole (with the zeros the suite expects), so the rebuild has every row to copy, not none
    await dev.write(Buffer.alloc(dev.size), 0)
    await dev.flush()
    await pool.replaceMember('v', 'b', 'n', { rate: 16 * MiB })
    return { dev, cleanup: async () => { await pool.close().catch(() => {}); await t2.cleanup() } }
  }, { ops: 150 }).run()
}
