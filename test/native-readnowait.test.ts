// readNowait (native/sys.cc): a read the page cache answers on the calling thread, and
// the answers that send a Device's read the usual way instead.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { WOULD_WAIT, readNowait } from '../src/native/sys'
import { openDevice } from '../src/volume/device'

const dir = mkdtempSync(join(tmpdir(), 'vsm-nowait-'))
test.after(() => rmSync(dir, { recursive: true, force: true }))

test('a cached range reads at once, and as written', () => {
  const data = randomBytes(1 << 20)
  const file = join(dir, 'a.img')
  writeFileSync(file, data)
  const fd = openSync(file, 'r')
  try {
    const buf = Buffer.alloc(8192)
    assert.is(readNowait(fd, buf, 4096), 8192)
    assert.ok(buf.equals(data.subarray(4096, 4096 + 8192)))
    assert.is(readNowait(fd, buf, 1 << 20), 0, 'at the end of the file')
  } finally { closeSync(fd) }
})

test('a closed descriptor answers WOULD_WAIT, not an exception', () => {
  const fd = openSync(join(dir, 'a.img'), 'r')
  closeSync(fd)
  assert.is(readNowait(fd, Buffer.alloc(4096), 0), WOULD_WAIT)
})

test('a Device reads the same through the page cache and the thread pool, holes as zeros', async () => {
  const file = join(dir, 'dev.img')
  const dev = await openDevice(file, { create: 4 << 20 })
  try {
    const data = randomBytes(65536)
    await dev.write(data, 1 << 20)
    const back = Buffer.alloc(65536 + 4096)
    assert.is(await dev.read(back, (1 << 20) - 4096), back.length)
    assert.ok(back.subarray(0, 4096).equals(Buffer.alloc(4096)), 'the hole before reads as zeros')
    assert.ok(back.subarray(4096).equals(data))
    const tail = Buffer.alloc(8192)
    assert.is(await dev.read(tail, (4 << 20) - 4096), 4096, 'a read past the end is cut at the device size')
  } finally { await dev.close() }
})

test.run()
