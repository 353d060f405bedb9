// The one block interface every byte-carrying layer implements (device, volume,
// fs file, virtual disk, fault wrapper), so layers stack like QEMU's block graph
// and one conformance suite covers them all.

export interface BlockDev {
  /** Size in bytes. */
  readonly size: number
  /** Fills buf from offset; returns bytes read. Unwritten ranges read as zeros. */
  read(buf: Buffer, offset: number): Promise<number>
  /** `ack`: see WriteAck; a device that does not take it (or keeps it) answers as ever. */
  write(buf: Buffer, offset: number, ack?: WriteAck): Promise<void>
  /** Resolves once everything written before the call is on stable storage. */
  flush(): Promise<void>
  /**
   * Write buf at offset and resolve once that range is on stable storage, without
   * waiting for anything else written before (a FUA write). Optional: writeDurable()
   * below falls back to write + flush.
   */
  writeDurable?(buf: Buffer, offset: number): Promise<void>
  /** Optional: give the range back (a thin backing file shrinks); it reads as zeros after. */
  discard?(offset: number, length: number): Promise<void>
  close(): Promise<void>
}

/**
 * A write's early answer (the native FUSE binding's, native/ack.h): the guest's write is
 * acknowledged by the write thread that writes its last piece to a backing file,
 * without waiting for the completion to reach JavaScript. A layer passes it down with its
 * writes only where the write is over once those land, with nothing of its own to do
 * before it may be acknowledged (the caller's promise still settles as ever, later), and
 * calls split(k) first when it passes it to k writes. A layer that keeps it is safe: the
 * write is then answered only when its promise settles.
 */
export interface WriteAck {
  split(pieces: number): void
  /** For the device queue that hands it to pwriteBatch. */
  readonly handle: unknown
}

let stranded = 0
/**
 * Calls a device gave up on while the kernel still held them (an abandoned device):
 * the kernel may yet read or fill their buffers. Whoever frees or reuses a buffer as
 * soon as its I/O settled does so only if this count did not move meanwhile.
 */
export const strandedCalls = (): number => stranded
/** n calls were left to the kernel. */
export function strand(n: number): void { stranded += n }

const ZERO_CHUNK = Buffer.alloc(1 << 20)
/** What a discard that cannot be done answers (a backing fs without hole punching). */
const UNSUPPORTED = new Set(['EOPNOTSUPP', 'ENOTSUP', 'ENOSYS'])

/**
 * Make [offset, offset+length) read as zeros: dev.discard where the device has one that
 * works, else zeros written 1 MiB at a time. A device that cannot punch holes must cost
 * space, never a copy of a mirror (or zeros a rebuild counted on).
 */
export async function zeroRange(dev: BlockDev, offset: number, length: number): Promise<void> {
  if (dev.discard) {
    try { return await dev.discard(offset, length) } catch (e) { if (!UNSUPPORTED.has((e as { code?: string }).code ?? '')) throw e }
  }
  for (let o = 0; o < length; o += ZERO_CHUNK.length) await dev.write(ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, length - o)), offset + o)
}

/** dev.writeDurable when the device has one, else write then flush (which also makes older writes durable). */
export async function writeDurable(dev: BlockDev, buf: Buffer, offset: number): Promise<void> {
  if (dev.writeDurable) return dev.writeDurable(buf, offset)
  await dev.write(buf, offset)
  await dev.flush()
}

/** An Error carrying a POSIX errno name, so the FUSE view and the socket can report it. */
export class VsmError extends Error {
  constructor(public readonly code: string, message: string) {
    super(message)
    this.name = 'VsmError'
  }
}

export function checkRange(dev: { size: number }, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new VsmError('EINVAL', `bad range offset=${offset} length=${length}`)
  }
  if (offset + length > dev.size) {
    throw new VsmError('ENOSPC', `range ${offset}+${length} beyond end of device (${dev.size} bytes)`)
  }
}

/** checkRange for promise-returning hot paths: a rejected promise when the range is bad, else undefined. */
export function rejectBadRange(dev: { size: number }, offset: number, length: number): Promise<never> | undefined {
  try {
    checkRange(dev, offset, length)
    return undefined
  } catch (e) {
    return Promise.reject(e)
  }
}
