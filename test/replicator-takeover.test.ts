// Takeover and the old primary's return, between two real homes over a real OpenSSH
// sshd on 127.0.0.1. A sync-mode group; writes acknowledged while replicating; then the
// group paused and more writes made on the primary only (written here, never
// replicated); the primary killed -9. `vsm repl takeover` on the secondary serves the
// disk in its FUSE view with every replicated write and none of the others; the
// secondary writes too. The old primary's `vsm up` hears from the other site before
// it serves: it does not serve the disk, status says split-brain and what to run, and
// `vsm repl failback --dry-run` names exactly the disk ranges it wrote after the split.
// The failback is refused while the disk is open over there; then it copies back only
// what changed on either side, the other site steps down and follows again, and both
// sites end byte-identical.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { closeSync, existsSync, openSync, readFileSync } from 'fs'
import { join } from 'path'
import { type RunError } from './helpers/daemon'
import { readAll, replCreate, sitePair, upWithDisk, volumeBytes, writeSynced } from './helpers/repl-sites'

const { primary, secondary, sshd, until } = sitePair(test, 'takeover')

const DISK = 8 << 20
const K64 = 64 << 10
const status = async (v: typeof primary, group: string) => (await v.json('repl', 'status', group))[0]

/** Bytes of a generation g: every byte says which generation and which 64 KiB block it belongs to. */
const pattern = (g: number, offset: number, length: number) => {
  const b = Buffer.alloc(length)
  for (let i = 0; i < length; i++) b[i] = (g * 37 + Math.floor((offset + i) / K64) * 11 + i) & 0xff
  return b
}

/** Acknowledged writes of generation g over ranges. */
const writeGen = (path: string, g: number, ranges: Array<[number, number]>) => writeSynced(path, ranges.map(([off, len]) => [off, pattern(g, off, len)]))

async function fails(p: Promise<unknown>, why: RegExp): Promise<void> {
  try { await p } catch (e) { assert.match((e as RunError).stderr || (e as Error).message, why); return }
  assert.unreachable(`expected a failure matching ${why}`)
}

const readDisk = (path: string) => readAll(path, DISK)

test('takeover serves the replicated disk; the old primary comes back in standby, sees the split brain, and failback --dry-run names what it would discard', async () => {
  await upWithDisk(primary, secondary, 'w.img', `${DISK >> 20}M`)
  const img = join(primary.mount, 'w.img')
  writeGen(img, 1, [[0, DISK]])
  await replCreate(primary, secondary, sshd(), 'g', '--mode', 'sync', '--log-size', '16M')
  await until('the initial sync', () => status(primary, 'g'), (s) => s.state === 'replicating' && s.lagBytes === 0)

  // acknowledged in sync mode: on the secondary
  const replicated: Array<[number, number]> = [[0, 1 << 20], [6 << 20, 2 * K64]]
  writeGen(img, 2, replicated)
  // a takeover while the primary is connected would fork the sites: refused
  await fails(secondary.run('repl', 'takeover', 'g'), /primary of group g is connected/)
  // written here after the group is paused: never replicated
  await primary.run('repl', 'pause', 'g')
  const local: Array<[number, number]> = [[2 << 20, K64], [5 << 20, 2 * K64]]
  writeGen(img, 3, local)
  const onPrimary = readDisk(img)
  primary.kill9()

  // what the secondary must serve: generation 1, with generation 2 where replicated, and none of generation 3
  const want = pattern(1, 0, DISK)
  for (const [off, len] of replicated) pattern(2, off, len).copy(want, off)
  assert.ok(!onPrimary.equals(want), 'the primary held writes the secondary lacks')

  const t = await secondary.json('repl', 'takeover', 'g')
  assert.is(t.group, 'g')
  assert.is(t.mount, secondary.mount)
  const served = readDisk(join(secondary.mount, 'w.img'))
  assert.ok(served.equals(want), 'the taken-over disk holds every replicated write and none of the others')
  const st = await status(secondary, 'g')
  assert.is(st.state, 'taken-over')
  assert.is(st.serving, true)
  // the new primary writes: both sites now hold writes the other lacks
  writeGen(join(secondary.mount, 'w.img'), 4, [[3 << 20, K64]])
  assert.ok((await status(secondary, 'g')).changedBytes >= K64)

  await primary.up()
  assert.not.ok(existsSync(img), 'the old primary does not serve the group\'s disks')
  const sp = await status(primary, 'g')
  assert.is(sp.state, 'split-brain', JSON.stringify(sp))
  assert.is(sp.takenOver.generation, t.generation)
  assert.is(sp.takenOver.point, t.point)
  assert.match(sp.next, /vsm repl failback g --dry-run/)
  assert.match(await primary.run('repl', 'status'), /split-brain[\s\S]*vsm repl failback g --dry-run/)
  const st2 = await primary.json('status')
  assert.is(st2.mount, null)
  assert.equal(st2.standby.groups, ['g'])

  // the dry-run: exactly the disk ranges written here after the split, changing nothing
  const dry = await primary.json('repl', 'failback', 'g', '--dry-run')
  const disk = dry.disks.find((d: { path: string }) => d.path === 'w.img')
  assert.ok(disk, JSON.stringify(dry))
  assert.equal(disk.ranges, local.map(([offset, length]) => ({ offset, length })))
  assert.is(disk.discardBytes, 3 * K64)
  assert.ok(dry.discardBytes >= disk.discardBytes)
  assert.is(dry.complete, true)
  assert.equal(await primary.json('repl', 'failback', 'g', '--dry-run'), dry, 'a dry-run changes nothing')
  // on the old primary a takeover makes no sense; the disks stay unserved after a restart too
  await fails(primary.run('repl', 'takeover', 'g'), /run on the secondary/)
  await primary.down()
  await primary.up()
  assert.not.ok(existsSync(img))
  assert.is((await status(primary, 'g')).state, 'split-brain')
  // the promoted site keeps serving after a restart, and refuses to go back to being a secondary
  await secondary.down()
  await fails(secondary.run('up', '--secondary'), /taken over on this site.*vsm up/)
  await secondary.up()
  assert.ok(readDisk(join(secondary.mount, 'w.img')).subarray(3 << 20, (3 << 20) + K64).equals(pattern(4, 3 << 20, K64)))
  assert.ok(readFileSync(join(secondary.home, 'log', 'vsm.log'), 'utf8').includes('repl.taken-over'))

  // failback: refused while a disk is open on the other site, unless forced
  const served2 = join(secondary.mount, 'w.img')
  const holder = openSync(served2, 'r')
  try {
    await fails(primary.run('repl', 'failback', 'g'), /disks are open on the site that took over: w\.img/)
  } finally { closeSync(holder) }
  assert.is((await status(primary, 'g')).state, 'split-brain', 'a refused failback changes nothing')
  const changedThere = (await status(secondary, 'g')).changedBytes
  const fb = await primary.json('repl', 'failback', 'g')
  // only what changed on either side since the split is copied
  assert.ok(fb.copiedBytes > 0 && fb.copiedBytes <= changedThere + dry.discardBytes, `copied ${fb.copiedBytes}, changed there ${changedThere}, here ${dry.discardBytes}`)
  console.log(`failback: dry-run discardBytes ${dry.discardBytes} (w.img ${disk.discardBytes}), changed on the other site ${changedThere}, copied ${fb.copiedBytes} in ${fb.ranges} ranges`)
  const back = pattern(1, 0, DISK)
  for (const [off, len] of replicated) pattern(2, off, len).copy(back, off)
  pattern(4, 3 << 20, K64).copy(back, 3 << 20)
  assert.ok(readDisk(img).equals(back), 'the old primary serves the other site\'s data: its own writes after the split are gone')
  assert.not.ok(existsSync(served2), 'the other site stepped down')
  assert.is((await status(secondary, 'g')).state, 'secondary')
  // it follows this site's log again
  await primary.run('repl', 'resume', 'g')
  await until('replication after the failback', () => status(primary, 'g'), (x) => x.state === 'replicating' && x.lagBytes === 0)
  writeGen(img, 5, [[4 << 20, K64]])
  await primary.down()
  await until('the secondary to hold it', () => status(secondary, 'g'), (x) => x.connected === false)
  await secondary.down()
  const [p, q] = [await volumeBytes(primary.home, 'vol0'), await volumeBytes(secondary.home, 'vol0')]
  assert.ok(p.equals(q), 'both sites\' vol0 byte-identical after the failback and a sync-mode write')
})

test.run()
