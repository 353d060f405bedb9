// Wire format of the control socket: frames, the streaming decoder, JSON and error
// payloads, and the binary argument of the standard disk commands. Both ends (server
// and client) and the generated C header use exactly these layouts.
//
// Frame = 20-byte header, little-endian (fixed rather than host order so a dump or a
// foreign client reads the same bytes everywhere), then `length` payload bytes:
//   magic u32 | length u32 | code u32 | id u32 | status i32
import { constants as osConstants } from 'os'
import { VsmError } from '../block/blockdev'

/** "VSM1" as bytes on the wire. */
export const MAGIC = 0x314d5356
export const HEADER_SIZE = 20
export const PROTOCOL_VERSION = 1
export const DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
/** Request id the server uses for frames nobody asked for (greeting, events). */
export const UNSOLICITED_ID = 0
/** Upper bound on a disk path in a standard command (Linux PATH_MAX). */
export const MAX_PATH = 4096

export interface Frame {
  code: number
  id: number
  /** 0 ok; on replies a negative errno. */
  status: number
  payload: Buffer
}

/** The stream cannot be trusted any more: the connection must be closed. */
export class FrameError extends VsmError {
  constructor(message: string) {
    super('EPROTO', message)
    this.name = 'FrameError'
  }
}

function u32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${what} is not a u32: ${v}`)
  return v
}

export function encodeHeader(f: Omit<Frame, 'payload'>, length: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_SIZE)
  h.writeUInt32LE(MAGIC, 0)
  h.writeUInt32LE(u32(length, 'length'), 4)
  h.writeUInt32LE(u32(f.code >>> 0, 'code'), 8)
  h.writeUInt32LE(u32(f.id, 'request id'), 12)
  h.writeInt32LE(f.status | 0, 16)
  return h
}

export function encodeFrame(f: Frame, maxPayload = DEFAULT_MAX_PAYLOAD): Buffer {
  if (f.payload.length > maxPayload) {
    throw new VsmError('E2BIG', `payload of ${f.payload.length} bytes exceeds the ${maxPayload}-byte frame limit`)
  }
  return Buffer.concat([encodeHeader(f, f.payload.length), f.payload])
}

export interface DecoderOptions {
  /** Largest payload accepted; a bigger length field is an error (default 16 MiB). */
  maxPayload?: number
}

/**
 * Turns a byte stream into frames whatever the chunking (partial headers, frames
 * split across reads, several frames in one read). Bytes are copied once per frame:
 * chunks are kept as they come and joined only when a whole frame is present, so a
 * 16 MiB frame arriving in 64 KiB reads costs one copy, not hundreds.
 */
export class FrameDecoder {
  readonly maxPayload: number
  private chunks: Buffer[] = []
  private size = 0
  private header: { code: number; id: number; status: number; length: number } | null = null
  private failed: FrameError | null = null

  constructor(opts: DecoderOptions = {}) {
    this.maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD
  }

  /** Bytes held that do not yet make a frame. */
  get buffered(): number { return this.size }

  /** Set once the stream has gone bad; every later push() and end() throws it. */
  get error(): FrameError | null { return this.failed }

  /**
   * Feed bytes; returns every frame they complete. On a bad stream, the frames that
   * came whole before the bad bytes are still returned (so the outcome does not
   * depend on how the bytes were chunked) and `error` is set; with none to return,
   * the FrameError is thrown.
   */
  push(chunk: Buffer): Frame[] {
    if (this.failed) throw this.failed
    if (chunk.length) { this.chunks.push(chunk); this.size += chunk.length }
    const out: Frame[] = []
    for (;;) {
      if (!this.header) {
        if (this.size < HEADER_SIZE) break
        const h = this.take(HEADER_SIZE)
        const magic = h.readUInt32LE(0)
        if (magic !== MAGIC) return this.fail(out, `bad frame magic 0x${magic.toString(16).padStart(8, '0')}`)
        const length = h.readUInt32LE(4)
        // Checked before buffering anything: a hostile length must not make us allocate.
        if (length > this.maxPayload) return this.fail(out, `frame length ${length} exceeds the ${this.maxPayload}-byte limit`)
        this.header = { length, code: h.readUInt32LE(8), id: h.readUInt32LE(12), status: h.readInt32LE(16) }
      }
      if (this.size < this.header.length) break
      const { code, id, status, length } = this.header
      this.header = null
      out.push({ code, id, status, payload: this.take(length) })
    }
    return out
  }

  /** End of stream: a frame cut short is an error the caller may want to log. */
  end(): void {
    if (this.failed) throw this.failed
    if (this.header || this.size) {
      const missing = this.header ? this.header.length - this.size : HEADER_SIZE - this.size
      this.chunks = []; this.size = 0; this.header = null
      throw new FrameError(`stream ended inside a frame (${missing} bytes missing)`)
    }
  }

  private fail(good: Frame[], message: string): Frame[] {
    this.failed = new FrameError(message)
    this.chunks = []
    this.size = 0
    this.header = null
    if (good.length) return good
    throw this.failed
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0)
    const first = this.chunks[0]
    let out: Buffer
    if (first.length >= n) {
      // A view is enough when the frame sits inside one chunk, the common case.
      out = first.subarray(0, n)
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
    } else {
      out = Buffer.allocUnsafe(n)
      let off = 0
      while (off < n) {
        const c = this.chunks[0]
        const k = Math.min(c.length, n - off)
        c.copy(out, off, 0, k)
        off += k
        if (k === c.length) this.chunks.shift()
        else this.chunks[0] = c.subarray(k)
      }
    }
    this.size -= n
    return out
  }
}

// ---- JSON payloads -------------------------------------------------------------

export function encodeJson(value: unknown): Buffer {
  if (value === undefined) return Buffer.alloc(0)
  const text = JSON.stringify(value)
  // JSON.stringify returns undefined for functions/symbols at top level.
  if (text === undefined) return Buffer.alloc(0)
  return Buffer.from(text, 'utf8')
}

/** An empty payload is "no arguments"; anything else must be JSON. */
export function decodeJson(payload: Buffer): any {
  if (payload.length === 0) return undefined
  try {
    return JSON.parse(payload.toString('utf8'))
  } catch (e) {
    throw new VsmError('EINVAL', `payload is not valid JSON: ${(e as Error).message}`)
  }
}

// ---- errors --------------------------------------------------------------------

const ERRNO = osConstants.errno as Record<string, number>
const ERRNO_NAMES = new Map<number, string>()
for (const [name, num] of Object.entries(ERRNO)) if (!ERRNO_NAMES.has(num)) ERRNO_NAMES.set(num, name)

/** errno number for a POSIX name; names we do not know travel as EIO in the status field. */
export function errnoOf(name: string): number { return ERRNO[name] ?? ERRNO.EIO }
export function errnoName(num: number): string { return ERRNO_NAMES.get(Math.abs(num)) ?? 'EIO' }

export interface ErrorBody { error: string; message: string }

export function errorFrame(id: number, code: number, error: string, message: string): Frame {
  return { code, id, status: -errnoOf(error), payload: encodeJson({ error, message } satisfies ErrorBody) }
}

/** The VsmError an error reply stands for; the JSON name wins over the status number. */
export function errorFromFrame(f: Frame): VsmError {
  let body: Partial<ErrorBody> | undefined
  try { body = decodeJson(f.payload) } catch { body = undefined }
  const code = typeof body?.error === 'string' ? body.error : errnoName(f.status)
  const message = typeof body?.message === 'string' ? body.message : `command failed with ${code}`
  return new VsmError(code, message)
}

// ---- standard disk commands ----------------------------------------------------
//
// struct vsm_disk_io { u64 offset; u32 length; u32 path_len; } then path (UTF-8),
// then for disk.write `length` data bytes. The fixed part comes first so that C can
// overlay a naturally aligned struct on it.

export interface DiskIo {
  path: string
  offset: number
  length: number
  /** disk.write only: the bytes to write. */
  data: Buffer
}

export function encodeDiskIo(io: { path: string; offset?: number; length?: number }, data?: Buffer): Buffer {
  const path = Buffer.from(io.path, 'utf8')
  if (path.length === 0 || path.length > MAX_PATH) throw new VsmError('EINVAL', `disk path must be 1..${MAX_PATH} bytes`)
  const offset = io.offset ?? 0
  const length = data ? data.length : (io.length ?? 0)
  if (!Number.isSafeInteger(offset) || offset < 0) throw new VsmError('EINVAL', `bad offset ${offset}`)
  if (!Number.isInteger(length) || length < 0 || length > 0xffffffff) throw new VsmError('EINVAL', `bad length ${length}`)
  const h = Buffer.allocUnsafe(16)
  h.writeBigUInt64LE(BigInt(offset), 0)
  h.writeUInt32LE(length, 8)
  h.writeUInt32LE(path.length, 12)
  return Buffer.concat(data ? [h, path, data] : [h, path])
}

/** Parses a standard command's payload; VsmError EINVAL when it does not add up. */
export function decodeDiskIo(payload: Buffer, withData: boolean): DiskIo {
  if (payload.length < 16) throw new VsmError('EINVAL', `disk command payload of ${payload.length} bytes is shorter than its 16-byte header`)
  const offset = payload.readBigUInt64LE(0)
  const length = payload.readUInt32LE(8)
  const pathLen = payload.readUInt32LE(12)
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new VsmError('EINVAL', `offset ${offset} is too large`)
  if (pathLen === 0 || pathLen > MAX_PATH) throw new VsmError('EINVAL', `disk path length ${pathLen} is not in 1..${MAX_PATH}`)
  if (16 + pathLen > payload.length) throw new VsmError('EINVAL', 'disk path runs past the end of the payload')
  const path = payload.toString('utf8', 16, 16 + pathLen)
  if (path.includes('\0')) throw new VsmError('EINVAL', 'disk path contains a NUL byte')
  const data = payload.subarray(16 + pathLen)
  if (withData && data.length !== length) throw new VsmError('EINVAL', `disk.write says ${length} bytes but carries ${data.length}`)
  if (!withData && data.length !== 0) throw new VsmError('EINVAL', 'unexpected data after the disk path')
  return { path, offset: Number(offset), length, data }
}

export function encodeU64(n: number): Buffer {
  const b = Buffer.allocUnsafe(8)
  b.writeBigUInt64LE(BigInt(n), 0)
  return b
}

export function decodeU64(b: Buffer): number {
  if (b.length !== 8) throw new VsmError('EPROTO', `expected an 8-byte size, got ${b.length} bytes`)
  return Number(b.readBigUInt64LE(0))
}
