// Owners and modes through a real --allow-other mount: a user made by the test writes
// the disk it owns and is refused a root 0600 disk by the kernel (default_permissions);
// root's chown through the view persists over a restart; bad --owner/--mode change nothing.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, statSync } from 'fs'
import { join } from 'path'
import { makeVsm, RunError } from './helpers/daemon'
import { makeTestUser, TestUser } from './helpers/user'

const vsm = makeVsm({ deviceSize: '1G' })
let user: TestUser
let uid = -1, gid = -1

const asUser = (cmd: string, args: string[]) => user.run(cmd, args)

test.before(() => {
  user = makeTestUser('vsmt')
  uid = user.uid
  gid = user.gid
})

test.after(async () => {
  try { await vsm.cleanup() } finally { user.remove() }
})

test('a user writes the disk it owns and gets EACCES on a root 0600 disk (--allow-other)', async () => {
  // the user must be able to reach the mount point inside the home
  chmodSync(vsm.home, 0o711)
  await vsm.up('--allow-other')
  assert.match(readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.includes(vsm.mount)) ?? '', /default_permissions.*allow_other|allow_other.*default_permissions/)
  const mine = await vsm.json('disk', 'create', 'mine.img', '--size', '4M', '--owner', user.name, '--mode', '0600')
  assert.equal([mine.uid, mine.gid, mine.mode], [uid, gid, 0o600])
  await vsm.run('disk', 'create', 'root.img', '--size', '4M', '--mode', '600')
  const img = join(vsm.mount, 'mine.img')
  const st = statSync(img)
  assert.equal([st.uid, st.gid, st.mode & 0o7777], [uid, gid, 0o600])
  const w = asUser('dd', ['if=/dev/urandom', `of=${img}`, 'bs=64k', 'count=16', 'conv=notrunc,fsync', 'status=none'])
  assert.is(w.status, 0, w.stderr)
  const r = asUser('cmp', ['-n', '1048576', img, img])
  assert.is(r.status, 0, r.stderr)
  const denied = asUser('dd', [`if=${join(vsm.mount, 'root.img')}`, 'of=/dev/null', 'count=1', 'status=none'])
  assert.is.not(denied.status, 0)
  assert.match(denied.stderr, /Permission denied/)
  const rm = asUser('rm', ['-f', join(vsm.mount, 'root.img')])
  assert.match(rm.stderr, /Permission denied/)
  assert.ok(existsSync(join(vsm.mount, 'root.img')))
  // the owner may chmod its own disk; it may not give it away
  assert.is(asUser('chmod', ['0640', img]).status, 0)
  assert.is(statSync(img).mode & 0o7777, 0o640)
  assert.match(asUser('chown', ['root', img]).stderr, /not permitted/)
})

test('what a user creates through the view is its own (uid and gid of the request)', () => {
  const dir = join(vsm.mount, 'home-of-user')
  mkdirSync(dir, { mode: 0o755 })
  chownSync(dir, uid, gid)
  for (const [cmd, args] of [['touch', [join(dir, 'file')]], ['mkdir', [join(dir, 'sub')]], ['ln', ['-s', 'file', join(dir, 'link')]], ['mkfifo', [join(dir, 'fifo')]]] as const) {
    const r = asUser(cmd, [...args])
    assert.is(r.status, 0, `${cmd}: ${r.stderr}`)
  }
  for (const name of ['file', 'sub', 'link', 'fifo']) {
    const st = lstatSync(join(dir, name))
    assert.equal([st.uid, st.gid], [uid, gid], name)
  }
})

test('chown by root through the view changes the owner and persists over a restart', async () => {
  const img = join(vsm.mount, 'root.img')
  chownSync(img, uid, gid)
  assert.equal([statSync(img).uid, statSync(img).gid], [uid, gid])
  // the user, now the owner, may read it
  const r = asUser('dd', [`if=${img}`, 'of=/dev/null', 'count=1', 'status=none'])
  assert.is(r.status, 0, r.stderr)
  await vsm.down()
  await vsm.up('--allow-other')
  const st = statSync(img)
  assert.equal([st.uid, st.gid, st.mode & 0o7777], [uid, gid, 0o600])
  assert.is(statSync(join(vsm.mount, 'mine.img')).mode & 0o7777, 0o640)
  const show = await vsm.json('disk', 'show', 'root.img')
  assert.equal([show.uid, show.gid, show.mode], [uid, gid, 0o600])
})

test('without --allow-other the mount stays root-only and root is unaffected', async () => {
  await vsm.down()
  await vsm.up()
  const line = readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.includes(vsm.mount)) ?? ''
  assert.not.match(line, /allow_other/)
  assert.ok(readFileSync(join(vsm.mount, 'root.img')).length === 4 << 20)
  const denied = asUser('stat', [join(vsm.mount, 'mine.img')])
  assert.is.not(denied.status, 0)
})

test('a bad --owner or --mode is one line and creates nothing', async () => {
  for (const [opt, val, msg] of [['--owner', 'no-such-user-vsm', /no such user/], ['--owner', `${user.name}:no-such-group-vsm`, /no such group/],
    ['--owner', 'a b', /bad user name/], ['--mode', '9999', /mode must be octal permission bits/], ['--mode', '12345', /mode must be octal permission bits/], ['--owner', ':root', /bad owner/]] as const) {
    const e = await vsm.run('disk', 'create', 'bad.img', '--size', '1M', opt, val).then(() => null, (x: RunError) => x)
    assert.ok(e, `${opt} ${val} accepted`)
    assert.match(e!.stderr, msg)
    assert.is(e!.stderr.trim().split('\n').length, 1, e!.stderr)
    assert.not.ok(existsSync(join(vsm.mount, 'bad.img')))
  }
  const byId = await vsm.json('disk', 'create', 'ids.img', '--size', '1M', '--owner', `${uid}:0`)
  assert.equal([byId.uid, byId.gid, byId.mode], [uid, 0, 0o644])
})

test.run()
