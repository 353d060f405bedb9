// The write queue (write-queue.ts over native pwriteBatch): writes queued in one turn go
// to the thread pool as one job and land where asked; errors reach each write; idle()
// waits for every job, so a Device closes its descriptor only once nothing writes through it.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { WriteQueue } from '../src/volume/write-queue'
import { openDevice } from '../src/volume/device'

const dir = mkdtempSync(join(tmpdir(), 'vsm-wq-'))
test.after(() => rmSync(dir, { recursive: true, force: true }))
const KiB = 1024

/** A WriteQueue on a fresh zeroed file of `size` bytes, opened with `flags`; the descriptor closed after. */
async function withQueue(name: string, size: number, flags: string, fn: (q: WriteQueue, file: string) => Promise<void>): Promise<void> {
  const file = join(dir, name)
  writeFileSync(file, Buffer.alloc(size))
  const fd = openSync(file, flags)
  try { await fn(new WriteQueue(fd, file), file) } finally { closeSync(fd) }
}

test('32 writes made in one turn: one job, every byte where it was asked', () => withQueue('a.img', 256 * KiB, 'r+', async (q, file) => {
  const model = Buffer.alloc(256 * KiB)
  const ws: Promise<void>[] = []
  for (let i = 0; i < 32; i++) {
    const b = randomBytes(4 * KiB + i)
    const off = ((i * 37) % 60) * 4 * KiB
    b.copy(model, off)
    ws.push(q.write(b, off))
  }
  await Promise.all(ws)
  assert.is(q.batches, 1)
  assert.ok(readFileSync(file).equals(model))
  await q.write(Buffer.from('x'), 0)
  assert.is(q.batches, 2, 'a write in a later turn is a job of its own')
}))

test('a failing write rejects with its errno and a one-line message', () => withQueue('ro.img', 8 * KiB, 'r', async (q) => {
  const e = await q.write(Buffer.alloc(4 * KiB), 0).then(() => null, (x: NodeJS.ErrnoException) => x)
  assert.is(e?.code, 'EBADF')
  assert.match(e!.message, /^write on .*ro\.img at 0: EBADF$/)
}))

test('idle() resolves only after every queued and running job has answered', () => withQueue('b.img', 64 * KiB, 'r+', async (q) => {
  let landed = 0
  for (let i = 0; i < 8; i++) void q.write(randomBytes(8 * KiB), i * 8 * KiB).then(() => { landed++ })
  await q.idle()
  assert.is(landed, 8)
}))

test('abandoned, the queue sends none of its queued writes and refuses later ones', () => withQueue('c.img', 16 * KiB, 'r+', async (q, file) => {
  const w = q.write(Buffer.alloc(4 * KiB, 9), 0).then(() => 'written', (e: Error) => e.message)
  q.abandon(new Error('device gone'))
  assert.is(await w, 'device gone')
  assert.is(await q.write(Buffer.alloc(4 * KiB, 9), 0).then(() => 'written', (e: Error) => e.message), 'device gone')
  await q.idle()
  await new Promise((r) => setImmediate(r))
  assert.is(q.batches, 0)
  assert.ok(readFileSync(file).equals(Buffer.alloc(16 * KiB)), 'nothing reached the file')
}))

test('a Device closed with its writes still queued closes its descriptor only after they land', async () => {
  const dev = await openDevice(join(dir, 'dev.img'), { create: 4 * 1024 * KiB })
  const data = randomBytes(64 * KiB)
  const ws = Array.from({ length: 16 }, (_, i) => dev.write(data.subarray(i * 4 * KiB, (i + 1) * 4 * KiB), i * 4 * KiB))
  await dev.close()
  await Promise.all(ws)
  assert.ok(readFileSync(join(dir, 'dev.img')).subarray(0, 64 * KiB).equals(data))
})

test.run()
