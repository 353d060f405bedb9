// A backing device that stops answering, for real: one copy of a mirror lives on a
// qemu-storage-daemon FUSE export whose daemon is SIGSTOPped, so every request on it
// waits in the kernel. The control socket must keep answering (status, volume show),
// an operator's offline must take the device out and let the writes waiting on it
// finish on the other copy, and with no operator the pool's I/O timeout must do the same.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFile } from 'child_process'
import { createHash } from 'crypto'
import { promises as fsp, readFileSync } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { makeVsm, type Vsm } from './helpers/daemon'
import { startQsdExport, type QsdExport } from './helpers/qsd'

const MiB = 1 << 20
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const sum = (b: Buffer) => createHash('sha256').update(b).digest('hex')

let dir = ''
let qsd: QsdExport | undefined
const vsms: Vsm[] = []
test.after(async () => {
  for (const v of vsms.reverse()) await v.cleanup().catch(() => {})
  await qsd?.stop()
  if (dir) await fsp.rm(dir, { recursive: true, force: true })
})

/** Resolves with the command's output, or rejects when it has not answered in ms. */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => { throw new Error(`${what} did not answer in ${ms} ms`) })])
}

/** dd of `count` MiB of the pattern at `seekMiB` into the disk, fsync'd, in another process (its writes hang, not ours). */
function ddWrite(file: string, seekMiB: number, data: Buffer): Promise<void> {
  return new Promise((res, rej) => {
    const p = execFile('dd', [`of=${file}`, 'bs=1M', `seek=${seekMiB}`, 'conv=fsync,notrunc', 'status=none'], (err, _o, stderr) =>
      err ? rej(new Error(`dd: ${stderr || err.message}`)) : res())
    p.stdin!.end(data)
  })
}

const pattern = (n: number, seed: number) => {
  const b = Buffer.alloc(n * MiB)
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i)
  return b
}

test('a hung mirror device: the socket answers, offline takes it out and the waiting write completes; the I/O timeout does the same alone', async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'vsm-hang-'))
  qsd = await startQsdExport(dir, 64 * MiB)
  // a timeout far beyond the test: the operator's offline is what ends the hang here
  const vsm = makeVsm({ deviceSize: '256M', env: { VSM_IO_TIMEOUT: '600' } })
  vsms.push(vsm)
  await vsm.up()
  await vsm.run('device', 'add', 'x1', path.join(dir, 'x1.img'), '--size', '64M')
  await vsm.run('device', 'add', 'hung', qsd.path)
  await vsm.run('volume', 'create', 'v1', '--layout', 'mirror', '--devices', 'x1,hung', '--size', '48M')
  await vsm.run('fs', 'add-volume', 'v1')
  await vsm.run('disk', 'create', 'h.img', '--size', '8M', '--volume', 'v1')
  const disk = path.join(vsm.mount, 'h.img')
  const image = pattern(8, 1)
  await ddWrite(disk, 0, image)

  qsd.proc.kill('SIGSTOP')
  const b = pattern(2, 2)
  let landed = false
  const writer = ddWrite(disk, 2, b).then(() => { landed = true })
  await sleep(1000)
  assert.not.ok(landed, 'the write waits for the hung copy')
  const st = await within(5000, 'vsm status', vsm.json('status'))
  assert.ok(st.volumes.some((v: any) => v.name === 'v1'))
  const show = await within(5000, 'vsm volume show', vsm.json('volume', 'show', 'v1'))
  assert.is(show.state, 'healthy', 'nothing has failed yet: the device is slow, not in error')
  // the offline waits a grace for the volume to settle, then abandons the device's I/O
  await within(20_000, 'vsm device offline', vsm.run('device', 'offline', 'hung'))
  await within(10_000, 'the write waiting on the hung copy', writer)
  b.copy(image, 2 * MiB)
  assert.is(sum(readFileSync(disk)), sum(image))
  const v1 = await vsm.json('volume', 'show', 'v1')
  assert.is(v1.state, 'degraded')
  assert.match(v1.members[1].reason, /taken offline/)
  // the device is still hung: online must not wedge the pool either
  qsd.proc.kill('SIGCONT')
  await vsm.run('device', 'online', 'hung')
  await vsm.run('job', 'wait', '--all')
  assert.is((await vsm.json('volume', 'show', 'v1')).state, 'healthy')
  await vsm.down()

  // the same home with a short I/O timeout: no operator, the pool gives up on the device itself
  const fast = makeVsm({ home: vsm.home, deviceSize: '256M', env: { VSM_IO_TIMEOUT: '5' } })
  vsms.push(fast)
  await fast.up()
  qsd.proc.kill('SIGSTOP')
  const c = pattern(2, 3)
  await within(20_000, 'a write to the mirror with one copy hung', ddWrite(disk, 4, c))
  c.copy(image, 4 * MiB)
  assert.is(sum(readFileSync(disk)), sum(image))
  const v2 = await fast.json('volume', 'show', 'v1')
  assert.is(v2.state, 'degraded')
  assert.match(v2.members[1].reason, /not answered in 5 s/)
  // online of a device still hung fails after the timeout instead of holding the pool
  const err = await within(20_000, 'vsm device online of a hung device', fast.run('device', 'online', 'hung').then(() => null, (e) => e.stderr as string))
  assert.match(err ?? '', /still unusable/)
  await within(5000, 'vsm status after the failed online', fast.json('status'))
  qsd.proc.kill('SIGCONT')
  await fast.run('device', 'online', 'hung')
  await fast.run('job', 'wait', '--all')
  assert.is((await fast.json('volume', 'show', 'v1')).state, 'healthy')
  assert.is(sum(readFileSync(disk)), sum(image))
  assert.ok((await fast.json('fs', 'check')).ok)
  await fast.down()
})

test.run()
