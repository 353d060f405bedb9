// Archive tiers on a real daemon and its FUSE view: a directory archive and an SFTP one
// on a real sshd started here. A disk written through the view is migrated to each (its
// pool blocks freed by its size), read back byte for byte, a range read through the view
// brings home only that range, `recall --range` brings home a range as a job, and the
// tiers and archived data survive a restart. Premigrated copies survive a restart and a
// kill -9, and a write in place whose stamp the crash lost keeps them from being used.
// Bad tier options are one-line refusals that change nothing, an SFTP archive whose host
// key is not known is refused.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { closeSync, constants, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, utimesSync, writeFileSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { startSshd, type Sshd } from './helpers/sshd'

const vsm = makeVsm({ deviceSize: '256M' })
let sshd: Sshd | null = null
test.after(async () => {
  try { await vsm.cleanup() } finally { sshd?.stop() }
})

const MiB = 1 << 20
const SIZE = 6 * MiB
const stderr = (p: Promise<unknown>): Promise<string> => p.then(() => { throw new Error('expected an error') }, (e) => e.stderr as string)
const residency = async (path: string) => (await vsm.json('hsm', 'status', path)).files[0]
const poolUsed = async () => (await vsm.json('hsm', 'tier', 'list')).find((t: any) => t.name === 'fast').used as number
const jobOf = (out: string) => /job (\d+)/.exec(out)![1]

async function waitJob(out: string) {
  const done = await vsm.json('job', 'wait', jobOf(out))
  assert.not.ok(done.error, JSON.stringify(done.error))
  return done
}

async function fsckClean() {
  const r = await vsm.json('fs', 'check')
  assert.ok(r.ok, r.errors.join('; '))
}

/** A disk of SIZE random bytes written through the view; returns its contents. */
async function makeDisk(name: string, size = SIZE): Promise<Buffer> {
  await vsm.run('disk', 'create', name, '--size', `${size / MiB}M`)
  const data = randomBytes(size)
  writeFileSync(join(vsm.mount, name), data)
  return data
}

function readRange(name: string, at: number, len: number): Buffer {
  const fd = openSync(join(vsm.mount, name), 'r')
  try {
    const b = Buffer.alloc(len)
    readSync(fd, b, 0, len, at)
    return b
  } finally { closeSync(fd) }
}

const archiveDir = () => join(vsm.home, 'cold-archive')

test('archive tier options: one-line refusals that change nothing', async () => {
  await vsm.up()
  await vsm.run('hsm', 'tier', 'add', 'fast', '--volume', 'vol0')
  for (const [args, re] of [
    [['--archive', join(vsm.home, 'nowhere')], /nowhere/],
    [['--archive', 'relative/dir'], /absolute directory or sftp/],
    [['--archive', '/tmp', '--volume', 'vol0'], /either --volume V or --archive/],
    [['--archive', '/tmp', '--identity', '/root/.ssh/id'], /--identity is for an sftp/],
    [['--archive', 'sftp://nobody/x'], /sftp:\/\/USER@HOST/],
    [['--archive', '/tmp', '--timeout', 'soon'], /timeout/],
  ] as [string[], RegExp][]) {
    const e = await stderr(vsm.run('hsm', 'tier', 'add', 'cold', ...args))
    assert.match(e, re)
    assert.is(e.trim().split('\n').length, 1, e)
  }
  assert.equal((await vsm.json('hsm', 'tier', 'list')).map((t: any) => t.name), ['fast'])
})

test('migrate a disk to a directory archive: pool blocks freed by its size, bytes intact, a range read brings home only that range', async () => {
  mkdirSync(archiveDir())
  assert.match(await vsm.run('hsm', 'tier', 'add', 'cold', '--archive', archiveDir()), /tier cold on archive/)
  assert.match(await stderr(vsm.run('hsm', 'tier', 'add', 'cold2', '--archive', archiveDir())), /already tier cold/)
  const data = await makeDisk('a.img')
  const used0 = await poolUsed()
  await waitJob(await vsm.run('hsm', 'migrate', 'a.img', '--tier', 'cold'))
  assert.equal((await residency('a.img')).bytes, { cold: SIZE })
  assert.is(used0 - await poolUsed(), SIZE, 'the pool got the disk\'s blocks back')
  assert.is(readdirSync(archiveDir()).length, SIZE / MiB, 'one object per MiB')
  const cold = (await vsm.json('hsm', 'tier', 'list')).find((t: any) => t.name === 'cold')
  assert.equal([cold.archive, cold.used], [archiveDir(), SIZE])
  await fsckClean()
  // a guest reading 4 KiB at 3 MiB waits for that (and the kernel's read-ahead), not for the disk
  assert.ok(readRange('a.img', 3 * MiB, 4096).equals(data.subarray(3 * MiB, 3 * MiB + 4096)))
  const r = await residency('a.img')
  assert.ok(r.bytes.fast > 0 && r.bytes.fast <= 2 * MiB + 256 * 1024, JSON.stringify(r.bytes))
  assert.is(r.bytes.fast + r.bytes.cold, SIZE)
  // recall --range: a job that brings home bytes 1M-2M
  await waitJob(await vsm.run('hsm', 'recall', 'a.img', '--range', '1M-2M'))
  const r2 = await residency('a.img')
  assert.ok(r2.bytes.fast >= r.bytes.fast + MiB - 256 * 1024 && r2.bytes.fast <= r.bytes.fast + MiB, JSON.stringify(r2.bytes))
  assert.match(await stderr(vsm.run('hsm', 'recall', 'a.img', '--range', '2M-1M')), /range/)
  assert.ok(readFileSync(join(vsm.mount, 'a.img')).equals(data), 'every byte, through the view')
  await fsckClean()
})

test('archive tiers and archived data survive a restart', async () => {
  const data = await makeDisk('b.img')
  await waitJob(await vsm.run('hsm', 'migrate', 'b.img', '--tier', 'cold'))
  await vsm.down()
  await vsm.up()
  assert.equal((await residency('b.img')).bytes, { cold: SIZE })
  // a migration after the restart must not reuse the objects b.img lives in (they follow a.img's, now orphans)
  const more = await makeDisk('b2.img', 2 * SIZE)
  await waitJob(await vsm.run('hsm', 'migrate', 'b2.img', '--tier', 'cold'))
  assert.ok(readFileSync(join(vsm.mount, 'b.img')).equals(data))
  assert.ok(readFileSync(join(vsm.mount, 'b2.img')).equals(more))
  await waitJob(await vsm.run('hsm', 'recall', 'b.img'))
  assert.equal((await residency('b.img')).bytes, { fast: SIZE })
  await fsckClean()
})

test('hsm check: orphaned objects listed by --dry-run, removed by check, archived data intact; a missing object is reported', async () => {
  // a.img and b.img came home: their 12 objects are orphans; b2.img lives in the 12 after them
  const b2 = readFileSync(join(vsm.mount, 'b2.img'))
  assert.equal((await residency('b2.img')).bytes, { fast: 2 * SIZE }, 'reading it brought it home')
  await waitJob(await vsm.run('hsm', 'migrate', 'b2.img', '--tier', 'cold'))
  const before = readdirSync(archiveDir()).length
  const dry = (await vsm.json('hsm', 'check', '--dry-run')).tiers[0]
  assert.equal([dry.tier, dry.objects, dry.removed, dry.missing], ['cold', before, 0, []])
  assert.ok(dry.orphans.length >= 12, `${dry.orphans.length} orphans: b2.img's first 12 at least`)
  assert.is(readdirSync(archiveDir()).length, before, '--dry-run removed nothing')
  assert.match(await vsm.run('hsm', 'check'), new RegExp(`tier cold: ${before} objects, ${dry.orphans.length} orphaned \\(${dry.orphans.length} removed\\), none missing`))
  assert.is(readdirSync(archiveDir()).length, before - dry.orphans.length, 'only objects the fs points into are left')
  assert.equal((await vsm.json('hsm', 'check', '--dry-run')).tiers[0].orphans, [])
  assert.ok(readFileSync(join(vsm.mount, 'b2.img')).equals(b2))
  // b2.img is home again; migrate it once more and hide one of its objects
  await waitJob(await vsm.run('hsm', 'migrate', 'b2.img', '--tier', 'cold'))
  await vsm.run('hsm', 'check')
  const objs = readdirSync(archiveDir()).sort()
  assert.ok(objs.length >= 2 * SIZE / MiB)
  renameSync(join(archiveDir(), objs[3]), join(vsm.home, 'hidden'))
  try {
    const r = (await vsm.json('hsm', 'check')).tiers[0]
    assert.equal([r.orphans, r.missing], [[], [objs[3]]])
    assert.match(await vsm.run('hsm', 'check'), /MISSING 1 the fs points into/)
  } finally { renameSync(join(vsm.home, 'hidden'), join(archiveDir(), objs[3])) }
  assert.ok(readFileSync(join(vsm.mount, 'b2.img')).equals(b2))
  await fsckClean()
})

test('watermarks: a volume above high sends the coldest files (however recent) to the archive until it is at low', async () => {
  await vsm.run('device', 'add', 'd9', join(vsm.home, 'd9.img'), '--size', '64M')
  await vsm.run('volume', 'create', 'small', '--layout', 'concat', '--devices', 'd9', '--size', '16M')
  await vsm.run('fs', 'add-volume', 'small')
  await vsm.run('hsm', 'tier', 'add', 'mid', '--volume', 'small')
  mkdirSync(join(vsm.mount, 'wm'))
  const names = ['w0.img', 'w1.img', 'w2.img', 'w3.img']
  const datas = []
  for (const name of names) {
    await vsm.run('disk', 'create', `wm/${name}`, '--size', '3M', '--volume', 'small')
    const d = randomBytes(3 * MiB)
    writeFileSync(join(vsm.mount, 'wm', name), d)
    datas.push(d)
  }
  // an hour apart, w0 the coldest; none cold by age
  names.forEach((name, i) => { const t = new Date(Date.now() - (names.length - i) * 3_600_000); utimesSync(join(vsm.mount, 'wm', name), t, t) })
  const mid = async () => (await vsm.json('hsm', 'tier', 'list')).find((t: any) => t.name === 'mid')
  const m0 = await mid()
  assert.ok(m0.used / m0.size > 0.6, `small is ${Math.round(100 * m0.used / m0.size)}% full`)
  await vsm.run('hsm', 'policy', 'set', 'wm', '--tier', 'cold', '--cold-after', '30d', '--high', '60%', '--low', '40%')
  const done = await waitJob(await vsm.run('hsm', 'run'))
  const moved = done.result.migrated.map((m: any) => m.path)
  assert.ok(moved.length >= 1 && moved.length < names.length, JSON.stringify(moved))
  assert.equal(moved, names.slice(0, moved.length).map((n) => `/wm/${n}`), 'coldest first')
  const m1 = await mid()
  assert.ok(m1.used <= m1.size * 0.4, `small is ${Math.round(100 * m1.used / m1.size)}% full after the run`)
  assert.ok(m1.used + 3 * MiB > m1.size * 0.4, 'no more than needed went')
  // reading them back recalls them: without watermarks the minute timer leaves them home for the next tests
  await vsm.run('hsm', 'policy', 'set', 'wm', '--tier', 'cold', '--cold-after', '30d')
  for (const [i, name] of names.entries()) assert.ok(readFileSync(join(vsm.mount, 'wm', name)).equals(datas[i]), name)
  await fsckClean()
})

test('premigrate: a policy run copies cold files and keeps their pool blocks; a watermark releases the copies without copying, a file changed since is copied again', async () => {
  mkdirSync(join(vsm.mount, 'pm'))
  const names = ['q0.img', 'q1.img', 'q2.img']
  const datas: Buffer[] = []
  for (const name of names) {
    await vsm.run('disk', 'create', `pm/${name}`, '--size', '3M')
    datas.push(randomBytes(3 * MiB))
    writeFileSync(join(vsm.mount, 'pm', name), datas[datas.length - 1])
  }
  const times = names.map((_, i) => new Date(Date.now() - (40 - i) * 86_400_000))
  names.forEach((name, i) => utimesSync(join(vsm.mount, 'pm', name), times[i], times[i]))
  await vsm.run('hsm', 'check')
  const objects0 = readdirSync(archiveDir()).length
  const used0 = await poolUsed()
  await vsm.run('hsm', 'policy', 'set', 'pm', '--tier', 'cold', '--cold-after', '7d', '--premigrate')
  const first = await waitJob(await vsm.run('hsm', 'run'))
  assert.equal(first.result.migrated.map((m: any) => [m.path, m.action]), names.map((n) => [`/pm/${n}`, 'premigrate']))
  assert.is(await poolUsed(), used0, 'premigration frees nothing')
  assert.is(readdirSync(archiveDir()).length, objects0 + 9, 'nine 1 MiB copies')
  const q0 = await residency('pm/q0.img')
  assert.equal([q0.bytes, q0.premigrated], [{ fast: 3 * MiB }, { cold: 3 * MiB }])
  // q1 changes after its copy (its times put back): that copy is stale
  const patch = randomBytes(4096)
  const fd = openSync(join(vsm.mount, 'pm', 'q1.img'), 'r+')
  try { writeSync(fd, patch, 0, patch.length, MiB) } finally { closeSync(fd) }
  patch.copy(datas[1], MiB)
  utimesSync(join(vsm.mount, 'pm', 'q1.img'), times[1], times[1])
  assert.equal((await residency('pm/q1.img')).premigrated, {})
  // fast (vol0) is now above high: the two coldest must go to get under low
  const fast = (await vsm.json('hsm', 'tier', 'list')).find((t: any) => t.name === 'fast')
  const pct = (bytes: number) => `${(100 * bytes / fast.size).toFixed(4)}%`
  await vsm.run('hsm', 'policy', 'set', 'pm', '--tier', 'cold', '--cold-after', '7d', '--premigrate', '--high', pct(fast.used - MiB), '--low', pct(fast.used - 5 * MiB))
  const second = await waitJob(await vsm.run('hsm', 'run'))
  assert.equal(second.result.migrated.map((m: any) => [m.path, m.action]), [['/pm/q0.img', 'release'], ['/pm/q1.img', 'migrate']])
  assert.is(readdirSync(archiveDir()).length, objects0 + 9 + 3, 'the release wrote nothing; the stale one was copied again')
  assert.is(used0 - await poolUsed(), 6 * MiB)
  assert.equal((await residency('pm/q0.img')).bytes, { cold: 3 * MiB })
  assert.equal((await residency('pm/q2.img')).premigrated, { cold: 3 * MiB })
  const c = (await vsm.json('hsm', 'check', '--dry-run')).tiers[0]
  assert.equal([c.missing, c.orphans.length], [[], 3], 'q1\'s stale copy is the only orphan; q2\'s copy is kept')
  for (const [i, name] of names.entries()) assert.ok(readFileSync(join(vsm.mount, 'pm', name)).equals(datas[i]), name)
  await fsckClean()
})

test('premigrated copies survive a restart and kill -9; a write in place whose stamp the crash lost is caught by their hash, not released onto the stale copy', async () => {
  // the last test's watermarks off: only pr/ is to move here
  await vsm.run('hsm', 'policy', 'set', 'pm', '--tier', 'cold', '--cold-after', '7d', '--premigrate')
  await vsm.run('hsm', 'check')
  mkdirSync(join(vsm.mount, 'pr'))
  const file = join(vsm.mount, 'pr', 'r0.img')
  const data = await makeDisk('pr/r0.img', 3 * MiB)
  const old = new Date(Date.now() - 40 * 86_400_000)
  utimesSync(file, old, old)
  await vsm.run('hsm', 'policy', 'set', 'pr', '--tier', 'cold', '--cold-after', '7d', '--premigrate')
  const first = await waitJob(await vsm.run('hsm', 'run'))
  assert.equal(first.result.migrated.map((m: any) => [m.path, m.action]), [['/pr/r0.img', 'premigrate']])
  await vsm.down()
  await vsm.up()
  assert.equal((await residency('pr/r0.img')).premigrated, { cold: 3 * MiB }, 'the copies are known after a restart')
  assert.equal((await vsm.json('hsm', 'check', '--dry-run')).tiers[0].orphans, [], 'check keeps the copies')
  // a write in place, straight to the daemon (O_DIRECT), then kill -9 before a commit carries the file's new stamp
  const patch = randomBytes(4096)
  const fd = openSync(file, constants.O_RDWR | constants.O_DIRECT)
  try {
    writeSync(fd, patch, 0, patch.length, MiB)
    vsm.kill9()
  } finally { try { closeSync(fd) } catch { /* the view died with the daemon */ } }
  patch.copy(data, MiB)
  await vsm.up()
  assert.equal((await residency('pr/r0.img')).premigrated, { cold: 3 * MiB }, 'the crash lost the stamp of the write: the record still looks valid')
  assert.ok(readFileSync(file).equals(data), 'the write reached the pool')
  const objects = readdirSync(archiveDir()).length
  const fast = (await vsm.json('hsm', 'tier', 'list')).find((t: any) => t.name === 'fast')
  const pct = (bytes: number) => `${(100 * bytes / fast.size).toFixed(4)}%`
  await vsm.run('hsm', 'policy', 'set', 'pr', '--tier', 'cold', '--cold-after', '7d', '--premigrate', '--high', pct(fast.used - MiB), '--low', pct(fast.used - 2 * MiB))
  const second = await waitJob(await vsm.run('hsm', 'run'))
  assert.equal(second.result.migrated.map((m: any) => [m.path, m.action]), [['/pr/r0.img', 'release']])
  assert.is(readdirSync(archiveDir()).length, objects + 3, 'the copies did not match the pool: copied again')
  assert.equal((await residency('pr/r0.img')).bytes, { cold: 3 * MiB })
  assert.ok(readFileSync(file).equals(data), 'every byte, the write in place included')
  assert.equal((await vsm.json('hsm', 'check', '--dry-run')).tiers[0].missing, [])
  await fsckClean()
})

test('an SFTP archive on a real sshd: unknown host key refused; migrate, every byte back, pool freed', async () => {
  const sdir = join(vsm.home, 'ssh')
  mkdirSync(sdir)
  sshd = await startSshd(sdir)
  const remote = join(vsm.home, 'remote')
  mkdirSync(remote)
  const url = `sftp://root@127.0.0.1:${sshd.port}${remote}`
  writeFileSync(join(sdir, 'empty_known_hosts'), '')
  const refused = await stderr(vsm.run('hsm', 'tier', 'add', 'far', '--archive', url, '--identity', sshd.identity, '--known-hosts', join(sdir, 'empty_known_hosts')))
  assert.match(refused, /refusing an unknown host key/)
  assert.not.ok((await vsm.json('hsm', 'tier', 'list')).some((t: any) => t.name === 'far'))
  await vsm.run('hsm', 'tier', 'add', 'far', '--archive', url, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts, '--timeout', '20s')
  const data = await makeDisk('c.img')
  const used0 = await poolUsed()
  await waitJob(await vsm.run('hsm', 'migrate', 'c.img', '--tier', 'far'))
  assert.equal((await residency('c.img')).bytes, { far: SIZE })
  assert.is(used0 - await poolUsed(), SIZE)
  assert.is(readdirSync(remote).length, SIZE / MiB)
  assert.ok(readFileSync(join(vsm.mount, 'c.img')).equals(data))
  await waitJob(await vsm.run('hsm', 'recall', 'c.img'))
  assert.equal((await residency('c.img')).bytes, { fast: SIZE })
  assert.ok(readFileSync(join(vsm.mount, 'c.img')).equals(data))
  await fsckClean()
})

test.run()
