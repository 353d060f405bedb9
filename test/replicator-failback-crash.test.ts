// kill -9 of the old primary in the middle of a failback, between two real homes over a
// real OpenSSH sshd on 127.0.0.1. The secondary takes over and rewrites 16 MiB of the
// disk; the old primary's failback copies that back at the group's --rate (4 MiB/s,
// so the copy lasts seconds) and is killed while it runs. The next `vsm up` runs the
// failback again from the start (the other site stays stepped down as its source): the
// old primary then serves exactly the other site's data, and once replication resumes
// both sites end byte-identical.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { readFileSync } from 'fs'
import { join } from 'path'
import { readAll, replCreate, sitePair, upWithDisk, volumeBytes, writeSynced } from './helpers/repl-sites'

const { primary, secondary, sshd, until } = sitePair(test, 'fbcrash')

const MiB = 1 << 20
const DISK = 24 * MiB
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const status = async (v: typeof primary) => (await v.json('repl', 'status', 'g'))[0]

test('kill -9 during a failback\'s copy: up copies again, the old primary serves the other site\'s data, both sites end equal', async () => {
  await upWithDisk(primary, secondary, 'w.img', `${DISK / MiB}M`)
  const img = join(primary.mount, 'w.img')
  writeSynced(img, [[0, randomBytes(DISK)]])
  await replCreate(primary, secondary, sshd(), 'g', '--mode', 'sync', '--log-size', '16M', '--rate', '4M')
  await until('the initial sync', () => status(primary), (s) => s.state === 'replicating' && s.lagBytes === 0)
  primary.kill9()

  await secondary.json('repl', 'takeover', 'g')
  const served = join(secondary.mount, 'w.img')
  writeSynced(served, [[4 * MiB, randomBytes(16 * MiB)]])
  const want = readAll(served, DISK)

  await primary.up()
  assert.is((await status(primary)).state, 'taken-over')
  const t0 = Date.now()
  const log = () => readFileSync(join(primary.home, 'log', 'vsm.log'), 'utf8')
  const before = log().length
  // the CLI waits for the failback through the restarts, the kill and the next up
  const failback = primary.json('repl', 'failback', 'g')
  // the other site steps down, this one restarts and copies 16 MiB at 4 MiB/s: kill it a second and a half into the copy
  await until('the failback\'s copy to start', async () => log().slice(before), (l) => l.includes('repl.failback-started'), 60_000)
  await sleep(1500)
  primary.kill9()
  assert.not.ok(log().includes('repl.failed-back'), 'the failback was still copying when killed')
  console.log(`killed ${Date.now() - t0} ms after asking for the failback`)

  await primary.up()
  // the start after the kill ran the copy again (a failback that had finished would not start again)
  assert.is(log().slice(before).split('"event":"repl.failback-started"').length - 1, 2)
  const fb = await failback
  assert.ok(fb.copiedBytes >= 16 * MiB, JSON.stringify(fb))
  assert.not.ok((await status(primary)).takenOver)
  assert.ok(readAll(img, DISK).equals(want), 'the old primary serves the other site\'s data')
  assert.is((await status(secondary)).state, 'secondary')

  await primary.run('repl', 'resume', 'g')
  await until('replication after the failback', () => status(primary), (s) => s.state === 'replicating' && s.lagBytes === 0)
  await primary.down()
  await until('the secondary to see the primary go', () => status(secondary), (s) => s.connected === false)
  await secondary.down()
  const [p, q] = [await volumeBytes(primary.home, 'vol0'), await volumeBytes(secondary.home, 'vol0')]
  assert.ok(p.equals(q), 'both sites\' vol0 byte-identical after the failback')
})

test.run()
