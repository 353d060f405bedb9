// Refusals that protect data, against a real daemon through bin/vsm: deleting a disk
// that has snapshots needs --recursive (it used to take them silently), and shrinking
// an open disk needs --force. Each refusal is one line and changes nothing. Also the
// human output of those disk commands: units, local dates, no raw JSON or epoch numbers.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { closeSync, existsSync, openSync, readSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm, RunError } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '512M' })
test.before(() => vsm.up())
test.after(() => vsm.cleanup())

async function refused(args: string[], pattern: RegExp) {
  const err = await vsm.run(...args).then(() => null, (e: RunError) => e)
  assert.ok(err, `accepted: vsm ${args.join(' ')}`)
  const lines = err!.stderr.trim().split('\n')
  assert.is(lines.length, 1, err!.stderr)
  assert.match(lines[0], pattern)
}

test('disk delete of a disk with snapshots is refused without --recursive, naming them; with it, they go too', async () => {
  await vsm.run('disk', 'create', 'snapped.img', '--size', '1M')
  await vsm.run('snapshot', 'create', 'snapped.img', 's1')
  await vsm.run('snapshot', 'create', 'snapped.img', 's2')
  await refused(['disk', 'delete', 'snapped.img'], /has 2 snapshot\(s\) \(s1, s2\): pass --recursive/)
  await refused(['ctl', 'disk.delete', '{"path":"snapped.img","force":true}'], /--recursive/)
  assert.equal((await vsm.json('snapshot', 'list', 'snapped.img')).map((s: any) => s.name), ['s1', 's2'])
  assert.ok(existsSync(join(vsm.mount, '.snapshots', 'snapped.img', 's1')))
  const out = await vsm.run('disk', 'delete', 'snapped.img', '--recursive')
  assert.match(out, /deleted disk snapped\.img and its snapshot\(s\) s1, s2/)
  // asked of the daemon: the kernel may still hold the view's entries for its cache timeout
  assert.not.ok((await vsm.json('disk', 'list')).some((d: any) => d.path === 'snapped.img'))
  await refused(['snapshot', 'list', 'snapped.img'], /no such disk/)
  // a disk without snapshots needs nothing more
  await vsm.run('disk', 'create', 'plain.img', '--size', '1M')
  assert.equal(await vsm.json('disk', 'delete', 'plain.img'), { deleted: 'plain.img', snapshots: [] })
})

test('disk resize --shrink of an open disk is refused without --force; the size and the data stay', async () => {
  await vsm.run('disk', 'create', 'busy.img', '--size', '2M')
  const file = join(vsm.mount, 'busy.img')
  const tail = Buffer.alloc(4096, 0x5a)
  const fd = openSync(file, 'r+')
  try {
    writeSync(fd, tail, 0, tail.length, (2 << 20) - 4096)
    await refused(['disk', 'resize', 'busy.img', '1M', '--shrink'], /disk is open \(1 handle\(s\)\): busy\.img.*--force/)
    assert.is((await vsm.json('disk', 'show', 'busy.img')).size, 2 << 20)
    const back = Buffer.alloc(4096)
    readSync(fd, back, 0, back.length, (2 << 20) - 4096)
    assert.ok(back.equals(tail), 'the tail was cut off')
    // growing an open disk is fine
    assert.is((await vsm.json('disk', 'resize', 'busy.img', '3M')).size, 3 << 20)
    assert.is((await vsm.json('disk', 'resize', 'busy.img', '1M', '--shrink', '--force')).size, 1 << 20)
  } finally {
    closeSync(fd)
  }
  // closed, --shrink alone is enough (FUSE's release comes after close returns: poll)
  const deadline = Date.now() + 5000
  while ((await vsm.json('disk', 'show', 'busy.img')).open && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  assert.is((await vsm.json('disk', 'resize', 'busy.img', '512K', '--shrink')).size, 512 << 10)
})

test('human output of disk show, snapshot list and freeze: sizes with units, local dates, no JSON or epoch numbers', async () => {
  await vsm.run('disk', 'create', 'shown.img', '--size', '3M')
  await vsm.run('snapshot', 'create', 'shown.img', 'first')
  const d = await vsm.json('disk', 'show', 'shown.img')
  const local = (ms: number) => {
    const t = new Date(ms); const p = (n: number) => String(n).padStart(2, '0')
    return `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())} ${p(t.getHours())}:${p(t.getMinutes())}:${p(t.getSeconds())}`
  }
  const outs = [
    await vsm.run('disk', 'show', 'shown.img'),
    await vsm.run('snapshot', 'list', 'shown.img'),
    await vsm.run('disk', 'freeze', 'shown.img', '--timeout', '1m'),
  ]
  await vsm.run('disk', 'thaw', 'shown.img')
  for (const out of outs) {
    assert.not.match(out, /[{}[\]"]/, `raw JSON in: ${out}`)
    assert.not.match(out, /\b1\d{12}\b/, `an epoch number in: ${out}`)
    assert.not.match(out, /\d{4}-\d\d-\d\dT/, `an ISO (UTC) date in: ${out}`)
  }
  assert.match(outs[0], /size\s+3M \(/)
  assert.ok(outs[0].includes(local(d.created)), outs[0])
  assert.match(outs[1], /first\s+3M/)
  assert.match(outs[2], /frozen until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/)
  await vsm.run('disk', 'delete', 'shown.img', '--recursive')
})

test.run()
