// The view's read buffer pool: buffers come back for reuse, sized to the request, and
// never once a device call was stranded while one was out (a late read could land in it).
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { strand } from '../src/block/blockdev'
import { BufferPool } from '../src/block/buffers'

const test = suite('block buffers')

test('a buffer given back is taken again, cut to the size asked', () => {
  const pool = new BufferPool()
  const a = pool.take(1 << 20)
  assert.is(a.buf.length, 1 << 20)
  pool.give(a.ticket)
  const b = pool.take(600_000)
  assert.is(b.buf.length, 600_000)
  assert.is(b.buf.buffer, a.buf.buffer, 'the same memory')
  const c = pool.take(4096)
  assert.is.not(c.buf.buffer, a.buf.buffer, 'a small request takes its own class')
})

test('buffers out in both directions are distinct', () => {
  const pool = new BufferPool()
  const a = pool.take(65536), b = pool.take(65536)
  assert.is.not(a.buf.buffer, b.buf.buffer)
  pool.give(a.ticket)
  pool.give(b.ticket)
  const c = pool.take(65536), d = pool.take(65536)
  assert.is.not(c.buf.buffer, d.buf.buffer)
})

test('a device call stranded while the buffer was out keeps it from coming back', () => {
  const pool = new BufferPool()
  const a = pool.take(8192)
  strand(1)
  pool.give(a.ticket)
  assert.is.not(pool.take(8192).buf.buffer, a.buf.buffer)
  const b = pool.take(8192)
  pool.give(b.ticket)
  assert.is(pool.take(8192).buf.buffer, b.buf.buffer, 'one taken after the strand comes back')
})

test.run()
