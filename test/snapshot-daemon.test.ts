// Snapshots through a real daemon and its FUSE view: a snapshot taken while a writer
// streams fsync'd writes holds exactly a prefix of them (every acknowledged one); the
// read-only view; revert (refused while open for writing unless --force); clones that
// diverge without touching the parent; delete gives back what only the snapshot held;
// and kill -9 during snapshot create, delete and flatten leaves every disk consistent.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync, spawn } from 'child_process'
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, writeSync, fsyncSync } from 'fs'
import { join } from 'path'
import { makeVsm, RunError } from './helpers/daemon'
import { ControlClient } from '../src/control/client'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const REC = 4096
const RECS = 2048 // 8 MiB of records, so the disk is reused in a ring

/** Record i: its number, then a byte pattern derived from it. */
function record(i: number): Buffer {
  const b = Buffer.alloc(REC, (i % 251) + 1)
  b.writeUInt32LE(i, 0)
  return b
}

/** A child process writing records 0,1,2,... each fsync'd; prints "ack N" after each. */
function streamWriter(img: string) {
  const src = `
    const fs = require('fs'); const fd = fs.openSync(${JSON.stringify(img)}, 'r+')
    for (let i = 0; ; i++) {
      const b = Buffer.alloc(${REC}, (i % 251) + 1); b.writeUInt32LE(i, 0)
      fs.writeSync(fd, b, 0, b.length, (i % ${RECS}) * ${REC}); fs.fsyncSync(fd)
      process.stdout.write('ack ' + i + '\\n')
    }`
  const p = spawn(process.execPath, ['-e', src], { stdio: ['ignore', 'pipe', 'inherit'] })
  let acked = -1, buf = ''
  p.stdout.on('data', (d: Buffer) => {
    buf += d.toString()
    const lines = buf.split('\n'); buf = lines.pop()!
    for (const l of lines) acked = Number(l.slice(4))
  })
  return { acked: () => acked, stop: () => new Promise<void>((r) => { p.on('exit', () => r()); p.kill('SIGKILL') }) }
}

/** Highest record number in an image of the ring, and whether all records below it (within the ring) are present. */
function prefixOf(img: string): { n: number; complete: boolean } {
  const data = readFileSync(img).subarray(0, RECS * REC)
  let n = -1
  for (let k = 0; k < RECS; k++) {
    const blk = data.subarray(k * REC, (k + 1) * REC)
    if (blk[4] !== 0) n = Math.max(n, blk.readUInt32LE(0))
  }
  for (let i = Math.max(0, n - RECS + 1); i <= n; i++) {
    if (!data.subarray((i % RECS) * REC, (i % RECS + 1) * REC).equals(record(i))) return { n, complete: false }
  }
  return { n, complete: true }
}

async function failsWith(args: string[], pattern: RegExp) {
  try { await vsm.run(...args) } catch (e) { assert.match((e as RunError).stderr, pattern); return }
  assert.unreachable(`${args.join(' ')} should fail`)
}

test('snapshots taken while a writer streams fsync\'d writes each hold a prefix with every acknowledged write', async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'w.img', '--size', '32M')
  const w = streamWriter(join(vsm.mount, 'w.img'))
  const taken: { name: string; before: number; after: number }[] = []
  try {
    while (w.acked() < 20) await sleep(20)
    for (let k = 0; k < 6; k++) {
      const before = w.acked()
      await vsm.run('snapshot', 'create', 'w.img', `s${k}`)
      taken.push({ name: `s${k}`, before, after: w.acked() })
      await sleep(150)
    }
  } finally { await w.stop() }
  for (const s of taken) {
    const p = prefixOf(join(vsm.mount, '.snapshots', 'w.img', s.name))
    assert.ok(p.complete, `${s.name} is not a prefix of the writes (up to ${p.n})`)
    assert.ok(p.n >= s.before, `${s.name} holds writes up to ${p.n}, but ${s.before} was acknowledged before it`)
    assert.ok(p.n <= s.after + 1, `${s.name} holds write ${p.n}, begun after the snapshot returned (${s.after} acknowledged then)`)
  }
  const list = await vsm.json('snapshot', 'list', 'w.img')
  assert.equal(list.map((s: any) => s.name), taken.map((s) => s.name))
  assert.ok(BigInt(list[5].stamp) > BigInt(list[0].stamp))
  assert.ok(BigInt((await vsm.json('disk', 'show', 'w.img')).stamp) > BigInt(list[5].stamp))
})

test('the snapshot view is read-only; bad names and missing snapshots are refused', async () => {
  const snap = join(vsm.mount, '.snapshots', 'w.img', 's0')
  let code = ''
  try { openSync(snap, 'r+') } catch (e) { code = (e as NodeJS.ErrnoException).code! }
  assert.is(code, 'EROFS')
  await failsWith(['snapshot', 'create', 'w.img', 'a/b'], /name must not contain '\/' or '@'/)
  await failsWith(['snapshot', 'create', 'w.img', 's0'], /already exists/)
  await failsWith(['snapshot', 'delete', 'w.img', 'nosuch'], /no snapshot/)
  await failsWith(['disk', 'create', '.snapshots/x.img', '--size', '1M'], /read-only snapshot views/)
  await failsWith(['disk', 'clone', 'w.img@nosuch', 'x.img'], /no snapshot/)
})

test('a disk in a subdirectory: snapshot by setfattr, seen at .snapshots/DIR/DISK/NAME', async () => {
  mkdirSync(join(vsm.mount, 'vm'))
  await vsm.run('disk', 'create', 'vm/x.img', '--size', '4M')
  const img = join(vsm.mount, 'vm', 'x.img')
  const fd = openSync(img, 'r+')
  writeSync(fd, Buffer.from('before'), 0, 6, 0); fsyncSync(fd)
  execFileSync('setfattr', ['-n', 'user.vsm.snapshot', '-v', 'inband', img])
  writeSync(fd, Buffer.from('after!'), 0, 6, 0); fsyncSync(fd); closeSync(fd)
  assert.equal(readdirSync(join(vsm.mount, '.snapshots', 'vm', 'x.img')), ['inband'])
  assert.is(readFileSync(join(vsm.mount, '.snapshots', 'vm', 'x.img', 'inband')).subarray(0, 6).toString(), 'before')
  assert.is(readFileSync(img).subarray(0, 6).toString(), 'after!')
  assert.not.ok(readdirSync(vsm.mount).includes('.snapshots'), 'the snapshot view is hidden from listings')
})

test('revert: refused while open for writing unless --force; then the old contents', async () => {
  await vsm.run('disk', 'create', 'r.img', '--size', '16M')
  const img = join(vsm.mount, 'r.img')
  const fd = openSync(img, 'r+')
  writeSync(fd, Buffer.alloc(1 << 20, 0x11), 0, 1 << 20, 0); fsyncSync(fd)
  // the reply is this snapshot's entry of the list (computed for it alone)
  const made = await vsm.json('snapshot', 'create', 'r.img', 'old')
  assert.equal(made, (await vsm.json('snapshot', 'list', 'r.img')).find((x: any) => x.name === 'old'))
  assert.is(made.uniqueBytes, 0)
  writeSync(fd, Buffer.alloc(1 << 20, 0x22), 0, 1 << 20, 0); fsyncSync(fd)
  await failsWith(['snapshot', 'revert', 'r.img', 'old'], /open for writing/)
  closeSync(fd)
  await vsm.run('snapshot', 'revert', 'r.img', 'old')
  const b = Buffer.alloc(1 << 20)
  const rfd = openSync(img, 'r'); readSync(rfd, b, 0, b.length, 0)
  assert.ok(b.equals(Buffer.alloc(1 << 20, 0x11)))
  const fd2 = openSync(img, 'r+')
  await vsm.run('snapshot', 'revert', 'r.img', 'old', '--force')
  closeSync(fd2); closeSync(rfd)
  await vsm.run('disk', 'compare', 'r.img', '.snapshots/r.img/old')
})

test('a clone diverges without touching its parent; flatten makes it independent; delete frees what only the snapshot held', async () => {
  await vsm.run('disk', 'clone', 'r.img@old', 'nodir/c.img').then(() => assert.unreachable('no parent dir'), () => undefined)
  await vsm.run('disk', 'clone', 'r.img@old', 'c.img')
  const clone = await vsm.json('disk', 'show', 'c.img')
  assert.is(clone.origin, 'r.img@old')
  const fd = openSync(join(vsm.mount, 'c.img'), 'r+')
  writeSync(fd, Buffer.alloc(4096, 0x33), 0, 4096, 8192); fsyncSync(fd); closeSync(fd)
  await vsm.run('disk', 'compare', 'r.img', 'r.img@old') // parent unchanged
  let code = 0
  try { await vsm.run('disk', 'compare', 'c.img', 'r.img') } catch (e) { code = (e as RunError).code }
  assert.is(code, 1)
  const map = await vsm.json('disk', 'map', 'c.img')
  assert.ok(map.extents.some((e: any) => e.layer === 'shared') && map.extents.some((e: any) => e.layer === 'live'))
  const job = await vsm.json('disk', 'flatten', 'c.img')
  await vsm.run('job', 'wait', String(job.job))
  assert.ok((await vsm.json('disk', 'map', 'c.img')).extents.every((e: any) => e.layer === 'live'))
  assert.is((await vsm.json('disk', 'show', 'c.img')).origin, null)
  // r.img was reverted to `old`, then left alone: `old` holds nothing alone, the 1 MiB
  // of 0x22 written before the revert is gone already; make it hold something
  const rfd = openSync(join(vsm.mount, 'r.img'), 'r+')
  writeSync(rfd, Buffer.alloc(2 << 20, 0x44), 0, 2 << 20, 0); fsyncSync(rfd); closeSync(rfd)
  const [s] = await vsm.json('snapshot', 'list', 'r.img')
  assert.is(s.uniqueBytes, 1 << 20) // its 1 MiB of 0x11 (the clone copied its own)
  // free space is read just after a mount (its checkpoint done, no tree work pending):
  // while the fs runs, the room it keeps for metadata moves with the work not yet checkpointed
  const quietFree = async () => { await vsm.down(); await vsm.up(); return (await vsm.json('status')).fs.free }
  const free0 = await quietFree()
  const del = await vsm.json('snapshot', 'delete', 'r.img', 'old')
  assert.is(del.freedBytes, 1 << 20)
  assert.is(await quietFree() - free0, 1 << 20)
  const c = await vsm.run('disk', 'check', 'c.img')
  assert.match(c, /consistent/)
})

test('disk map comes a page at a time (no reply outgrows a frame); the CLI gathers every page', async () => {
  await vsm.run('disk', 'create', 'frag.img', '--size', '128M')
  const fd = openSync(join(vsm.mount, 'frag.img'), 'r+')
  const n = 8300 // every other 4 KiB block: one extent each, more than one default page
  for (let i = 0; i < n; i++) writeSync(fd, Buffer.alloc(4096, (i % 250) + 1), 0, 4096, i * 8192)
  fsyncSync(fd); closeSync(fd)
  const c = await ControlClient.connect(join(vsm.home, 'vsm.sock'))
  try {
    const p1 = await c.call('disk.map', { path: 'frag.img', limit: 3 })
    assert.equal(p1.extents.map((e: any) => e.offset), [0, 8192, 16384])
    assert.is(p1.next, 24576)
    assert.is(p1.allocated, n * 4096, 'the total covers every page')
    const p2 = await c.call('disk.map', { path: 'frag.img', from: 8193, limit: 2 })
    assert.equal(p2.extents.map((e: any) => e.offset), [16384, 24576], 'from: extents starting at or after it')
    const last = await c.call('disk.map', { path: 'frag.img', from: (n - 1) * 8192 })
    assert.is(last.extents.length, 1)
    assert.is(last.next, null)
    const err = await c.call('disk.map', { path: 'frag.img', limit: 0 }).then(() => null, (e) => e)
    assert.is(err?.code, 'EINVAL')
  } finally { await c.close() }
  const all = await vsm.json('disk', 'map', 'frag.img')
  assert.is(all.extents.length, n)
  assert.is(all.next, null)
  assert.ok(all.extents.every((e: any, i: number) => e.offset === i * 8192 && e.length === 4096))
})

test('kill -9 during snapshot create, delete and flatten leaves every disk consistent', async () => {
  for (let round = 0; round < 3; round++) {
    await vsm.run('disk', 'create', `k${round}.img`, '--size', '64M')
    const img = join(vsm.mount, `k${round}.img`)
    const fd = openSync(img, 'r+')
    for (let m = 0; m < 24; m++) writeSync(fd, Buffer.alloc(1 << 20, m + 1), 0, 1 << 20, m << 20)
    fsyncSync(fd); closeSync(fd)
    await vsm.run('snapshot', 'create', `k${round}.img`, 'base')
    await vsm.run('disk', 'clone', `k${round}.img@base`, `k${round}c.img`)
    const w = streamWriter(join(vsm.mount, `k${round}c.img`))
    await vsm.json('disk', 'flatten', `k${round}c.img`)
    const churn = (async () => {
      for (let k = 0; ; k++) {
        await vsm.run('snapshot', 'create', `k${round}.img`, `t${k}`)
        if (k % 2) await vsm.run('snapshot', 'delete', `k${round}.img`, `t${k - 1}`)
      }
    })().catch(() => undefined)
    await sleep(400 + round * 500)
    vsm.kill9()
    await w.stop()
    await churn
    await vsm.up()
    for (const d of await vsm.json('disk', 'list')) {
      const out = await vsm.run('disk', 'check', d.path)
      assert.match(out, /consistent/, `${d.path} after kill -9 (round ${round})`)
    }
    const base = join(vsm.mount, '.snapshots', `k${round}.img`, 'base')
    const b = Buffer.alloc(1 << 20)
    const sfd = openSync(base, 'r')
    for (let m = 0; m < 24; m += 7) { readSync(sfd, b, 0, b.length, m << 20); assert.ok(b.equals(Buffer.alloc(1 << 20, m + 1)), `base snapshot block ${m}`) }
    closeSync(sfd)
  }
})

test.run()
