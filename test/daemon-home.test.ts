// The home and the socket as an attacker or a careless operator would meet them: a
// home others may write into (or owned by another user) is refused before anything is
// made in it; links planted at vsm.pid or log/ are not followed; 300 idle connections
// do not lock `vsm status` out.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { chmodSync, chownSync, existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'fs'
import * as net from 'net'
import { tmpdir } from 'os'
import { join } from 'path'
import { makeVsm, RunError } from './helpers/daemon'
import { isMounted } from '../src/daemon/mounts'

const vsm = makeVsm({ deviceSize: '256M' })
const outside = mkdtempSync(join(tmpdir(), 'vsm-outside-'))
test.after(async () => {
  await vsm.cleanup()
  rmSync(outside, { recursive: true, force: true })
})

async function refused(): Promise<string> {
  const err = await vsm.up().then(() => null, (e: RunError) => e)
  assert.ok(err, 'up succeeded')
  const msg = err!.stderr.trim()
  assert.is(msg.split('\n').length, 1, msg)
  assert.not.ok(isMounted(vsm.mount))
  return msg
}

test('a home writable by group or others is refused in one line, and nothing is made in it', async () => {
  for (const mode of [0o777, 0o770, 0o1777]) {
    chmodSync(vsm.home, mode)
    assert.match(await refused(), /writable by/)
    assert.equal(readdirSync(vsm.home), [], `made in a refused home: ${readdirSync(vsm.home)}`)
  }
  chmodSync(vsm.home, 0o700)
})

test('a home owned by another user is refused in one line', async () => {
  chownSync(vsm.home, 65534, 65534)
  try {
    assert.match(await refused(), /owned by uid 65534/)
    assert.equal(readdirSync(vsm.home), [])
  } finally {
    chownSync(vsm.home, 0, 0)
  }
})

test('a log/ symlink out of the home is refused; nothing is written where it points', async () => {
  symlinkSync(outside, join(vsm.home, 'log'))
  try {
    await refused()
    assert.equal(readdirSync(outside), [])
  } finally {
    rmSync(join(vsm.home, 'log'))
  }
})

test('a vsm.pid symlink does not make the daemon overwrite its target', async () => {
  const victim = join(outside, 'victim')
  writeFileSync(victim, 'precious\n')
  symlinkSync(victim, join(vsm.home, 'vsm.pid'))
  await vsm.up()
  assert.is(readFileSync(victim, 'utf8'), 'precious\n')
  assert.ok(lstatSync(join(vsm.home, 'vsm.pid')).isFile(), 'vsm.pid is still a symlink')
  assert.ok(vsm.pid() > 0)
  assert.not.ok(existsSync(join(vsm.home, `vsm.pid.tmp-${vsm.pid()}`)))
})

test('300 idle connections, then vsm status still answers', async () => {
  const socks: net.Socket[] = []
  try {
    for (let i = 0; i < 300; i++) {
      const s = net.connect(join(vsm.home, 'vsm.sock'))
      s.on('error', () => {})
      socks.push(s)
      // each is let in and greeted before the next, so all 300 really were connected
      await new Promise<void>((res) => { s.once('data', () => res()); s.once('close', () => res()) })
    }
    const st = await vsm.json('status')
    assert.is(st.pid, vsm.pid())
  } finally {
    for (const s of socks) s.destroy()
  }
})

test.run()
