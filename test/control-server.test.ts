// The control server and client over a real unix socket: greeting, routing by
// component, standard disk commands, error replies, socket permissions and stale
// sockets, and hostile input that must never crash the server or stop it serving.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as net from 'net'
import * as os from 'os'
import * as path from 'path'
import { randomBytes } from 'crypto'
import { spawnSync } from 'child_process'
import { VsmError } from '../src/block/blockdev'
import { ControlServer, Command } from '../src/control/server'
import { ControlClient } from '../src/control/client'
import { byName } from '../src/control/codes'
import { Frame, FrameDecoder, encodeFrame, encodeHeader, encodeDiskIo, errnoOf } from '../src/control/codec'
import { rng } from './helpers/conformance'

interface Env { dir: string; sock: string; server: ControlServer; clients: ControlClient[] }

async function setup(opts: { maxPayload?: number } = {}): Promise<Env> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsm-ctl-'))
  const sock = path.join(dir, 'vsm.sock')
  const server = new ControlServer({ socketPath: sock, version: '9.9.9', maxPayload: opts.maxPayload })
  await server.listen()
  return { dir, sock, server, clients: [] }
}

async function teardown(env: Env) {
  for (const c of env.clients) await c.close()
  await env.server.close()
  fs.rmSync(env.dir, { recursive: true, force: true })
}

async function connect(env: Env): Promise<ControlClient> {
  const c = await ControlClient.connect(env.sock)
  env.clients.push(c)
  return c
}

/** A bare socket that speaks frames by hand, for input no well-behaved client sends. */
class Raw {
  frames: Frame[] = []
  closed: Promise<void>
  private decoder = new FrameDecoder()
  private waiters: Array<() => void> = []
  constructor(readonly socket: net.Socket) {
    socket.on('data', (b) => {
      this.frames.push(...this.decoder.push(b))
      for (const w of this.waiters.splice(0)) w()
    })
    socket.on('error', () => {})
    this.closed = new Promise((r) => socket.once('close', () => r()))
  }
  static async open(sock: string): Promise<Raw> {
    const s = net.connect(sock)
    await new Promise<void>((res, rej) => { s.once('connect', res); s.once('error', rej) })
    const r = new Raw(s)
    await r.frame((f) => f.id === 0)
    return r
  }
  async frame(pred: (f: Frame) => boolean, timeoutMs = 3000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const f = this.frames.find(pred)
      if (f) return f
      if (Date.now() > deadline) throw new Error('timed out waiting for a frame')
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 50) })
    }
  }
  send(b: Buffer) { this.socket.write(b) }
}

const isClosedWithin = (r: Raw, ms = 3000) =>
  Promise.race([r.closed.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), ms))])

const errCode = (code: string) => (e: unknown) => e instanceof VsmError && e.code === code

async function rejects(p: Promise<unknown>, code: string, msg?: RegExp) {
  try {
    await p
  } catch (e) {
    assert.instance(e, VsmError)
    assert.is((e as VsmError).code, code, (e as Error).message)
    if (msg) assert.match((e as Error).message, msg)
    return e as VsmError
  }
  assert.unreachable(`expected ${code}`)
  return undefined
}

// -------------------------------------------------------------------------------

const rt = suite('control server round trip')
let env: Env
rt.before.each(async () => { env = await setup() })
rt.after.each(async () => { await teardown(env) })

rt('greeting carries version, capabilities and the code table', async () => {
  env.server.register('L', async () => null)
  const c = await connect(env)
  assert.is(c.greeting.version, '9.9.9')
  assert.is(c.greeting.protocol, 1)
  assert.equal(c.greeting.capabilities.sort(), ['L', 'S'])
  assert.is(c.greeting.standard, false)
  const dc = c.greeting.codes.find((x) => x.name === 'disk.create')!
  assert.is(dc.code, byName('disk.create')!.code)
  assert.is(dc.type, 'V')
  // hello on request answers the same
  const g = await c.call('hello')
  assert.equal(g.capabilities.sort(), ['L', 'S'])
})

rt('a registered handler gets name, code and args, and its result comes back', async () => {
  const seen: Command[] = []
  env.server.register('V', async (cmd, ctx) => {
    seen.push(cmd)
    assert.ok(ctx.requestId > 0)
    assert.ok(ctx.signal instanceof AbortSignal)
    if (cmd.name === 'disk.create') return { path: cmd.args.path, size: cmd.args.size }
    if (cmd.name === 'disk.list') return [{ path: 'a.img' }]
    return undefined
  })
  const c = await connect(env)
  assert.equal(await c.call('disk.create', { path: 'a.img', size: 1024 }), { path: 'a.img', size: 1024 })
  // by number, the way `vsm ctl 0x...` sends it
  assert.equal(await c.call(byName('disk.list')!.code), [{ path: 'a.img' }])
  assert.is(await c.call('disk.delete', { path: 'a.img' }), undefined)
  assert.is(seen[0].name, 'disk.create')
  assert.is(seen[0].code, byName('disk.create')!.code)
  assert.equal(seen[0].args, { path: 'a.img', size: 1024 })
  // no payload is no arguments
  assert.equal(seen[1].args, {})
})

rt('arguments are held to the command\'s schema before the handler runs: wrong types, unknown fields, out of range', async () => {
  const seen: Command[] = []
  env.server.register('V', async (cmd) => { seen.push(cmd); return 'ran' })
  const c = await connect(env)
  await rejects(c.call('disk.delete', { path: 'a.img', force: 'false' }), 'EINVAL', /disk\.delete: force must be true or false, not "false"/)
  await rejects(c.call('disk.resize', { path: 'a.img', size: 512, shrink: 'false' }), 'EINVAL', /shrink must be true or false/)
  await rejects(c.call('disk.delete', { path: 'a.img', forse: true }), 'EINVAL', /unknown field 'forse'/)
  await rejects(c.call('disk.create', { path: 'a.img', size: -512 }), 'EINVAL', /size must be more than 0, not -512/)
  await rejects(c.call('disk.create', { path: 'a.img', size: 2.5 }), 'EINVAL', /size must be a whole number/)
  await rejects(c.call('disk.create', { path: 'a.img' }), 'EINVAL', /size is required/)
  await rejects(c.call('disk.freeze', { path: 'a.img', timeoutMs: 0 }), 'EINVAL', /timeoutMs must be at least 1/)
  await rejects(c.call('disk.show', { path: 'a\nb.img' }), 'EINVAL', /path must not contain control characters/)
  await rejects(c.call('disk.create', { path: 'a@b.img', size: 512 }), 'EINVAL', /path must not contain '@'/)
  await rejects(c.call('snapshot.create', { path: 'a.img', name: 's\u001b[2J' }), 'EINVAL', /name must not contain control characters/)
  await rejects(c.call('snapshot.create', { path: 'a.img', name: 'x@y' }), 'EINVAL', /name must not contain '\/' or '@'/)
  await rejects(c.call('disk.list', [1]), 'EINVAL', /arguments must be a JSON object/)
  await rejects(c.call('disk.list', { all: true }), 'EINVAL', /unknown field 'all'/)
  assert.is(seen.length, 0, 'no refused command reached its handler')
  // a snapshot reference is where '@' belongs
  assert.is(await c.call('disk.clone', { source: 'a.img@s1', path: 'b.img' }), 'ran')
})

rt('in-band commands (the FUSE view\'s xattrs) are held to the same schemas', async () => {
  const seen: Command[] = []
  env.server.register('V', async (cmd) => { seen.push(cmd); return 'ran' })
  await rejects(env.server.invoke('snapshot.create', { path: 'a.img', name: 'bad\nname' }), 'EINVAL', /name must not contain control characters/)
  assert.is(await env.server.invoke('snapshot.create', { path: 'a.img', name: 'ok' }), 'ran')
  assert.equal(seen.map((x) => x.args), [{ path: 'a.img', name: 'ok' }])
})

rt('each component gets only its own commands', async () => {
  const got: string[] = []
  for (const t of ['V', 'F', 'L', 'R', 'H'] as const) env.server.register(t, async (cmd) => { got.push(`${t}:${cmd.name}`); return t })
  const c = await connect(env)
  assert.is(await c.call('fs.check'), 'F')
  assert.is(await c.call('volume.scrub', { name: 'v' }), 'L')
  assert.is(await c.call('repl.status'), 'R')
  assert.is(await c.call('hsm.tier.add', { name: 't', volume: 'v' }), 'H')
  assert.is(await c.call('snapshot.create', { path: 'a.img', name: 's' }), 'V')
  assert.equal(got, ['F:fs.check', 'L:volume.scrub', 'R:repl.status', 'H:hsm.tier.add', 'V:snapshot.create'])
  assert.throws(() => env.server.register('V', async () => null), errCode('EEXIST'))
})

rt('status and shutdown go to the daemon\'s S handler; without one they are ENOSYS', async () => {
  const c = await connect(env)
  await rejects(c.call('status'), 'ENOSYS')
  env.server.register('S', async (cmd) => ({ handled: cmd.name }))
  assert.equal(await c.call('status'), { handled: 'status' })
  assert.equal(await c.call('shutdown'), { handled: 'shutdown' })
  // built-ins stay built in
  assert.equal(await c.call('job.list'), [])
})

rt('errors: VsmError keeps its code, other exceptions are EIO, unregistered is ENOSYS, unknown is EINVAL', async () => {
  env.server.register('V', async (cmd) => {
    if (cmd.name === 'disk.show') throw new VsmError('ENOENT', `no disk ${cmd.args.path}`)
    if (cmd.name === 'disk.resize') throw new TypeError('boom')
    if (cmd.name === 'disk.list') return { big: 10n } // cannot be JSON-encoded
    throw 'a string' // eslint-disable-line no-throw-literal
  })
  const c = await connect(env)
  await rejects(c.call('disk.show', { path: 'x.img' }), 'ENOENT', /no disk x\.img/)
  await rejects(c.call('disk.resize', { path: 'x.img', size: 512 }), 'EIO', /boom/)
  await rejects(c.call('disk.list'), 'EIO')
  await rejects(c.call('disk.delete', { path: 'x.img' }), 'EIO', /a string/)
  await rejects(c.call('volume.create', { name: 'v', layout: 'concat', devices: ['d0'], size: 512 }), 'ENOSYS', /volume component is not running/)
  await rejects(c.call('repl.status'), 'ENOSYS')
  await rejects(c.call(0x4000ff99), 'EINVAL', /unknown command code 0x4000ff99/)
  await rejects(c.call('no.such.command'), 'EINVAL')
  // a payload that is not JSON
  await rejects(c.call('disk.show', undefined, Buffer.from('{not json')), 'EINVAL', /JSON/)
  // the connection is still fine
  env.server.register('F', async () => 'ok')
  assert.is(await c.call('fs.stat'), 'ok')
})

rt('error replies carry -errno in the status and {error, message} JSON', async () => {
  env.server.register('V', async () => { throw new VsmError('ENOENT', 'gone') })
  const r = await Raw.open(env.sock)
  r.send(encodeFrame({ code: byName('disk.show')!.code, id: 42, status: 0, payload: Buffer.from('{"path":"x.img"}') }))
  const f = await r.frame((x) => x.id === 42)
  assert.is(f.status, -errnoOf('ENOENT'))
  assert.is(f.code, byName('disk.show')!.code)
  assert.equal(JSON.parse(f.payload.toString()), { error: 'ENOENT', message: 'gone' })
  r.socket.destroy()
})

rt('standard disk commands reach the standard handler with binary payloads', async () => {
  const disk = Buffer.alloc(1 << 20)
  const calls: string[] = []
  env.server.register('V', async () => { throw new VsmError('EINVAL', 'extended handler must not see disk I/O') })
  env.server.registerStandard(async (req) => {
    calls.push(req.name)
    if (req.path !== 'vm/a.img') throw new VsmError('ENOENT', `no disk ${req.path}`)
    switch (req.name) {
      case 'disk.write': req.data.copy(disk, req.offset); return
      case 'disk.read': return disk.subarray(req.offset, req.offset + req.length)
      case 'disk.size': return disk.length
      case 'disk.discard': disk.fill(0, req.offset, req.offset + req.length); return
      case 'disk.flush': return
    }
  })
  const c = await connect(env)
  assert.is(c.greeting.standard, true)
  const data = randomBytes(200000)
  await c.diskWrite('vm/a.img', 4096, data)
  await c.diskFlush('vm/a.img')
  const back: Buffer = await c.diskRead('vm/a.img', 4096, data.length)
  assert.ok(back.equals(data))
  assert.is(await c.diskSize('vm/a.img'), 1 << 20)
  await c.diskDiscard('vm/a.img', 4096, 100)
  assert.ok((await c.diskRead('vm/a.img', 4096, 100)).equals(Buffer.alloc(100)))
  await rejects(c.diskRead('other.img', 0, 10), 'ENOENT')
  assert.equal(calls.slice(0, 5), ['disk.write', 'disk.flush', 'disk.read', 'disk.size', 'disk.discard'])
  // a standard command with a broken argument is an error reply, not a dropped connection
  await rejects(c.call(byName('disk.read')!.code, undefined, Buffer.from('short')), 'EINVAL')
  await rejects(c.diskRead('vm/a.img', 0, 64 * 1024 * 1024), 'EINVAL', /frame limit/)
  assert.is(await c.diskSize('vm/a.img'), 1 << 20)
})

rt('standard commands without a data path are ENOSYS', async () => {
  env.server.register('V', async () => 'extended')
  const c = await connect(env)
  await rejects(c.diskRead('a.img', 0, 10), 'ENOSYS')
  assert.is(await c.call('disk.list'), 'extended')
})

rt('requests on one connection run concurrently and replies match by id', async () => {
  const delays = [300, 10, 150, 0, 80]
  env.server.register('H', async (cmd) => {
    const n = Number(cmd.args.path)
    await new Promise((r) => setTimeout(r, delays[n]))
    return n
  })
  const c = await connect(env)
  const order: number[] = []
  const ps = delays.map((_, n) => c.call('hsm.status', { path: String(n) }).then((v) => { order.push(v); return v }))
  const t0 = Date.now()
  assert.equal(await Promise.all(ps), [0, 1, 2, 3, 4])
  assert.ok(Date.now() - t0 < 1000, 'requests ran one after another')
  assert.equal(order, [3, 1, 4, 2, 0])
})

rt('several clients at once', async () => {
  env.server.register('L', async (cmd) => Number(cmd.args.name))
  const cs = await Promise.all([1, 2, 3, 4, 5].map(() => connect(env)))
  const rs = await Promise.all(cs.flatMap((c, i) => [1, 2, 3].map(() => c.call('volume.show', { name: String(i) }))))
  assert.equal(rs, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4])
})

rt('a handler still running when its client goes away sees ctx.signal abort', async () => {
  let aborted: Promise<void> | undefined
  let started!: () => void
  const isStarted = new Promise<void>((r) => { started = r })
  env.server.register('R', async (_cmd, ctx) => {
    aborted = new Promise((r) => ctx.signal.addEventListener('abort', () => r()))
    started()
    await aborted
    return 'late'
  })
  const c = await ControlClient.connect(env.sock)
  const p = c.call('repl.verify', { group: 'g' }).catch((e) => e)
  await isStarted
  await c.close()
  assert.is(((await p) as VsmError).code, 'ECONNRESET')
  await aborted
  const c2 = await connect(env)
  assert.equal(await c2.call('job.list'), [])
})

// -------------------------------------------------------------------------------

const sock = suite('control socket file')

sock('socket mode is 0600', async () => {
  const e = await setup()
  try {
    assert.is(fs.statSync(e.sock).mode & 0o777, 0o600)
    assert.ok(fs.statSync(e.sock).isSocket())
  } finally { await teardown(e) }
})

sock('a stale socket file is replaced; a live one is refused; a non-socket is never removed', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsm-ctl-'))
  const p = path.join(dir, 'vsm.sock')
  try {
    // stale: what a daemon killed with -9 leaves behind (closing a server would unlink it)
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.kill(process.pid, 'SIGKILL'))`])
    assert.ok(fs.statSync(p).isSocket(), 'stale socket file not left behind')
    await rejects(ControlClient.connect(p), 'ECONNREFUSED', /vsm is not running \(no socket at /)

    const s1 = new ControlServer({ socketPath: p })
    await s1.listen()
    const c = await ControlClient.connect(p)
    assert.ok(c.greeting.version.length > 0)
    await c.close()

    // live: a second server must not steal the socket from the first
    const s2 = new ControlServer({ socketPath: p })
    await rejects(s2.listen(), 'EADDRINUSE', /already serving/)
    const c1 = await ControlClient.connect(p)
    assert.equal(await c1.call('job.list'), [])
    await c1.close()
    await s1.close()
    assert.not.ok(fs.existsSync(p), 'close removes the socket file')

    // not a socket: refuse, leave the file alone
    fs.writeFileSync(p, 'precious')
    await rejects(new ControlServer({ socketPath: p }).listen(), 'EEXIST')
    assert.is(fs.readFileSync(p, 'utf8'), 'precious')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

sock('client: clear error when vsm is not running', async () => {
  const p = path.join(os.tmpdir(), `vsm-none-${process.pid}`, 'vsm.sock')
  await rejects(ControlClient.connect(p), 'ENOENT', new RegExp(`^vsm is not running \\(no socket at ${p.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\)$`))
})

sock('pending calls fail with ECONNRESET when the server goes away', async () => {
  const e = await setup()
  try {
    e.server.register('L', () => new Promise(() => {})) // never answers
    const c = await ControlClient.connect(e.sock)
    const p = c.call('volume.list').then(() => null, (err) => err)
    const closed = new Promise<Error | undefined>((r) => c.onClose(r))
    await e.server.close()
    assert.is((await p)?.code, 'ECONNRESET')
    assert.ok(await closed)
    await rejects(c.call('job.list'), 'ECONNRESET')
  } finally { await teardown(e) }
})

// -------------------------------------------------------------------------------

const bad = suite('control server under bad input')
bad.before.each(async () => {
  env = await setup({ maxPayload: 1 << 20 })
  env.server.register('F', async () => 'still serving')
})
bad.after.each(async () => { await teardown(env) })

async function stillServing() {
  const c = await ControlClient.connect(env.sock)
  try { assert.is(await c.call('fs.stat'), 'still serving') } finally { await c.close() }
}

bad('bad magic closes that connection only', async () => {
  const other = await connect(env)
  const r = await Raw.open(env.sock)
  const f = encodeFrame({ code: byName('fs.stat')!.code, id: 1, status: 0, payload: Buffer.alloc(0) })
  f.writeUInt32LE(0xdeadbeef, 0)
  r.send(f)
  assert.ok(await isClosedWithin(r))
  assert.is(await other.call('fs.stat'), 'still serving')
  await stillServing()
})

bad('an oversized length closes the connection without allocating it', async () => {
  const r = await Raw.open(env.sock)
  const before = process.memoryUsage().arrayBuffers
  r.send(encodeHeader({ code: byName('fs.stat')!.code, id: 1, status: 0 }, 0xffffffff))
  assert.ok(await isClosedWithin(r))
  assert.ok(process.memoryUsage().arrayBuffers - before < 64 << 20)
  await stillServing()
})

bad('random garbage never crashes the server', async () => {
  for (let seed = 1; seed <= 30; seed++) {
    const r = await Raw.open(env.sock)
    const n = 1 + rng(seed)(5000)
    r.send(randomBytes(n))
    r.socket.end()
    await isClosedWithin(r, 2000)
    r.socket.destroy()
  }
  await stillServing()
})

bad('garbage that starts with a valid magic, and valid frames followed by garbage', async () => {
  const fsStat = byName('fs.stat')!.code
  for (let seed = 1; seed <= 30; seed++) {
    const r = await Raw.open(env.sock)
    const rand = rng(seed)
    const junk = randomBytes(20 + rand(300))
    junk.writeUInt32LE(0x314d5356, 0)
    junk.writeUInt32LE(rand(400), 4) // plausible lengths, arbitrary codes and ids
    r.send(Buffer.concat([encodeFrame({ code: fsStat, id: 5, status: 0, payload: Buffer.alloc(0) }), junk]))
    const ok = await r.frame((f) => f.id === 5)
    assert.is(ok.status, 0)
    r.socket.end()
    await isClosedWithin(r, 2000)
    r.socket.destroy()
  }
  await stillServing()
})

bad('truncated frames then close', async () => {
  const whole = encodeFrame({ code: byName('fs.stat')!.code, id: 3, status: 0, payload: Buffer.from('{"a":1}') })
  for (const cut of [1, 4, 19, 20, 21, whole.length - 1]) {
    const r = await Raw.open(env.sock)
    r.send(whole.subarray(0, cut))
    r.socket.end()
    assert.ok(await isClosedWithin(r), `cut at ${cut}`)
    assert.not.ok(r.frames.some((f) => f.id === 3), 'a cut frame must not be executed')
  }
  // destroyed mid-frame without a FIN
  const r = await Raw.open(env.sock)
  r.send(whole.subarray(0, 10))
  r.socket.destroy()
  await stillServing()
})

bad('a request sent just before the client half-closes still gets its reply', async () => {
  let release!: () => void
  env.server.register('H', () => new Promise((res) => { release = () => res('late reply') }))
  const r = await Raw.open(env.sock)
  r.send(encodeFrame({ code: byName('hsm.status')!.code, id: 9, status: 0, payload: Buffer.alloc(0) }))
  await new Promise((res) => setTimeout(res, 50))
  r.socket.end()
  await new Promise((res) => setTimeout(res, 50))
  release()
  const f = await r.frame((x) => x.id === 9)
  assert.is(JSON.parse(f.payload.toString()), 'late reply')
  assert.ok(await isClosedWithin(r))
})

bad('unknown codes, reserved id 0, event frames and odd arguments get error replies and the connection lives', async () => {
  const r = await Raw.open(env.sock)
  const send = (code: number, id: number, payload: Buffer | string = '') =>
    r.send(encodeFrame({ code, id, status: 0, payload: Buffer.from(payload) }))
  send(0x12345678, 1)
  send(0, 2)
  send(byName('fs.stat')!.code, 0) // id 0 is the server's
  send(byName('event')!.code, 4, '{}')
  send(byName('job.wait')!.code, 5, '"not an object"')
  send(byName('job.cancel')!.code, 6, '{"id":"abc"}')
  send(byName('job.wait')!.code, 7, '{"id":99999}')
  send(byName('events.subscribe')!.code, 8, '{"events":"all"}')
  send(byName('repl.status')!.code, 10, '')
  send(byName('disk.write')!.code, 11, encodeDiskIo({ path: 'a.img', length: 5 }))
  send(byName('fs.stat')!.code, 12, '[1,2')
  const want: Record<number, string> = { 1: 'EINVAL', 2: 'EINVAL', 4: 'EINVAL', 5: 'EINVAL', 6: 'EINVAL', 7: 'ENOENT', 8: 'EINVAL', 10: 'ENOSYS', 11: 'ENOSYS', 12: 'EINVAL' }
  for (const [id, code] of Object.entries(want)) {
    const f = await r.frame((x) => x.id === Number(id))
    assert.is(f.status, -errnoOf(code), `id ${id}`)
    assert.is(JSON.parse(f.payload.toString()).error, code, `id ${id}`)
  }
  const f0 = await r.frame((x) => x.id === 0 && x.code === byName('fs.stat')!.code)
  assert.is(JSON.parse(f0.payload.toString()).error, 'EINVAL')
  send(byName('fs.stat')!.code, 13)
  const ok = await r.frame((x) => x.id === 13)
  assert.is(ok.status, 0)
  assert.is(JSON.parse(ok.payload.toString()), 'still serving')
  r.socket.destroy()
})

bad('a reply larger than the frame limit becomes E2BIG', async () => {
  env.server.register('H', async () => 'x'.repeat(2 << 20))
  const c = await connect(env)
  await rejects(c.call('hsm.status'), 'E2BIG')
  assert.is(await c.call('fs.stat'), 'still serving')
})

bad('a client that floods requests and never reads costs bounded work, and gets every reply once it reads', async () => {
  let calls = 0
  env.server.register('H', async () => { calls++; return 'y'.repeat(60000) })
  const r = await Raw.open(env.sock)
  r.socket.pause()
  const req = (id: number) => encodeFrame({ code: byName('hsm.status')!.code, id, status: 0, payload: Buffer.alloc(0) })
  for (let i = 1; i <= 2000; i++) r.send(req(i))
  await new Promise((res) => setTimeout(res, 500))
  assert.ok(calls < 500, `server ran ${calls} requests for a client that reads nothing`)
  await stillServing()
  r.socket.resume()
  await r.frame((f) => f.id === 2000, 10000)
  assert.is(r.frames.filter((f) => f.id > 0 && f.status === 0).length, 2000)
  assert.is(calls, 2000)
  r.socket.destroy()
})

rt.run()
sock.run()
bad.run()
