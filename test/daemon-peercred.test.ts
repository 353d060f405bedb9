// `vsm up --socket-group G` and SO_PEERCRED: a non-root user (made by the test) in G
// reaches the socket and commands the disks it owns — creates, snapshots, clones,
// freezes, shows and lists them — but gets EPERM (one line, nothing changed) on root's
// disks and on pool, device, volume, fs and daemon commands. Without --socket-group
// it cannot connect at all.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { existsSync, statSync } from 'fs'
import { join } from 'path'
import { makeVsm, VSM } from './helpers/daemon'
import { makeTestUser, TestUser } from './helpers/user'
import { processAlive } from '../src/cli/up'

const vsm = makeVsm({ deviceSize: '256M' })
const user: TestUser = makeTestUser('vsmpc')

/** `vsm ARGS --home HOME` as the test user: its exit status, stdout and stderr. */
function asUser(...args: string[]) {
  const r = user.run(VSM, [...args, '--home', vsm.home], { env: { PATH: process.env.PATH, HOME: '/' } })
  return { ...r, stderr: r.stderr.trim() }
}

function refused(args: string[], pattern = /not permitted for uid/) {
  const r = asUser(...args)
  assert.ok(r.status !== 0, `vsm ${args.join(' ')} was allowed for a user: ${r.stdout}`)
  assert.is(r.stderr.split('\n').length, 1, r.stderr)
  assert.match(r.stderr, pattern)
  return r
}

test.after(async () => {
  try { await vsm.cleanup() } finally { user.remove() }
})

test('--socket-group: the socket is root:group 0660 and the home traversable by the group only', async () => {
  await vsm.run('up', '--device-size', '256M', '--socket-group', user.name)
  const sock = statSync(join(vsm.home, 'vsm.sock'))
  assert.equal([sock.uid, sock.gid, sock.mode & 0o777], [0, user.gid, 0o660])
  const home = statSync(vsm.home)
  assert.equal([home.uid, home.gid, home.mode & 0o777], [0, user.gid, 0o710])
})

test('a user creates, snapshots, clones, freezes, shows and lists its own disks', async () => {
  await vsm.run('disk', 'create', 'root.img', '--size', '1M', '--mode', '0600')
  let r = asUser('disk', 'create', 'mine.img', '--size', '1M', '--json')
  assert.is(r.status, 0, r.stderr)
  const mine = JSON.parse(r.stdout)
  assert.equal([mine.uid, mine.gid], [user.uid, user.gid])
  r = asUser('snapshot', 'create', 'mine.img', 's1')
  assert.is(r.status, 0, r.stderr)
  r = asUser('disk', 'clone', 'mine.img@s1', 'mine2.img', '--json')
  assert.is(r.status, 0, r.stderr)
  assert.equal([JSON.parse(r.stdout).uid, JSON.parse(r.stdout).gid], [user.uid, user.gid])
  for (const args of [['disk', 'freeze', 'mine.img'], ['disk', 'thaw', 'mine.img'], ['disk', 'show', 'mine.img'], ['snapshot', 'list', 'mine.img'], ['status']]) {
    r = asUser(...args)
    assert.is(r.status, 0, `${args.join(' ')}: ${r.stderr}`)
  }
  r = asUser('disk', 'list', '--json')
  assert.is(r.status, 0, r.stderr)
  assert.equal(JSON.parse(r.stdout).map((d: any) => d.path).sort(), ['mine.img', 'mine2.img'])
})

test("a user is refused root's disks and every pool, device, volume, fs and daemon command, and nothing changes", async () => {
  const before = await vsm.json('status')
  refused(['snapshot', 'create', 'root.img', 's1'], /root\.img is not its disk/)
  refused(['disk', 'show', 'root.img'])
  refused(['disk', 'clone', 'root.img@x', 'stolen.img'])
  refused(['disk', 'delete', 'root.img'])
  refused(['disk', 'delete', 'mine.img'])
  refused(['disk', 'create', 'forroot.img', '--size', '1M', '--owner', 'root'])
  refused(['device', 'add', 'd9', join(vsm.home, 'd9.img'), '--size', '64M'])
  refused(['volume', 'create', 'v9', '--layout', 'concat', '--devices', 'd0', '--size', '1M'])
  refused(['device', 'offline', 'd1'])
  refused(['fs', 'check'])
  refused(['job', 'cancel', '1'])
  refused(['down'])
  refused(['ctl', 'shutdown'])
  assert.ok(processAlive(vsm.pid()))
  const after = await vsm.json('status')
  assert.equal(after.devices, before.devices)
  assert.equal(after.volumes.map((v: any) => [v.name, v.state]), before.volumes.map((v: any) => [v.name, v.state]))
  const disks = (await vsm.json('disk', 'list')).map((d: any) => d.path).sort()
  assert.equal(disks, ['mine.img', 'mine2.img', 'root.img'])
  assert.equal((await vsm.json('snapshot', 'list', 'root.img')).length, 0)
  assert.not.ok(existsSync(join(vsm.home, 'd9.img')))
})

test('without --socket-group the user cannot connect at all', async () => {
  await vsm.down()
  await vsm.up()
  const r = asUser('status')
  assert.ok(r.status !== 0)
  assert.is(r.stderr.split('\n').length, 1, r.stderr)
  assert.match(r.stderr, /permission denied/)
})

test.run()
