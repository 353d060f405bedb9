// What clients can make the control server hold, over a real unix socket: idle
// connections time out (subscribers and job waiters do not), a half-sent frame is
// dropped after the timeout, the connection cap makes room by dropping the idlest or
// answers "too many connections", half-received bytes are capped server-wide without
// deadlocking large writers, and clients that never read cannot pin more than the
// reply cap, each or all together.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as net from 'net'
import * as os from 'os'
import * as path from 'path'
import { ControlServer, ServerOptions } from '../src/control/server'
import { ControlClient } from '../src/control/client'
import { VsmError } from '../src/block/blockdev'
import { byName } from '../src/control/codes'
import { encodeDiskIo, encodeFrame, encodeHeader, HEADER_SIZE } from '../src/control/codec'

const MiB = 1 << 20
const cleanups: Array<() => Promise<void> | void> = []
test.after.each(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

async function server(opts: Partial<ServerOptions>): Promise<ControlServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsm-limits-'))
  const s = new ControlServer({ socketPath: path.join(dir, 'vsm.sock'), version: '1', ...opts })
  await s.listen()
  cleanups.push(async () => { await s.close(); fs.rmSync(dir, { recursive: true, force: true }) })
  return s
}

async function client(s: ControlServer): Promise<ControlClient> {
  const c = await ControlClient.connect(s.socketPath)
  cleanups.push(() => c.close())
  return c
}

/** A bare socket that has read its greeting, then sends whatever it is told. */
async function raw(s: ControlServer, opts: { read?: boolean } = {}): Promise<net.Socket & { gone: Promise<void> }> {
  const sock = net.connect(s.socketPath) as net.Socket & { gone: Promise<void> }
  sock.on('error', () => {})
  sock.gone = new Promise((r) => sock.once('close', () => r()))
  await new Promise<void>((res, rej) => { sock.once('data', () => res()); sock.once('error', rej) })
  if (opts.read === false) sock.pause()
  cleanups.push(() => { sock.destroy() })
  return sock
}

async function until(what: string, cond: () => boolean, ms = 5000) {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const gone = (p: Promise<void>, ms: number) => Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))])

test('an idle connection is closed after the timeout; a subscriber and a job waiter are not', async () => {
  const s = await server({ idleTimeoutMs: 200 })
  const idle = await raw(s)
  const sub = await client(s)
  await sub.call('events.subscribe', {})
  const job = s.jobs.start('test', () => new Promise<void>(() => {}))
  const waiter = await client(s)
  const waiting = waiter.call('job.wait', { id: job }).catch((e) => e)
  assert.ok(await gone(idle.gone, 5000), 'idle connection still open')
  await new Promise((r) => setTimeout(r, 600))
  assert.not.ok(sub.closed, 'the event subscriber was dropped')
  assert.not.ok(waiter.closed, 'the job waiter was dropped')
  assert.equal(await sub.call('job.list').then((l: any[]) => l.length), 1)
  void waiting
})

test('a half-sent large frame is dropped after the timeout and its bytes released', async () => {
  // long enough that a stalled test process still sees the half frame held before it is dropped
  const s = await server({ idleTimeoutMs: 1500 })
  const sock = await raw(s)
  const len = 8 * MiB
  sock.write(encodeHeader({ code: byName('disk.write')!.code, id: 1, status: 0 }, len))
  sock.write(Buffer.alloc(4 * MiB))
  await until('the half frame to arrive', () => s.stats().partialBytes >= 4 * MiB)
  assert.ok(await gone(sock.gone, 5000), 'connection with a half-sent frame still open')
  assert.is(s.stats().partialBytes, 0)
  assert.is(s.stats().connections, 0)
})

test('at the connection cap the idlest connection makes room; when all are busy the newcomer is told "too many connections"', async () => {
  const s = await server({ maxConnections: 4 })
  const idle = [await raw(s), await raw(s), await raw(s), await raw(s)]
  const c = await client(s)
  assert.is((await c.call('status').catch((e: VsmError) => e.code)), 'ENOSYS') // answered: it got in
  assert.ok(await gone(idle[0].gone, 2000), 'the longest-idle connection was not the one dropped')
  // now make every connection busy: subscribers
  for (const sock of idle.slice(1)) sock.destroy()
  await until('the others to go', () => s.stats().connections === 1)
  await c.call('events.subscribe', {})
  for (let i = 0; i < 3; i++) await (await client(s)).call('events.subscribe', {})
  const err = await ControlClient.connect(s.socketPath).then(() => null, (e) => e)
  assert.ok(err, 'a fifth connection got in with four busy ones')
  assert.is(err.code, 'EUSERS')
  assert.match(err.message, /too many connections/)
  assert.is(s.stats().connections, 4)
})

test('half-received bytes are capped server-wide, and every large writer still finishes', async () => {
  const s = await server({ maxPartialBytes: 1 * MiB })
  let written = 0
  s.registerStandard(async (req) => { if (req.name === 'disk.write') written += req.data.length })
  const frameLen = 2 * MiB
  const frames = [1, 2, 3, 4].map((id) => encodeFrame({ code: byName('disk.write')!.code, id, status: 0, payload: encodeDiskIo({ path: 'x' }, Buffer.alloc(frameLen - 17)) }))
  const socks = await Promise.all(frames.map(() => raw(s)))
  let peak = 0
  const watch = setInterval(() => { peak = Math.max(peak, s.stats().partialBytes) }, 1)
  try {
    // three-quarters of every frame, from four writers at once
    for (let i = 0; i < 4; i++) socks[i].write(frames[i].subarray(0, (3 * frames[i].length) >> 2))
    await new Promise((r) => setTimeout(r, 300))
    peak = Math.max(peak, s.stats().partialBytes)
    // the leader may run to a whole frame; everyone else stops within about a read chunk of the cap
    assert.ok(peak <= 1 * MiB + frameLen + 4 * 64 * 1024, `held ${peak} bytes of partial frames`)
    const replies = socks.map((sock) => new Promise<void>((r) => sock.once('data', () => r())))
    for (let i = 0; i < 4; i++) socks[i].write(frames[i].subarray((3 * frames[i].length) >> 2))
    await Promise.all(replies)
  } finally {
    clearInterval(watch)
  }
  assert.is(written, 4 * (frameLen - 17))
  assert.is(s.stats().partialBytes, 0)
})

test('a client that never reads cannot make the server hold more than the reply cap', async () => {
  const maxReplyBytes = 4 * MiB
  const s = await server({ maxReplyBytes, idleTimeoutMs: 60_000 })
  let reads = 0
  s.registerStandard(async (req) => { reads++; return Buffer.alloc(req.length) })
  const sock = await raw(s, { read: false })
  const req = (id: number) => encodeFrame({ code: byName('disk.read')!.code, id, status: 0, payload: encodeDiskIo({ path: 'x', offset: 0, length: MiB }) })
  for (let id = 1; id <= 64; id++) sock.write(req(id))
  await until('the server to stop starting reads', () => reads > 0)
  let last = -1
  // settled: no read started for a while
  for (let i = 0; i < 20 && reads !== last; i++) { last = reads; await new Promise((r) => setTimeout(r, 100)) }
  const held = s.stats().replyBytes
  assert.ok(held <= maxReplyBytes + MiB, `holding ${held} reply bytes for a client that does not read (cap ${maxReplyBytes})`)
  assert.ok(reads < 64, `all ${reads} reads were run for a client that does not read`)
  // once it reads, everything is answered
  let got = 0
  sock.on('data', (b: Buffer) => { got += b.length })
  sock.resume()
  await until('every reply', () => got >= 64 * (MiB + HEADER_SIZE), 10_000)
  assert.is(reads, 64)
})

test('clients that never read cannot together make the server hold more than the total reply cap', async () => {
  const maxTotalReplyBytes = 8 * MiB
  const logs: string[] = []
  const s = await server({ maxReplyBytes: 4 * MiB, maxTotalReplyBytes, idleTimeoutMs: 60_000, log: (m) => logs.push(m) })
  s.registerStandard(async (req) => Buffer.alloc(req.length))
  const req = (id: number) => encodeFrame({ code: byName('disk.read')!.code, id, status: 0, payload: encodeDiskIo({ path: 'x', offset: 0, length: MiB }) })
  for (let k = 0; k < 6; k++) {
    const sock = await raw(s, { read: false })
    for (let id = 1; id <= 16; id++) sock.write(req(id))
  }
  // alone, each could hold its own 4 MiB cap: 24 MiB for the six
  await until('the oldest non-readers to be closed', () => logs.some((m) => /unread .* while replies to all connections passed/.test(m)), 10_000)
  await until('the server to hold no more than the total cap', () => s.stats().replyBytes <= maxTotalReplyBytes + MiB, 10_000)
  // (a paused socket does not see its end: count on the server's side)
  assert.ok(s.connections >= 1 && s.connections < 6, `${6 - s.connections} of 6 non-reading connections closed`)
  // a client that reads is still served
  const c = await client(s)
  const r: Buffer = await c.call('disk.read', { path: 'x', offset: 0, length: 4096 })
  assert.is(r.length, 4096)
})

test.run()
