// Which FUSE binding serves the view: the native addon by default, fuse-native when
// asked, and fuse-native with a warning in the log when the addon cannot load.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { readFileSync, writeFileSync } from 'fs'
import { join } from 'path'
import { makeVsm, type Vsm } from './helpers/daemon'

const started: Vsm[] = []
test.after(async () => { for (const v of started) await v.cleanup() })

async function upWith(opts: Parameters<typeof makeVsm>[0]) {
  const vsm = makeVsm({ deviceSize: '1G', ...opts })
  started.push(vsm)
  await vsm.up()
  return vsm
}

/** A round trip through the mount: the binding really serves it. */
function roundTrip(vsm: Vsm) {
  const f = join(vsm.mount, 'probe.txt')
  writeFileSync(f, 'through the view\n')
  assert.is(readFileSync(f, 'utf8'), 'through the view\n')
}

test('up serves the view with the native addon by default', async () => {
  const vsm = await upWith({})
  assert.is((await vsm.json('status')).fuse, 'native')
  roundTrip(vsm)
  await vsm.down()
})

test('up --fuse fuse-native serves it with fuse-native', async () => {
  const vsm = await upWith({ fuse: 'fuse-native' })
  assert.is((await vsm.json('status')).fuse, 'fuse-native')
  roundTrip(vsm)
  await vsm.down()
})

test('an addon that cannot load falls back to fuse-native, with a warning in the log', async () => {
  const vsm = await upWith({ env: { VSM_FUSE_ADDON: '/nonexistent/vsm_fuse.node' } })
  assert.is((await vsm.json('status')).fuse, 'fuse-native')
  roundTrip(vsm)
  await vsm.down()
  const warned = readFileSync(join(vsm.home, 'log', 'vsm.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
    .some((l) => l.level === 40 && /native FUSE addon .* cannot load/.test(l.msg))
  assert.ok(warned, 'a warning names the addon that did not load')
})

test('a bad --fuse value is refused in one line', async () => {
  const vsm = makeVsm({ deviceSize: '1G' })
  started.push(vsm)
  const err = await vsm.run('up', '--fuse', 'bogus').then(() => null, (e) => e)
  assert.ok(err, 'up --fuse bogus fails')
  assert.match(err.stderr, /bogus/)
})

test.run()
