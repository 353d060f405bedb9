// The write queues and their plug (write-queue.ts over native pwriteBatch): the writes of
// every queue made in one turn go to the thread pool as few jobs and land where asked;
// errors reach each write; a flush (sync) is fdatasync on a write thread, in one job with
// the few writes queued before it, never before the queue's earlier jobs; idle() waits for every job, so a Device closes its descriptor
// only once nothing writes through it; a device that hangs for real (a
// qemu-storage-daemon export, SIGSTOPped) holds up its own writes only, and an abandoned
// one's writes not begun are never sent, even from a job shared with a healthy device.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { execFileSync } from 'child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { WritePlug, WriteQueue } from '../src/volume/write-queue'
import { startQsdExport, type QsdExport } from './helpers/qsd'
import { openDevice } from '../src/volume/device'

const dir = mkdtempSync(join(tmpdir(), 'vsm-wq-'))
let qsd: QsdExport | undefined
test.after(async () => {
  await qsd?.stop()
  rmSync(dir, { recursive: true, force: true })
})
const KiB = 1024

/** A WriteQueue (on plug, or one of its own) on a fresh zeroed file of `size` bytes, opened with `flags`; the descriptor closed after. */
async function withQueue(name: string, size: number, flags: string, fn: (q: WriteQueue, file: string) => Promise<void>, plug?: WritePlug): Promise<void> {
  const file = join(dir, name)
  writeFileSync(file, Buffer.alloc(size))
  const fd = openSync(file, flags)
  try { await fn(new WriteQueue(fd, file, plug), file) } finally { closeSync(fd) }
}

test('the writes two files get in one turn: one job, every byte where it was asked; 1 MiB writes go alone', async () => {
  const plug = new WritePlug()
  await withQueue('a.img', 256 * KiB, 'r+', (qa, fa) => withQueue('b.img', 256 * KiB, 'r+', async (qb, fb) => {
    const models = [Buffer.alloc(256 * KiB), Buffer.alloc(256 * KiB)]
    const ws: Promise<void>[] = []
    for (let i = 0; i < 15; i++) {
      const b = randomBytes(4 * KiB - 1 - i)
      const off = ((i * 37) % 60) * 4 * KiB
      b.copy(models[i % 2], off)
      ws.push((i % 2 ? qb : qa).write(b, off))
    }
    await Promise.all(ws)
    assert.is(plug.sent, 1)
    assert.ok(readFileSync(fa).equals(models[0]))
    assert.ok(readFileSync(fb).equals(models[1]))
    await qa.write(Buffer.from('x'), 0)
    assert.is(plug.sent, 2, 'a write in a later turn is a job of its own')
    const big = [randomBytes(1024 * KiB), randomBytes(1024 * KiB)]
    await Promise.all([qa.write(big[0], 0), qb.write(big[1], 0), qa.write(Buffer.from('y'), 2048 * KiB)])
    assert.is(plug.sent, 5, 'a job holds at most 64 KiB unless one write alone is larger')
    assert.ok(readFileSync(fa).subarray(0, 1024 * KiB).equals(big[0]))
    assert.ok(readFileSync(fb).subarray(0, 1024 * KiB).equals(big[1]))
  }, plug), plug)
})

test('a failing write rejects with its errno and a one-line message', () => withQueue('ro.img', 8 * KiB, 'r', async (q) => {
  const e = await q.write(Buffer.alloc(4 * KiB), 0).then(() => null, (x: NodeJS.ErrnoException) => x)
  assert.is(e?.code, 'EBADF')
  assert.match(e!.message, /^write on .*ro\.img at 0: EBADF$/)
}))

test('a flush goes in one job with the few writes queued before it, each file its own job, and they are in the file when it answers', async () => {
  const plug = new WritePlug()
  await withQueue('fa.img', 256 * KiB, 'r+', (qa, fa) => withQueue('fb.img', 256 * KiB, 'r+', async (qb, fb) => {
    const data = [randomBytes(8 * KiB), randomBytes(8 * KiB)]
    const order: string[] = []
    const ws = [qa.write(data[0], 0), qb.write(data[1], 4 * KiB), qa.sync(), qb.sync()]
    ws.forEach((w, i) => void w.then(() => order.push(`${i}`)))
    await Promise.all(ws)
    assert.is(plug.sent, 2, 'each file: its write and its flush, one job')
    assert.ok(readFileSync(fa).subarray(0, 8 * KiB).equals(data[0]))
    assert.ok(readFileSync(fb).subarray(4 * KiB, 12 * KiB).equals(data[1]))
    assert.ok(order.indexOf('2') > order.indexOf('0') && order.indexOf('3') > order.indexOf('1'), `each flush answered after its file's write: ${order}`)
    // more than a job's bytes before it: the writes go as usual, the flush once they are done
    const big = Array.from({ length: 3 }, () => randomBytes(64 * KiB))
    const more = [...big.map((b, i) => qa.write(b, i * 64 * KiB)), qa.sync()]
    await Promise.all(more)
    assert.is(plug.sent, 6, 'three jobs of 64 KiB, then the flush alone')
    assert.ok(readFileSync(fa).subarray(0, 192 * KiB).equals(Buffer.concat(big)))
  }, plug), plug)
})

test('a failing flush rejects with its errno and a one-line message', async () => {
  const fifo = join(dir, 'fifo')
  execFileSync('mkfifo', [fifo])
  // O_RDWR: a FIFO opened so does not wait for a reader; fdatasync refuses it (EINVAL)
  const fd = openSync(fifo, 'r+')
  try {
    const e = await new WriteQueue(fd, fifo).sync().then(() => null, (x: NodeJS.ErrnoException) => x)
    assert.is(e?.code, 'EINVAL')
    assert.match(e!.message, /^flush of .*fifo: EINVAL$/)
  } finally { closeSync(fd) }
})

test('idle() resolves only after every queued and running job has answered', () => withQueue('b.img', 64 * KiB, 'r+', async (q) => {
  let landed = 0
  for (let i = 0; i < 8; i++) void q.write(randomBytes(8 * KiB), i * 8 * KiB).then(() => { landed++ })
  await q.idle()
  assert.is(landed, 8)
}))

test('abandoned, the queue sends none of its queued writes and refuses later ones', () => {
  const plug = new WritePlug()
  return withQueue('c.img', 16 * KiB, 'r+', async (q, file) => {
    const w = q.write(Buffer.alloc(4 * KiB, 9), 0).then(() => 'written', (e: Error) => e.message)
    q.abandon(new Error('device gone'))
    assert.is(await w, 'device gone')
    assert.is(await q.write(Buffer.alloc(4 * KiB, 9), 0).then(() => 'written', (e: Error) => e.message), 'device gone')
    await q.idle()
    await new Promise((r) => setImmediate(r))
    assert.is(plug.sent, 0)
    assert.ok(readFileSync(file).equals(Buffer.alloc(16 * KiB)), 'nothing reached the file')
  }, plug)
})

test('a Device closed with its writes still queued closes its descriptor only after they land', async () => {
  const dev = await openDevice(join(dir, 'dev.img'), { create: 4 * 1024 * KiB })
  const data = randomBytes(64 * KiB)
  const ws = Array.from({ length: 16 }, (_, i) => dev.write(data.subarray(i * 4 * KiB, (i + 1) * 4 * KiB), i * 4 * KiB))
  await dev.close()
  await Promise.all(ws)
  assert.ok(readFileSync(join(dir, 'dev.img')).subarray(0, 64 * KiB).equals(data))
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** Resolves to 'landed' or the error's message; 'waiting' after ms. */
const within = (p: Promise<void>, ms: number) =>
  Promise.race([p.then(() => 'landed', (e: Error) => e.message), sleep(ms).then(() => 'waiting')])

test('a hung device shares a job with a healthy one: the healthy writes land, the hung one waits; abandoned, its writes not begun are never sent', async () => {
  qsd = await startQsdExport(dir, 1024 * KiB)
  const plug = new WritePlug()
  const hfd = openSync(qsd.path, 'r+')
  const hung = new WriteQueue(hfd, qsd.path, plug)
  try {
    await withQueue('healthy.img', 64 * KiB, 'r+', async (ok, file) => {
      qsd!.proc.kill('SIGSTOP')
      const model = Buffer.alloc(64 * KiB)
      const data = Array.from({ length: 4 }, () => randomBytes(4 * KiB))
      data.forEach((b, i) => b.copy(model, i * 4 * KiB))
      const blocked = hung.write(Buffer.alloc(4 * KiB, 1), 0)
      const first = [ok.write(data[0], 0), ok.write(data[1], 4 * KiB)]
      assert.is(plug.sent, 0, 'nothing sent before the turn ends')
      await new Promise((r) => setImmediate(r))
      assert.is(plug.sent, 1, 'the three writes went as one job')
      for (const w of first) assert.is(await within(w, 2000), 'landed', 'a healthy write behind a hung one in the same job')
      assert.is(plug.rescued, 2, 'taken back from the job the hung write holds up')
      assert.is(plug.sent, 2, 'and sent again in a job of their own')
      // the hung queue's next writes go alone; the healthy one's are not held up
      const later = hung.write(Buffer.alloc(4 * KiB, 2), 4 * KiB)
      const never = hung.write(Buffer.alloc(4 * KiB, 3), 8 * KiB)
      const hungFlush = hung.sync()
      assert.is(await within(Promise.all([ok.write(data[2], 8 * KiB), ok.write(data[3], 12 * KiB), ok.sync()]).then(() => {}), 2000), 'landed',
        'the healthy file writes and flushes')
      assert.is(await within(blocked, 200), 'waiting')
      assert.is(await within(hungFlush, 0), 'waiting', 'a flush waits for the writes queued before it')
      hung.abandon(new Error('device gone'))
      assert.is(await within(never, 200), 'device gone', 'a write of the abandoned queue not begun fails at once')
      assert.is(await within(hungFlush, 200), 'device gone', 'and so does its flush')
      qsd!.proc.kill('SIGCONT')
      assert.is(await within(blocked, 10_000), 'landed', 'the write the kernel held finishes when the device answers')
      await within(later, 10_000)
      await hung.idle()
      assert.ok(readFileSync(file).equals(model))
      assert.ok(readFileSync(qsd!.path).subarray(8 * KiB, 12 * KiB).equals(Buffer.alloc(4 * KiB)), 'the abandoned write never reached the device')
    }, plug)
  } finally {
    qsd.proc.kill('SIGCONT')
    await hung.idle()
    closeSync(hfd)
  }
})

test.run()
