// Replication between two real homes over a real OpenSSH sshd started here on
// 127.0.0.1 (generated host and client keys, key-only login): the primary's daemon runs
// `vsm replica serve` on the secondary through an ssh2 exec channel. Sync mode with a
// writer fsyncing into a disk in the FUSE view; the primary killed with -9 mid-stream,
// then the secondary killed too: the secondary's replicated fs, mounted here, holds
// every acknowledged write. After restarts shipping resumes from where the secondary
// stood, each record is applied once, and both sites' volumes end byte-identical.
// A host key not in known_hosts, or a changed one, is refused.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, writeFileSync, writeSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { makeVsm, VSM } from './helpers/daemon'
import { keygen, startSshd, type Sshd } from './helpers/sshd'
import { SLOT, slotData, startWriter, verifyAcknowledged } from './helpers/crash-writer'
import { diskFrom, until as untilAt, volumeBytes, stopSites } from './helpers/repl-sites'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const SLOTS = 128
const dir = mkdtempSync(join(tmpdir(), `vsm-test-${process.env.VSM_RUNNER_ID ?? 'solo'}-ssh-`))
const primary = makeVsm({ deviceSize: '192M' })
const secondary = makeVsm({ deviceSize: '256M' })
let sshd: Sshd | null = null
let port = 0

test.before(async () => {
  sshd = await startSshd(dir)
  port = sshd.port
  keygen(join(dir, 'other-host'))
  writeFileSync(join(dir, 'wrong_known_hosts'), sshd.hostLine(join(dir, 'other-host.pub')))
})

test.after(() => stopSites([primary, secondary], sshd, dir))

const target = () => `ssh://root@127.0.0.1:${port}${secondary.home}`
const createArgs = (group: string, knownHosts: string, mode: string) =>
  ['repl', 'create', group, '--target', target(), '--mode', mode, '--identity', join(dir, 'client'), '--known-hosts', knownHosts, '--remote-vsm', VSM, '--log-size', '16M']
const until = <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, ms?: number) => untilAt([secondary.home, primary.home], what, get, ok, ms)
const status = async (v: typeof primary, group: string) => (await v.json('repl', 'status', group))[0]

test('a host key that is not in known_hosts, or that changed, is refused: nothing reaches the secondary', async () => {
  await secondary.run('up', '--secondary', '--device-size', '256M')
  await primary.up()
  await primary.run('device', 'add', 'e0', join(primary.home, 'e0.img'), '--size', '64M')
  // one group: first its known_hosts lacks the secondary, then it holds another key for it (read at each connect)
  const kh = join(dir, 'test_known_hosts')
  writeFileSync(kh, '')
  await primary.run(...createArgs('g0', kh, 'async'))
  let st = await until('the unknown host key to be refused', () => status(primary, 'g0'), (s) => /not in .*refusing an unknown host key/.test(s.lastError ?? ''), 60_000)
  assert.is(st.state, 'disconnected')
  writeFileSync(kh, readFileSync(join(dir, 'wrong_known_hosts')))
  st = await until('the changed host key to be refused', () => status(primary, 'g0'), (s) => /does not match/.test(s.lastError ?? ''), 60_000)
  assert.is(st.state, 'disconnected')
  assert.equal(await secondary.json('repl', 'status'), [], 'the secondary saw no group')
})

test('sync mode over ssh: kill -9 of the primary mid-stream loses no acknowledged write on the secondary; shipping resumes, nothing applied twice, both sites equal', async () => {
  // the refused groups of the first test hold the volume: start this primary afresh
  await primary.cleanup()
  await primary.up()
  await primary.run('device', 'add', 'e0', join(primary.home, 'e0.img'), '--size', '64M')
  await primary.run('disk', 'create', 'w.img', '--size', `${(SLOTS * SLOT) >> 20}M`)
  const img = join(primary.mount, 'w.img')
  const fd = openSync(img, 'r+')
  for (let s = 0; s < SLOTS; s++) writeSync(fd, slotData(s, 0), 0, SLOT, s * SLOT)
  fsyncSync(fd)
  closeSync(fd)
  await primary.run(...createArgs('g', join(dir, 'known_hosts'), 'sync'))
  await until('the initial sync to be acknowledged', () => status(primary, 'g'), (s) => s.state === 'replicating' && s.lagBytes === 0)

  const journal = join(dir, 'writer.journal')
  const writer = startWriter(img, journal, SLOTS, 1)
  await sleep(3000)
  primary.kill9()
  await writer
  assert.ok(/ack/.test(readFileSync(journal, 'utf8')), 'the writer got acknowledgements')

  // the secondary dies too: what it holds durably is all there is
  secondary.kill9()
  const taken = join(dir, 'taken.img')
  writeFileSync(taken, await diskFrom(secondary.home, 'w.img'))
  const checked = verifyAcknowledged(taken, journal)
  assert.ok(checked > 0, `${checked} acknowledged slots checked on the secondary`)

  await secondary.run('up', '--secondary')
  const before = await status(secondary, 'g')
  await primary.up()
  const caught = await until('shipping to resume and catch up', () => status(primary, 'g'), (s) => s.state === 'replicating' && s.lagBytes === 0 && s.secondaryDurableSeq === s.headSeq)
  const after = await status(secondary, 'g')
  assert.ok(after.appliedSeq >= caught.headSeq)
  assert.is(after.appliedRecords, after.appliedSeq - before.durableSeq, 'each record after the secondary\'s durable point applied exactly once')

  await primary.down()
  await secondary.down()
  const [p, q] = [await volumeBytes(primary.home, 'vol0'), await volumeBytes(secondary.home, 'vol0')]
  assert.is(p.length, q.length)
  assert.ok(p.equals(q), 'the secondary\'s vol0 is byte-identical to the primary\'s')
})

test.run()
