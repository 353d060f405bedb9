// Freeze and thaw through the real mount: writes to a frozen disk wait (they are not
// failed) and land after thaw or after the freeze times out; in-band commands as
// extended attributes on the image file go through the same router as the socket.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync, spawn } from 'child_process'
import { readFileSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Starts a dd of 1 MiB of 0x5a into the disk; resolves when dd exits. */
function ddWrite(img: string) {
  const p = spawn('sh', ['-c', `head -c 1048576 /dev/zero | tr '\\0' Z | dd of=${img} bs=1M conv=notrunc,fsync status=none`])
  let done = false
  const exited = new Promise<number>((res) => p.on('exit', (c) => { done = true; res(c ?? 1) }))
  return { exited, isDone: () => done }
}

test('a frozen disk holds writes until thaw, then they land', async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'f.img', '--size', '16M')
  const img = join(vsm.mount, 'f.img')
  const frozen = await vsm.json('disk', 'freeze', 'f.img', '--timeout', '30s')
  assert.ok(frozen.frozenUntil > Date.now())
  const w = ddWrite(img)
  await sleep(800)
  assert.not.ok(w.isDone(), 'write went through a frozen disk')
  assert.is(readFileSync(img).subarray(0, 4).toString('hex'), '00000000')
  await vsm.run('disk', 'thaw', 'f.img')
  assert.is(await w.exited, 0)
  assert.is(readFileSync(img).subarray(0, 4).toString(), 'ZZZZ')
  assert.is((await vsm.json('disk', 'show', 'f.img')).frozenUntil, null)
})

test('a forgotten freeze thaws itself after its timeout', async () => {
  await vsm.run('disk', 'freeze', 'f.img', '--timeout', '1s')
  const t0 = Date.now()
  const w = ddWrite(join(vsm.mount, 'f.img'))
  assert.is(await w.exited, 0)
  assert.ok(Date.now() - t0 >= 700, `write finished after ${Date.now() - t0} ms`)
})

test('freeze refuses bad input; thaw of a thawed disk is an error', async () => {
  for (const args of [['disk', 'freeze', 'nosuch.img'], ['disk', 'freeze', 'f.img', '--timeout', 'soon'], ['disk', 'thaw', 'f.img']]) {
    let failed = false
    try { await vsm.run(...args) } catch { failed = true }
    assert.ok(failed, args.join(' '))
  }
})

test('getfattr user.vsm.info returns the disk as JSON', () => {
  const out = execFileSync('getfattr', ['--only-values', '-n', 'user.vsm.info', join(vsm.mount, 'f.img')], { encoding: 'utf8' })
  const info = JSON.parse(out)
  assert.is(info.path, 'f.img')
  assert.is(info.size, 16 << 20)
  assert.is(info.policies.volume, 'vol0')
})

test('ordinary user xattrs are stored; the vsm namespace is not writable as data', () => {
  const img = join(vsm.mount, 'f.img')
  execFileSync('setfattr', ['-n', 'user.owner', '-v', 'alice', img])
  assert.is(execFileSync('getfattr', ['--only-values', '-n', 'user.owner', img], { encoding: 'utf8' }), 'alice')
  let refused = false
  try { execFileSync('setfattr', ['-n', 'user.vsm.other', '-v', 'x', img], { stdio: 'pipe' }) } catch { refused = true }
  assert.ok(refused)
})

test.run()
