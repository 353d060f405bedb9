// An archive tier's object store: immutable objects named by key, each carrying a
// crc32 per 4 KiB of data so that any range read back is verified. One interface,
// `ArchiveStore`, over small backends (a directory, SFTP) that only move bytes: write a
// whole object durably under its name, read a range, remove, list. The framing and the
// checks are here, once, so every backend stores and verifies objects the same way.
import { crc32 } from '../native/sums'
import { VsmError } from '../block/blockdev'
import { DirBackend } from './archive-dir'
import { parseSftp, SftpBackend } from './archive-sftp'

/** What a backend does: bytes only, no framing. */
export interface ArchiveBackend {
  /** Stores `data` under `name`, replacing any object there atomically; durable (fsynced, its directory entry too) when it resolves. */
  write(name: string, data: Buffer): Promise<void>
  /** Reads [pos, pos+len) of object `name`; ENOENT when absent; returns fewer bytes only at its end. */
  read(name: string, pos: number, len: number): Promise<Buffer>
  /** Removes object `name`; an absent one is not an error. */
  remove(name: string): Promise<void>
  /** The names of all stored objects (not the temporaries of unfinished writes). */
  list(): Promise<string[]>
  /** Checks that the archive is reachable and its directory is there (tier add refuses one that is not). */
  probe(): Promise<void>
  close(): Promise<void>
}

export interface ArchiveStore {
  /** Stores `data` under `key` with its checksums; durable when it resolves. */
  put(key: string, data: Buffer): Promise<void>
  /** Bytes [offset, offset+length) of the object's data, verified; EIO on a mismatch. */
  get(key: string, offset: number, length: number): Promise<Buffer>
  delete(key: string): Promise<void>
  list(): Promise<string[]>
  probe(): Promise<void>
  close(): Promise<void>
}

const MAGIC = Buffer.from('VSMARC01')
/** Checksum granularity: a range read verifies the 4 KiB blocks it touches. */
export const CSUM_BS = 4096
/** The header: magic, data length, crc32 of (length + table), then one crc32 per block. */
const FIXED = 16
/** Objects hold at most this much data (the HSM writes 1 MiB objects). */
export const MAX_OBJECT = 64 << 20
const KEY_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/

export function checkKey(key: unknown): string {
  if (typeof key !== 'string' || !KEY_RE.test(key)) throw new VsmError('EINVAL', `archive object key: letters, digits, '_', '.', '-' (not starting with . or -) expected, not ${JSON.stringify(key)}`)
  return key
}

const blocksOf = (len: number) => Math.ceil(len / CSUM_BS)
const headerLen = (len: number) => FIXED + 4 * blocksOf(len)

/** The object as stored: header (magic, length, header crc, block crcs) then the data. */
export function encodeObject(data: Buffer): Buffer {
  const n = blocksOf(data.length)
  const out = Buffer.allocUnsafe(FIXED + 4 * n + data.length)
  MAGIC.copy(out, 0)
  out.writeUInt32LE(data.length, 8)
  for (let i = 0; i < n; i++) out.writeUInt32LE(crc32(data.subarray(i * CSUM_BS, (i + 1) * CSUM_BS)), FIXED + 4 * i)
  out.writeUInt32LE(headerCrc(out, n), 12)
  data.copy(out, FIXED + 4 * n)
  return out
}

function headerCrc(h: Buffer, n: number): number {
  return crc32(h.subarray(FIXED, FIXED + 4 * n), crc32(h.subarray(8, 12)))
}

/** ArchiveStore over a backend: framing on put, verification on get. */
export class FramedArchive implements ArchiveStore {
  constructor(private backend: ArchiveBackend, private where: string) {}

  async put(key: string, data: Buffer): Promise<void> {
    checkKey(key)
    if (data.length > MAX_OBJECT) throw new VsmError('EINVAL', `archive object of ${data.length} bytes: at most ${MAX_OBJECT}`)
    await this.backend.write(key, encodeObject(data))
  }

  async get(key: string, offset: number, length: number): Promise<Buffer> {
    checkKey(key)
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) throw new VsmError('EINVAL', `bad range ${offset}+${length}`)
    const bad = (why: string) => new VsmError('EIO', `archive object ${key} in ${this.where}: ${why}`)
    // one read usually brings the whole header (1 MiB of data has a 1 KiB table)
    let head = await this.backend.read(key, 0, 4096)
    if (head.length < FIXED || !head.subarray(0, 8).equals(MAGIC)) throw bad('not an archive object (bad magic)')
    const size = head.readUInt32LE(8)
    const hl = headerLen(size)
    if (head.length < hl) {
      head = await this.backend.read(key, 0, hl)
      if (head.length < hl) throw bad('truncated header')
    }
    if (headerCrc(head, blocksOf(size)) !== head.readUInt32LE(12)) throw bad('header checksum mismatch')
    if (offset + length > size) throw new VsmError('EINVAL', `range ${offset}+${length} past the end of archive object ${key} (${size} bytes)`)
    if (length === 0) return Buffer.alloc(0)
    const b0 = Math.floor(offset / CSUM_BS), b1 = blocksOf(offset + length)
    const from = b0 * CSUM_BS, to = Math.min(size, b1 * CSUM_BS)
    const data = await this.backend.read(key, hl + from, to - from)
    if (data.length < to - from) throw bad(`truncated data (${hl + from + data.length} of ${hl + size} bytes)`)
    for (let b = b0; b < b1; b++) {
      const s = (b - b0) * CSUM_BS
      if (crc32(data.subarray(s, s + CSUM_BS)) !== head.readUInt32LE(FIXED + 4 * b)) throw bad(`checksum mismatch in bytes ${b * CSUM_BS}..${Math.min(size, (b + 1) * CSUM_BS)}`)
    }
    return data.subarray(offset - from, offset - from + length)
  }

  delete(key: string): Promise<void> { return this.backend.remove(checkKey(key)) }

  async list(): Promise<string[]> { return (await this.backend.list()).filter((k) => KEY_RE.test(k)).sort() }

  probe(): Promise<void> { return this.backend.probe() }

  close(): Promise<void> { return this.backend.close() }
}

/** Where an archive tier keeps its objects: a directory, or sftp://USER@HOST[:PORT]/PATH with its key and known_hosts. */
export interface ArchiveSpec { archive: string; identity?: string; knownHosts?: string }

/** The store a tier names; EINVAL for a malformed one. Nothing is contacted until first use (or `probe`). */
export function openArchive(spec: ArchiveSpec): ArchiveStore {
  if (spec.archive.startsWith('sftp:')) {
    return new FramedArchive(new SftpBackend(parseSftp(spec.archive), { identity: spec.identity, knownHosts: spec.knownHosts, readyTimeoutMs: 10_000 }), spec.archive)
  }
  if (!spec.archive.startsWith('/') || spec.archive.split('/').includes('..')) throw new VsmError('EINVAL', `archive: an absolute directory or sftp://USER@HOST[:PORT]/PATH expected, not ${JSON.stringify(spec.archive)}`)
  return new FramedArchive(new DirBackend(spec.archive), spec.archive)
}
