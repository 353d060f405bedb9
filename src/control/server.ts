// The control socket server: listens on <home>/vsm.sock (mode 0600), greets each
// connection, decodes frames, routes each command to the component that owns its
// type byte (standard disk commands to the virtualizer's data-path handler), and
// owns the built-in system commands for jobs and events (it streams the daemon's event
// sink to subscribed connections). Nothing a client sends may
// crash the process: a bad command gets an error reply, a bad stream gets closed.
// Nor may clients pin the daemon: connections that do nothing time out (and are the
// first to go when the cap is reached), half-sent frames are bounded server-wide, and
// replies a client does not read are bounded per connection and over all of them.
import * as fs from 'fs'
import * as net from 'net'
import { VsmError } from '../block/blockdev'
import {
  COMMANDS, COMPONENTS, CommandDef, ComponentType, byCode, byName, formatCode, isStandard,
} from './codes'
import {
  DEFAULT_MAX_PAYLOAD, DiskIo, Frame, FrameDecoder, PROTOCOL_VERSION, UNSOLICITED_ID,
  decodeDiskIo, decodeJson, encodeFrame, encodeJson, encodeU64, errorFrame,
} from './codec'
import { Events, VsmEvent } from './events'
import { Jobs } from './jobs'
import { PeerCred, peerCredentials } from '../native/sys'
import { checkArgs } from './schemas'

export interface Command {
  name: string
  code: number
  /** The JSON payload, held to the command's schema ({} when the payload was empty). */
  args: any
  /** The raw payload. */
  payload: Buffer
}

export interface RequestContext {
  server: ControlServer
  jobs: Jobs
  connectionId: number
  requestId: number
  /** Aborted when the client closes (or half-closes) the connection, so long waits can give up. */
  signal: AbortSignal
}

export type Handler = (cmd: Command, ctx: RequestContext) => Promise<any>

export interface DiskRequest extends DiskIo {
  name: 'disk.read' | 'disk.write' | 'disk.flush' | 'disk.discard' | 'disk.size'
  code: number
}

/** disk.read → the bytes; disk.size → the size; the others → nothing. */
export type StandardHandler = (req: DiskRequest, ctx: RequestContext) => Promise<Buffer | number | void>

export interface Greeting {
  version: string
  protocol: number
  /** Component letters that have a handler ('S' always). */
  capabilities: ComponentType[]
  /** Whether the standard disk commands are served. */
  standard: boolean
  codes: Array<{ name: string; code: number; type: ComponentType; nr: number; dir: string; standard: boolean }>
}

/** The process at the other end of a connection, as the kernel saw it connect. */
export type Peer = PeerCred

/**
 * Decides whether a peer may send a command (throws, EPERM, when not) and may narrow
 * it: other arguments, or a filter over the result (a listing cut to what it owns).
 */
export type Authorize = (peer: Peer, name: string, args: any) => { args: any; filter?: (result: any) => any }

export interface ServerOptions {
  socketPath: string
  version?: string
  /** The daemon's event sink, streamed to subscribers; give the same one to jobs (default: a new sink that `jobs` publishes into). */
  events?: Events
  jobs?: Jobs
  maxPayload?: number
  /**
   * Connections at once. At the cap the longest-idle connection is dropped to make
   * room; when none is idle the newcomer gets a "too many connections" error frame.
   */
  maxConnections?: number
  /**
   * A connection with nothing in flight, no subscription and no complete frame for this
   * long is closed (a frame sent half-way counts as nothing), as is one whose unread
   * replies have not moved for this long.
   */
  idleTimeoutMs?: number
  /** Bytes of half-received frames held over all connections; beyond it, readers with a partial frame are paused. */
  maxPartialBytes?: number
  /** Reply bytes queued for one connection (written or promised by requests in flight) before it starts no more requests. */
  maxReplyBytes?: number
  /**
   * The same over all connections: beyond it a connection starts no second request, and
   * connections whose replies have gone unread longest are closed until back under it.
   */
  maxTotalReplyBytes?: number
  /** Requests in flight on one connection before it stops reading (backpressure). */
  maxInflight?: number
  /** Where to report things that are not the client's business (defaults to silence). */
  log?: (msg: string, err?: unknown) => void
  /** Every command passes this first; without it any peer that can connect may send anything. */
  authorize?: Authorize
  /** A group (gid) whose members may connect: the socket becomes root:group 0660 instead of 0600. */
  socketGroup?: number
}

interface Conn {
  id: number
  socket: net.Socket
  peer: Peer
  decoder: FrameDecoder
  abort: AbortController
  subscribed: boolean
  /** null = every event. */
  filter: Set<string> | null
  /** Decoded requests not started yet (backpressure). */
  queue: Frame[]
  inflight: number
  closed: boolean
  droppedEvents: number
  /** A malformed frame was seen: no more reading, close once in-flight replies are out. */
  broken: boolean
  /** When it last completed a frame or got a reply (ms). */
  lastActive: number
  /** Since when its unread replies have not drained, or 0 when nothing waits (ms). */
  writeStalledSince: number
  /** Bytes of its half-received frame counted in the server-wide partialBytes. */
  partial: number
  /** Paused because the server holds too many half-received bytes. */
  partialPaused: boolean
  /** Reply bytes promised by its requests in flight (a disk.read's length). */
  replyReserved: number
}

/** What a reply other than disk.read is assumed to cost before it exists. */
const SMALL_REPLY = 64 * 1024
/** A connection must have stopped reading this long before the reply budget closes it (a reader may just be slow for a moment). */
const STALL_GRACE_MS = 1000

const BUILTIN_S = new Set(['hello', 'job.list', 'job.wait', 'job.cancel', 'job.pause', 'job.resume', 'events.subscribe'])

export class ControlServer {
  readonly socketPath: string
  readonly jobs: Jobs
  readonly events: Events
  readonly version: string
  readonly maxPayload: number
  private readonly maxInflight: number
  private readonly maxConnections: number
  private readonly authorize: Authorize
  private readonly socketGroup: number | undefined
  private readonly idleTimeoutMs: number
  private readonly maxPartialBytes: number
  private readonly maxReplyBytes: number
  private readonly maxTotalReplyBytes: number
  private partialBytes = 0
  private partialPausedCount = 0
  private sweeper: NodeJS.Timeout | null = null
  private readonly log: (msg: string, err?: unknown) => void
  private server: net.Server | null = null
  private handlers = new Map<ComponentType, Handler>()
  private standard: StandardHandler | null = null
  private conns = new Map<number, Conn>()
  private nextConnId = 1
  private socketIno = 0
  private unsubscribe: (() => void) | null = null

  constructor(opts: ServerOptions) {
    this.socketPath = opts.socketPath
    this.version = opts.version ?? readVersion()
    this.events = opts.events ?? new Events()
    this.jobs = opts.jobs ?? new Jobs({ events: this.events })
    this.maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD
    this.maxInflight = opts.maxInflight ?? 64
    this.log = opts.log ?? (() => {})
    this.maxConnections = opts.maxConnections ?? 256
    this.authorize = opts.authorize ?? ((_peer, _name, args) => ({ args }))
    this.socketGroup = opts.socketGroup
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000
    this.maxPartialBytes = opts.maxPartialBytes ?? 4 * this.maxPayload
    this.maxReplyBytes = opts.maxReplyBytes ?? 2 * this.maxPayload
    this.maxTotalReplyBytes = opts.maxTotalReplyBytes ?? 8 * this.maxPayload
  }

  /** Handler for every extended command of a component ('S': status, shutdown and other non-built-ins). */
  register(type: ComponentType, handler: Handler): void {
    if (!(type in COMPONENTS)) throw new VsmError('EINVAL', `unknown component type ${JSON.stringify(type)}`)
    // A second registration is a wiring bug; replacing silently would hide it.
    if (this.handlers.has(type)) throw new VsmError('EEXIST', `a handler for component ${type} is already registered`)
    this.handlers.set(type, handler)
  }

  unregister(type: ComponentType): void { this.handlers.delete(type) }

  /** The data path for disk.read/write/flush/discard/size (the virtualizer's). */
  registerStandard(handler: StandardHandler): void {
    if (this.standard) throw new VsmError('EEXIST', 'a standard disk handler is already registered')
    this.standard = handler
  }

  greeting(): Greeting {
    return {
      version: this.version,
      protocol: PROTOCOL_VERSION,
      capabilities: (['S', ...this.handlers.keys()] as ComponentType[]).filter((t, i, a) => a.indexOf(t) === i),
      standard: this.standard !== null,
      codes: COMMANDS.map((c) => ({ name: c.name, code: c.code, type: c.type, nr: c.nr, dir: c.dir, standard: c.standard })),
    }
  }

  async listen(): Promise<void> {
    if (this.server) throw new VsmError('EALREADY', 'control server is already listening')
    await clearStaleSocket(this.socketPath)
    // Half-open so a client may send its last request and shut its side while the reply is still coming.
    const server = net.createServer({ allowHalfOpen: true }, (s) => this.accept(s))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      // The socket is created by bind() inside listen(); a tight umask around that
      // call closes the window before chmod in which another user could connect.
      const old = trySetUmask(0o177)
      try {
        server.listen(this.socketPath, () => { server.off('error', reject); resolve() })
      } finally {
        if (old !== null) trySetUmask(old)
      }
    })
    if (this.socketGroup === undefined) {
      fs.chmodSync(this.socketPath, 0o600)
    } else {
      fs.chownSync(this.socketPath, process.geteuid?.() ?? 0, this.socketGroup)
      fs.chmodSync(this.socketPath, 0o660)
    }
    this.socketIno = fs.statSync(this.socketPath).ino
    // After listen, server errors (EMFILE on accept ...) are logged, never thrown.
    server.on('error', (e) => this.log('control socket error', e))
    this.server = server
    this.unsubscribe = this.events.subscribe((e) => this.stream(e))
    this.sweeper = setInterval(() => this.sweep(), Math.max(10, Math.min(1000, this.idleTimeoutMs / 4)))
    this.sweeper.unref()
  }

  async close(): Promise<void> {
    const server = this.server
    if (!server) return
    this.server = null
    this.unsubscribe?.()
    this.unsubscribe = null
    if (this.sweeper) clearInterval(this.sweeper)
    this.sweeper = null
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    for (const c of this.conns.values()) {
      c.socket.end()
      // end() lets queued replies (the shutdown reply, say) go out; a client that
      // never closes its side must not hold the daemon up.
      setTimeout(() => c.socket.destroy(), 500).unref()
    }
    await closed
    try {
      // Only our own socket file: another server may have been started on the path since.
      if (fs.statSync(this.socketPath).ino === this.socketIno) fs.unlinkSync(this.socketPath)
    } catch { /* already gone */ }
  }

  get listening(): boolean { return this.server !== null }
  get connections(): number { return this.conns.size }

  /** What clients make the server hold right now. */
  stats(): { connections: number; partialBytes: number; replyBytes: number } {
    let replyBytes = 0
    for (const c of this.conns.values()) replyBytes += c.socket.writableLength
    return { connections: this.conns.size, partialBytes: this.partialBytes, replyBytes }
  }

  /** Reply bytes unread or promised by requests in flight, over all connections. */
  private replyHeld(): number {
    let n = 0
    for (const c of this.conns.values()) n += c.socket.writableLength + c.replyReserved
    return n
  }

  /** Sends an event frame to every subscribed connection. */
  private stream(e: VsmEvent): void {
    const { event } = e
    const to = [...this.conns.values()].filter((c) => c.subscribed && !c.closed && (!c.filter || c.filter.has(event)))
    if (to.length === 0) return
    let payload: Buffer
    try {
      payload = encodeJson(e)
    } catch (err) {
      this.log(`event ${event} could not be encoded`, err)
      return
    }
    const code = byName('event')!.code
    for (const c of to) {
      // A subscriber that stopped reading loses events rather than growing our memory.
      if (c.socket.writableLength > this.maxPayload) { c.droppedEvents++; continue }
      this.send(c, { code, id: UNSOLICITED_ID, status: 0, payload })
    }
  }

  // ---- connection handling ---------------------------------------------------

  private accept(socket: net.Socket): void {
    socket.on('error', () => { /* reset by peer and the like; 'close' cleans up */ })
    if (this.conns.size >= this.maxConnections && !this.evictIdle()) {
      // Told, not silently closed: the client can say why it was turned away.
      socket.end(encodeFrame(errorFrame(UNSOLICITED_ID, byName('hello')!.code, 'EUSERS', `too many connections to vsm (${this.maxConnections} busy); try again later`)))
      setTimeout(() => socket.destroy(), 1000).unref()
      return
    }
    let peer: Peer
    try {
      peer = peerCredentials(socket)
    } catch (e) {
      this.log('peer credentials unreadable: connection refused', e)
      socket.destroy()
      return
    }
    const conn: Conn = {
      id: this.nextConnId++, socket, peer, decoder: new FrameDecoder({ maxPayload: this.maxPayload }),
      abort: new AbortController(), subscribed: false, filter: null, queue: [], inflight: 0, closed: false, broken: false, droppedEvents: 0,
      lastActive: Date.now(), writeStalledSince: 0, partial: 0, partialPaused: false, replyReserved: 0,
    }
    this.conns.set(conn.id, conn)
    socket.on('close', () => this.forget(conn))
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk))
    socket.on('end', () => {
      if (conn.broken) return
      try { conn.decoder.end() } catch (e) { this.log(`connection ${conn.id}: ${(e as Error).message}`) }
      // On a unix socket a half-close and a vanished client look the same (EOF), so
      // long waits are released now; replies of requests that finish anyway are still
      // written before our side closes, for clients that send and then shut down.
      conn.abort.abort()
      this.pump(conn)
    })
    socket.on('drain', () => { conn.writeStalledSince = 0; this.pump(conn) })
    try {
      this.send(conn, { code: byName('hello')!.code, id: UNSOLICITED_ID, status: 0, payload: encodeJson(this.greeting()) })
    } catch (e) {
      this.log('greeting failed', e)
      socket.destroy()
    }
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.broken) return
    let frames: Frame[] = []
    try {
      frames = conn.decoder.push(chunk)
    } catch { /* handled through decoder.error below */ }
    for (const f of frames) conn.queue.push(f)
    if (frames.length) conn.lastActive = Date.now()
    this.setPartial(conn, conn.decoder.buffered)
    if (conn.decoder.error) {
      // The stream is out of step: nothing after this point can be trusted to be a
      // frame. Requests that arrived whole before it are answered, then we close.
      this.log(`connection ${conn.id} closed: ${conn.decoder.error.message}`)
      conn.broken = true
      conn.abort.abort()
      conn.socket.pause()
      setTimeout(() => conn.socket.destroy(), 2000).unref()
    }
    this.pump(conn)
  }

  /**
   * Starts queued requests while the connection has room: at most maxInflight at a
   * time, and none while the client is not reading its replies. Reading stops while
   * a backlog exists, so a client that floods us or never reads costs bounded memory.
   */
  private pump(conn: Conn): void {
    if (conn.closed) return
    while (conn.queue.length && conn.inflight < this.maxInflight && !conn.socket.writableNeedDrain) {
      // Replies are bounded by what is queued plus what requests in flight will add
      // (a read promises its length); one request always runs, so a big read progresses.
      const cost = this.replyCost(conn.queue[0])
      if (conn.inflight > 0 && (conn.socket.writableLength + conn.replyReserved + cost > this.maxReplyBytes ||
        this.replyHeld() + cost > this.maxTotalReplyBytes)) break
      const f = conn.queue.shift()!
      conn.inflight++
      conn.replyReserved += cost
      this.dispatch(conn, f)
        .catch((e) => this.log('dispatch failed', e))
        .finally(() => {
          conn.inflight--
          conn.replyReserved -= cost
          conn.lastActive = Date.now()
          this.pump(conn)
        })
    }
    if (conn.queue.length || conn.broken || conn.partialPaused) conn.socket.pause()
    else if (conn.socket.isPaused()) conn.socket.resume()
    const noMoreInput = conn.broken || conn.socket.readableEnded
    if (noMoreInput && conn.inflight === 0 && conn.queue.length === 0) conn.socket.end()
  }

  private send(conn: Conn, f: Frame): void {
    if (conn.closed || conn.socket.destroyed || !conn.socket.writable) return
    if (!conn.socket.write(encodeFrame(f, Number.MAX_SAFE_INTEGER)) && !conn.writeStalledSince) conn.writeStalledSince = Date.now()
  }

  private replyCost(f: Frame): number {
    if (f.code !== byName('disk.read')!.code) return SMALL_REPLY
    try { return decodeDiskIo(f.payload, false).length } catch { return SMALL_REPLY }
  }

  /**
   * Keeps the server-wide count of half-received bytes. Over the cap, only the
   * connection furthest into its frame reads on (so some frame always completes and
   * frees its bytes, and no set of large writers deadlocks); the rest with a partial
   * frame pause until the count is back under the cap or they lead. A stalled leader
   * is dropped by the idle timeout.
   */
  private setPartial(conn: Conn, bytes: number): void {
    if (bytes === conn.partial) return
    this.partialBytes += bytes - conn.partial
    conn.partial = bytes
    const over = this.partialBytes > this.maxPartialBytes
    if (!over && this.partialPausedCount === 0) return
    let leader: Conn | undefined
    if (over) for (const c of this.conns.values()) if (c.partial && (!leader || c.partial > leader.partial)) leader = c
    for (const c of this.conns.values()) {
      const pause = over && c.partial > 0 && c !== leader
      if (pause === c.partialPaused) continue
      c.partialPaused = pause
      this.partialPausedCount += pause ? 1 : -1
      this.pump(c)
    }
  }

  /** Nothing in flight or queued and no subscription: a connection nobody waits on. */
  private idle(c: Conn): boolean {
    return c.inflight === 0 && c.queue.length === 0 && !c.subscribed
  }

  /** Drops the longest-idle connection to make room for a new one; false when every connection is busy. */
  private evictIdle(): boolean {
    let victim: Conn | undefined
    for (const c of this.conns.values()) if (this.idle(c) && (!victim || c.lastActive < victim.lastActive)) victim = c
    if (!victim) return false
    this.log(`connection ${victim.id} dropped: idle while the connection cap (${this.maxConnections}) was reached`)
    this.drop(victim)
    return true
  }

  private forget(c: Conn): void {
    if (c.partialPaused) { c.partialPaused = false; this.partialPausedCount-- }
    c.closed = true
    this.conns.delete(c.id)
    this.setPartial(c, 0)
    c.abort.abort()
  }

  private drop(c: Conn): void {
    this.forget(c)
    c.socket.destroy()
  }

  private sweep(): void {
    const now = Date.now()
    this.shedUnread(now)
    for (const c of [...this.conns.values()]) {
      if (this.idle(c) && now - c.lastActive > this.idleTimeoutMs) {
        this.log(`connection ${c.id} closed: idle for ${this.idleTimeoutMs} ms${c.partial ? ` holding ${c.partial} bytes of a frame` : ''}`)
        this.drop(c)
      } else if (c.writeStalledSince && now - c.writeStalledSince > this.idleTimeoutMs) {
        this.log(`connection ${c.id} closed: ${c.socket.writableLength} reply bytes unread for ${this.idleTimeoutMs} ms`)
        this.drop(c)
      }
    }
  }

  /**
   * Over the server-wide reply budget, the connections whose replies have gone unread
   * longest (at least STALL_GRACE_MS) are closed until back under it: each started only
   * one request past the budget, so what they hold is what their peers stopped reading.
   */
  private shedUnread(now: number): void {
    let unread = 0
    for (const c of this.conns.values()) unread += c.socket.writableLength
    if (unread <= this.maxTotalReplyBytes) return
    const stalled = [...this.conns.values()]
      .filter((c) => c.writeStalledSince && now - c.writeStalledSince >= STALL_GRACE_MS)
      .sort((a, b) => a.writeStalledSince - b.writeStalledSince)
    for (const c of stalled) {
      if (unread <= this.maxTotalReplyBytes) break
      unread -= c.socket.writableLength
      this.log(`connection ${c.id} closed: ${c.socket.writableLength} reply bytes unread for ${now - c.writeStalledSince} ms while replies to all connections passed ${this.maxTotalReplyBytes} bytes`)
      this.drop(c)
    }
  }

  private reply(conn: Conn, req: Frame, payload: Buffer): void {
    if (payload.length > this.maxPayload) {
      this.replyError(conn, req, 'E2BIG', `reply of ${payload.length} bytes exceeds the ${this.maxPayload}-byte frame limit`)
      return
    }
    this.send(conn, { code: req.code, id: req.id, status: 0, payload })
  }

  private replyError(conn: Conn, req: Frame, error: string, message: string): void {
    this.send(conn, errorFrame(req.id, req.code, error, message))
  }

  private async dispatch(conn: Conn, req: Frame): Promise<void> {
    try {
      const payload = await this.route(conn, req)
      this.reply(conn, req, payload)
    } catch (e) {
      if (e instanceof VsmError) {
        this.replyError(conn, req, e.code, e.message)
      } else {
        this.log(`command ${formatCode(req.code)} failed`, e)
        this.replyError(conn, req, 'EIO', e instanceof Error ? e.message : String(e))
      }
    }
  }

  private async route(conn: Conn, req: Frame): Promise<Buffer> {
    if (req.id === UNSOLICITED_ID) throw new VsmError('EINVAL', 'request id 0 is reserved for server-initiated frames')
    const def = byCode(req.code)
    if (!def) throw new VsmError('EINVAL', `unknown command code ${formatCode(req.code)}`)
    if (def.name === 'event') throw new VsmError('EINVAL', 'event frames are sent by the server, not to it')
    const ctx: RequestContext = {
      server: this, jobs: this.jobs, connectionId: conn.id, requestId: req.id, signal: conn.abort.signal,
    }
    if (isStandard(def.code)) return this.routeStandard(conn, def, req, ctx)

    const cmd: Command = { name: def.name, code: def.code, args: checkArgs(def, decodeJson(req.payload)), payload: req.payload }
    const allowed = this.authorize(conn.peer, def.name, cmd.args)
    cmd.args = allowed.args
    if (def.type === 'S' && BUILTIN_S.has(def.name)) return encodeJson(await this.system(conn, cmd, ctx))
    const result = await this.component(def)(cmd, ctx)
    try {
      return encodeJson(allowed.filter ? allowed.filter(result) : result)
    } catch (e) {
      throw new VsmError('EIO', `${def.name}: result could not be encoded: ${(e as Error).message}`)
    }
  }

  private component(def: CommandDef): Handler {
    const handler = this.handlers.get(def.type)
    if (!handler) throw new VsmError('ENOSYS', `${def.name}: the ${COMPONENTS[def.type]} component is not running`)
    return handler
  }

  /**
   * In-band commands (extended attributes on files in the FUSE view) take the same
   * route to the owning component as commands from the socket.
   */
  async invoke(name: string, args?: Record<string, unknown>): Promise<unknown> {
    const def = byName(name)
    if (!def || isStandard(def.code) || (def.type === 'S' && BUILTIN_S.has(def.name))) throw new VsmError('EINVAL', `${name} cannot be sent in-band`)
    const ctx: RequestContext = { server: this, jobs: this.jobs, connectionId: 0, requestId: 0, signal: new AbortController().signal }
    return this.component(def)({ name: def.name, code: def.code, args: checkArgs(def, args), payload: Buffer.alloc(0) }, ctx)
  }

  private async routeStandard(conn: Conn, def: CommandDef, req: Frame, ctx: RequestContext): Promise<Buffer> {
    const handler = this.standard
    if (!handler) throw new VsmError('ENOSYS', `${def.name}: the virtualizer data path is not running`)
    const io = decodeDiskIo(req.payload, def.name === 'disk.write')
    this.authorize(conn.peer, def.name, { path: io.path })
    if (def.name === 'disk.read' && io.length > this.maxPayload) {
      throw new VsmError('EINVAL', `read of ${io.length} bytes exceeds the ${this.maxPayload}-byte frame limit`)
    }
    const out = await handler({ ...io, name: def.name as DiskRequest['name'], code: def.code }, ctx)
    if (def.name === 'disk.read') {
      if (!Buffer.isBuffer(out)) throw new VsmError('EIO', 'disk.read handler returned no data')
      return out
    }
    if (def.name === 'disk.size') {
      if (typeof out !== 'number' || !Number.isSafeInteger(out) || out < 0) throw new VsmError('EIO', 'disk.size handler returned no size')
      return encodeU64(out)
    }
    return Buffer.alloc(0)
  }

  /** Built-in system commands: the greeting, jobs and event subscription. */
  private async system(conn: Conn, cmd: Command, ctx: RequestContext): Promise<unknown> {
    const args = cmd.args
    switch (cmd.name) {
      case 'hello':
        return this.greeting()
      case 'job.list':
        return this.jobs.list()
      case 'job.wait': {
        const wait = args.all ? this.jobs.waitAll(ctx.signal) : this.jobs.wait(args.id, ctx.signal)
        if (args.timeoutMs === undefined) return wait
        const ms: number = args.timeoutMs
        let timer: NodeJS.Timeout | undefined
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new VsmError('ETIMEDOUT', `job still running after ${ms} ms`)), ms)
        })
        try { return await Promise.race([wait, timeout]) } finally { clearTimeout(timer) }
      }
      case 'job.cancel':
        return this.jobs.cancel(args.id)
      case 'job.pause':
        return this.jobs.pause(args.id)
      case 'job.resume':
        return this.jobs.resume(args.id)
      case 'events.subscribe': {
        conn.subscribed = true
        conn.filter = args.events ? new Set(args.events) : null
        return { subscribed: true, events: args.events ?? 'all' }
      }
    }
    throw new VsmError('EINVAL', `unknown system command ${cmd.name}`)
  }
}

function trySetUmask(mask: number): number | null {
  // process.umask() throws in worker threads; the chmod after listen still applies.
  try { return process.umask(mask) } catch { return null }
}

/**
 * A socket file left by a killed daemon is removed; one that still answers belongs
 * to a running daemon and is refused, and a path that is not a socket at all is
 * never deleted.
 */
async function clearStaleSocket(socketPath: string): Promise<void> {
  let st: fs.Stats
  try { st = fs.lstatSync(socketPath) } catch { return }
  if (!st.isSocket()) throw new VsmError('EEXIST', `${socketPath} exists and is not a socket; not removing it`)
  const alive = await new Promise<boolean>((resolve) => {
    const s = net.connect(socketPath)
    const timer = setTimeout(() => { s.destroy(); resolve(true) }, 1000)
    s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve(true) })
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      // EACCES/EPERM: someone else's socket; treat it as alive rather than delete it.
      resolve(!(e.code === 'ECONNREFUSED' || e.code === 'ENOENT'))
    })
  })
  if (alive) throw new VsmError('EADDRINUSE', `another vsm is already serving on ${socketPath}`)
  try { fs.unlinkSync(socketPath) } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
}

function readVersion(): string {
  try {
    return require('../../../package.json').version as string
  } catch {
    try { return require('../../package.json').version as string } catch { return '0.0.0' }
  }
}
