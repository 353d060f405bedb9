// The control socket client used by the CLI (and tests, and any storage-aware
// program written in TypeScript): connects, reads the greeting, sends commands by
// name or number, matches replies by request id, and delivers event frames.
import * as net from 'net'
import { VsmError } from '../block/blockdev'
import { byCode, byName } from './codes'
import {
  DEFAULT_MAX_PAYLOAD, Frame, FrameDecoder, UNSOLICITED_ID, decodeJson, decodeU64, encodeDiskIo,
  encodeFrame, encodeJson, errorFromFrame,
} from './codec'
import type { Greeting } from './server'
import type { EventLevel } from './events'

export interface ClientOptions {
  /** How long to wait for the greeting (default 5000 ms). */
  timeoutMs?: number
  maxPayload?: number
}

export interface EventFrame {
  event: string
  data: any
  level: EventLevel
  timestamp: number
}

interface Pending {
  resolve: (v: any) => void
  reject: (e: Error) => void
  /** How to turn the reply payload into a result. */
  decode: (payload: Buffer) => any
}

export class ControlClient {
  readonly socketPath: string
  greeting!: Greeting
  private socket: net.Socket
  private decoder: FrameDecoder
  private readonly maxPayload: number
  private pending = new Map<number, Pending>()
  private nextId = 1
  private listeners = new Set<(e: EventFrame) => void>()
  private closeListeners = new Set<(err?: Error) => void>()
  private closedError: VsmError | null = null
  private onGreeting: ((g: Greeting) => void) | null = null

  private constructor(socketPath: string, socket: net.Socket, maxPayload: number) {
    this.socketPath = socketPath
    this.socket = socket
    this.maxPayload = maxPayload
    this.decoder = new FrameDecoder({ maxPayload })
  }

  /** Connects and waits for the greeting; a missing daemon is one clear error. */
  static async connect(socketPath: string, opts: ClientOptions = {}): Promise<ControlClient> {
    const timeoutMs = opts.timeoutMs ?? 5000
    const socket = net.connect(socketPath)
    const client = new ControlClient(socketPath, socket, opts.maxPayload ?? DEFAULT_MAX_PAYLOAD)
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new VsmError('ETIMEDOUT', `no greeting from vsm on ${socketPath} within ${timeoutMs} ms`))
      }, timeoutMs)
      const fail = (e: NodeJS.ErrnoException) => {
        clearTimeout(timer)
        socket.destroy()
        reject(connectError(socketPath, e))
      }
      socket.once('error', fail)
      client.onGreeting = () => {
        clearTimeout(timer)
        socket.off('error', fail)
        resolve()
      }
      client.closeListeners.add(function early(err) {
        client.closeListeners.delete(early)
        if (client.onGreeting) fail(Object.assign(new Error(err?.message ?? 'connection closed before the greeting'), { code: (err as NodeJS.ErrnoException | undefined)?.code ?? 'ECONNRESET' }))
      })
      client.wire()
    })
    return client
  }

  private wire(): void {
    this.socket.on('data', (chunk: Buffer) => {
      let frames: Frame[] = []
      try { frames = this.decoder.push(chunk) } catch { /* decoder.error below */ }
      for (const f of frames) this.onFrame(f)
      const err = this.decoder.error
      if (err) this.shutdown(new VsmError('EPROTO', `bad data from vsm: ${err.message}`))
    })
    this.socket.on('error', (e: NodeJS.ErrnoException) => this.shutdown(new VsmError(e.code ?? 'EIO', `control socket: ${e.message}`)))
    this.socket.on('close', () => this.shutdown(new VsmError('ECONNRESET', 'connection to vsm closed')))
  }

  private onFrame(f: Frame): void {
    if (f.id === UNSOLICITED_ID) {
      if (f.code === byName('hello')!.code) {
        // a greeting that is an error: turned away (too many connections, not allowed)
        if (f.status !== 0) return this.shutdown(errorFromFrame(f))
        let g: Greeting
        try { g = decodeJson(f.payload) } catch { return this.shutdown(new VsmError('EPROTO', 'unreadable greeting from vsm')) }
        this.greeting = g
        const cb = this.onGreeting
        this.onGreeting = null
        cb?.(g)
      } else if (f.code === byName('event')!.code) {
        let e: EventFrame
        try { e = decodeJson(f.payload) } catch { return }
        for (const l of this.listeners) {
          try { l(e) } catch { /* a listener's bug is not the connection's */ }
        }
      }
      return
    }
    const p = this.pending.get(f.id)
    if (!p) return
    this.pending.delete(f.id)
    if (f.status !== 0) return p.reject(errorFromFrame(f))
    try { p.resolve(p.decode(f.payload)) } catch (e) { p.reject(e as Error) }
  }

  private shutdown(err: VsmError): void {
    if (this.closedError) return
    this.closedError = err
    this.socket.destroy()
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
    for (const l of [...this.closeListeners]) l(err)
  }

  get closed(): boolean { return this.closedError !== null }

  /**
   * Sends a command and resolves with its result: parsed JSON for extended commands,
   * a Buffer for disk.read, a number for disk.size, undefined for the other disk
   * commands. For a standard command, args is {path, offset?, length?} and payload is
   * the data of disk.write. For an extended command, a payload (if given) is sent as
   * is instead of JSON(args). Error replies reject with a VsmError.
   */
  call(nameOrCode: string | number, args?: any, payload?: Buffer): Promise<any> {
    let code: number
    const def = typeof nameOrCode === 'number' ? byCode(nameOrCode) : byName(nameOrCode)
    if (def) code = def.code
    else if (typeof nameOrCode === 'number') code = nameOrCode >>> 0 // a code this build does not know: let the server decide
    else return Promise.reject(new VsmError('EINVAL', `unknown command ${JSON.stringify(nameOrCode)}`))

    let body: Buffer
    let decode: (b: Buffer) => any
    try {
      if (def?.standard) {
        if (!args || typeof args.path !== 'string') throw new VsmError('EINVAL', `${def.name} needs {path}`)
        body = encodeDiskIo(args, def.name === 'disk.write' ? (payload ?? Buffer.alloc(0)) : undefined)
        decode = def.name === 'disk.read' ? (b) => b : def.name === 'disk.size' ? decodeU64 : () => undefined
      } else {
        body = payload ?? encodeJson(args)
        decode = decodeJson
      }
    } catch (e) {
      return Promise.reject(e)
    }
    return this.send(code, body, decode)
  }

  private send(code: number, payload: Buffer, decode: (b: Buffer) => any): Promise<any> {
    if (this.closedError) return Promise.reject(this.closedError)
    if (payload.length > this.maxPayload) {
      return Promise.reject(new VsmError('E2BIG', `request of ${payload.length} bytes exceeds the ${this.maxPayload}-byte frame limit`))
    }
    // Ids wrap within u32 but skip 0, which is the server's unsolicited id.
    const id = this.nextId
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, decode })
      this.socket.write(encodeFrame({ code, id, status: 0, payload }, this.maxPayload))
    })
  }

  /** Sends pre-built bytes as they are (tests and protocol tools). */
  writeRaw(bytes: Buffer): void { this.socket.write(bytes) }

  diskRead(path: string, offset: number, length: number): Promise<Buffer> { return this.call('disk.read', { path, offset, length }) }
  diskWrite(path: string, offset: number, data: Buffer): Promise<void> { return this.call('disk.write', { path, offset }, data) }
  diskFlush(path: string): Promise<void> { return this.call('disk.flush', { path }) }
  diskDiscard(path: string, offset: number, length: number): Promise<void> { return this.call('disk.discard', { path, offset, length }) }
  diskSize(path: string): Promise<number> { return this.call('disk.size', { path }) }

  /**
   * Asks the server for events and calls onEvent for each; returns a function that
   * stops local delivery. `events` limits the server to those names.
   */
  async subscribe(onEvent: (e: EventFrame) => void, events?: string[]): Promise<() => void> {
    this.listeners.add(onEvent)
    try {
      await this.call('events.subscribe', events ? { events } : {})
    } catch (e) {
      this.listeners.delete(onEvent)
      throw e
    }
    return () => { this.listeners.delete(onEvent) }
  }

  /** Called once when the connection ends, with the reason. */
  onClose(cb: (err?: Error) => void): void {
    if (this.closedError) cb(this.closedError)
    else this.closeListeners.add(cb)
  }

  /** Closes the connection; calls still waiting reject with ECONNRESET. */
  async close(): Promise<void> {
    if (this.closedError) return
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()))
    if (this.pending.size) {
      // A half-close would leave the server waiting to deliver those replies;
      // a reset tells it at once that nobody is listening (its handlers see ctx.signal).
      this.shutdown(new VsmError('ECONNRESET', 'connection closed by the client'))
    } else {
      this.socket.end()
      setTimeout(() => this.socket.destroy(), 1000).unref()
    }
    await closed
  }
}

function connectError(socketPath: string, e: NodeJS.ErrnoException): VsmError {
  switch (e.code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
      return new VsmError(e.code, `vsm is not running (no socket at ${socketPath})`)
    case 'EACCES':
    case 'EPERM':
      return new VsmError(e.code, `permission denied on ${socketPath}: only the owner of the vsm socket (and root) may send commands`)
    default:
      return new VsmError(e.code ?? 'EIO', `cannot connect to vsm at ${socketPath}: ${e.message}`)
  }
}

