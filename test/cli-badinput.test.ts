// Bad input to a running daemon: bad names, absurd sizes, missing objects through the
// CLI, and garbage frames on the socket. Each gets one clear line and a non-zero
// exit, nothing changes, and the daemon keeps serving.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { connect } from 'net'
import { randomBytes } from 'crypto'
import { join } from 'path'
import { closeSync, openSync } from 'fs'
import { makeVsm, RunError } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())

async function refused(args: string[], pattern: RegExp) {
  try {
    await vsm.run(...args)
  } catch (e) {
    const err = e as RunError
    const lines = err.stderr.trim().split('\n')
    assert.is(lines.length, 1, `one line of error for ${args.join(' ')}: ${err.stderr}`)
    assert.match(lines[0], pattern)
    assert.ok(err.code !== 0)
    return
  }
  assert.unreachable(`accepted: vsm ${args.join(' ')}`)
}

test('bad names, sizes and missing objects are refused and change nothing', async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'ok.img', '--size', '1M')
  const before = await vsm.json('status')
  const disksBefore = await vsm.json('disk', 'list')
  await refused(['disk', 'create', '../escape.img', '--size', '1M'], /\.\./)
  await refused(['disk', 'create', '/abs.img', '--size', '1M'], /relative/)
  await refused(['disk', 'create', 'a/../../b', '--size', '1M'], /\.\./)
  await refused(['disk', 'create', 'zero.img', '--size', '0'], /size must be more than 0/)
  await refused(['disk', 'create', 'neg.img', '--size', '-5'], /./)
  await refused(['disk', 'create', 'huge.img', '--size', '999999T'], /limit|range/)
  await refused(['disk', 'create', 'odd.img', '--size', '1000'], /multiple of 512/)
  await refused(['disk', 'create', 'nodir/x.img', '--size', '1M'], /parent/)
  await refused(['disk', 'create', 'ok.img', '--size', '1M'], /exists/)
  await refused(['disk', 'create', 'v.img', '--size', '1M', '--volume', 'nosuch'], /nosuch/)
  await refused(['disk', 'show', 'missing.img'], /no such disk/)
  await refused(['disk', 'delete', 'missing.img'], /no such disk/)
  await refused(['disk', 'resize', 'ok.img', '512K'], /shrink/)
  await refused(['volume', 'show', 'nosuch'], /nosuch/)
  await refused(['volume', 'create', 'v/x', '--layout', 'mirror', '--devices', 'd0,d1', '--size', '1M'], /name/)
  await refused(['volume', 'create', 'v2', '--layout', 'raid9', '--devices', 'd0,d1', '--size', '1M'], /layout/)
  await refused(['volume', 'create', 'v3', '--layout', 'concat', '--devices', 'd0,nosuch', '--size', '1M'], /nosuch/)
  await refused(['volume', 'create', 'v4', '--layout', 'concat', '--devices', 'd0', '--size', '999T'], /space|ENOSPC|enough/i)
  await refused(['device', 'add', '../d', '/tmp/x'], /name/)
  await refused(['device', 'remove', 'd0'], /use|busy/i)
  await refused(['ctl', '0x7fffffff'], /./)
  await refused(['ctl', 'disk.create', '{not json'], /JSON/)
  const after = await vsm.json('status')
  assert.equal(after.devices, before.devices)
  assert.equal(after.volumes, before.volumes)
  assert.equal(await vsm.json('disk', 'list'), disksBefore)
})

test('garbage, truncated and oversized frames do not stop the daemon', async () => {
  const sock = join(vsm.home, 'vsm.sock')
  const send = (bytes: Buffer, endEarly = true) => new Promise<void>((res) => {
    const c = connect(sock)
    // Read the greeting: a paused socket is not an active handle, and the test would exit under it.
    c.resume()
    c.on('error', () => res())
    c.on('close', () => res())
    c.on('connect', () => { c.write(bytes); if (endEarly) c.end(); else setTimeout(() => c.destroy(), 200) })
  })
  for (let i = 0; i < 50; i++) await send(randomBytes(1 + Math.floor(Math.random() * 4096)), i % 2 === 0)
  const huge = Buffer.alloc(20); huge.writeUInt32LE(0xffffffff, 4)
  await send(huge, false)
  await send(Buffer.alloc(7))
  const st = await vsm.json('status')
  assert.ok(st.pid > 0)
  assert.is((await vsm.json('disk', 'list')).length, 1)
})

test('wrong types and unknown fields are refused and change nothing: {"force":"false"} does not delete an open disk', async () => {
  await vsm.run('disk', 'create', 'open.img', '--size', '1M')
  const fd = openSync(join(vsm.mount, 'open.img'), 'r+')
  try {
    const before = await vsm.json('disk', 'list')
    await refused(['ctl', 'disk.delete', '{"path":"open.img","force":"false"}'], /disk\.delete: force must be true or false, not "false"/)
    await refused(['ctl', 'disk.delete', '{"path":"open.img","force":1}'], /force must be true or false/)
    await refused(['ctl', 'disk.resize', '{"path":"open.img","size":524288,"shrink":"false"}'], /shrink must be true or false/)
    await refused(['ctl', 'disk.delete', '{"path":"open.img","forse":true}'], /unknown field 'forse'/)
    await refused(['ctl', 'disk.create', '{"path":"new.img","size":1048576,"colour":"red"}'], /unknown field 'colour'/)
    await refused(['ctl', 'disk.create', '{"path":"new.img","size":"1M"}'], /size must be a number/)
    await refused(['ctl', 'disk.create', '{"path":"new\\n.img","size":1048576}'], /path must not contain control characters/)
    await refused(['disk', 'create', 'a@b.img', '--size', '1M'], /'@'/)
    await refused(['snapshot', 'create', 'open.img', 'bad\tname'], /control characters/)
    await refused(['ctl', 'volume.grow', '{"name":"vol0","size":1073741824,"rate":-1}'], /rate must be more than 0/)
    assert.equal(await vsm.json('disk', 'list'), before)
    const d = await vsm.json('disk', 'show', 'open.img')
    assert.is(d.size, 1 << 20)
    assert.is(d.open, 1)
    assert.equal(await vsm.json('snapshot', 'list', 'open.img'), [])
  } finally {
    closeSync(fd)
  }
  await vsm.run('disk', 'delete', 'open.img')
})

test('a second daemon on the same home is refused; status without a daemon is one clear line', async () => {
  const out = await vsm.run('up')
  assert.match(out, /already running/)
  await vsm.down()
  await refused(['status'], /not running/)
})

test.run()
