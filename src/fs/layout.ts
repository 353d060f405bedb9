// On-disk formats of the fs metadata, all inside volume 0:
//
//   block 0, block 1      superblock copies (rewritten only when the fs gains or drops a volume)
//   ckptA, ckptB          two alternating checkpoint areas: header + a record naming the
//                         blocks that hold the state (inodes, directories and xattrs as
//                         JSON, each file's extent tree root among them: state.ts), crc32
//   journal               circular log of 512-byte-aligned records (seq, nonce, len, crc32)
//   data                  4 KiB blocks handed out by the extent allocator; the B+tree store
//                         (superblock v3: its two superblock blocks) takes its nodes from it
//
// Volumes other than 0 carry a one-block label (fs uuid + index) at block 0.
import { crc32 } from '../native/sums'
import { BlockDev, VsmError } from '../block/blockdev'

export const BS = 4096
/**
 * An extent's volume number from here up names an archive tier outside the pool
 * (slot = vol - ARCHIVE_BASE), its block number an address in that archive: the HSM
 * attaches the archive; the fs keeps no free map or reference counts for it.
 */
export const ARCHIVE_BASE = 1 << 16
export const isArchive = (vol: number) => vol >= ARCHIVE_BASE
export const SECTOR = 512
const SB_MAGIC = 'VSMFS001'
const LABEL_MAGIC = 'VSMFSVOL'
/** 'VCK1': a version 1/2 fs's checkpoint, the whole state with extents (read to convert it). */
export const CK_V1 = 0x314b4356
/** 'VCK2': extents in the trees, the checkpoint names the store's seq; a version 2 fs ignores it. */
export const CK_V2 = 0x324b4356
const JR_MAGIC = 0x31524a56 // 'VJR1'
export const JR_HDR = 32
const CK_HDR = 64
export const JR_OPS = 1
export const JR_WRAP = 2

/** A volume of the fs; a removed one keeps its slot so extents keep their volume numbers. */
export interface SbVolume { size: number; name: string; removed?: true }

/**
 * Version 1 (main before online volumes): written once, copies identical.
 * Version 2 adds `seq` (the copy with the higher valid seq wins) and removed volumes.
 * Version 3 keeps the extent maps in the B+tree store named by `store` (its two
 * superblock blocks in volume 0's data space) and its checkpoints are VCK2; mount
 * converts a version 1 or 2 fs (journal.ts).
 */
export const SB_VERSION = 3

export interface Superblock {
  version: 1 | 2 | 3
  store?: [number, number]
  seq?: number
  uuid: string
  blockSize: number
  volumes: SbVolume[]
  ckpt: [number, number] // byte offsets of the two areas
  ckptLen: number
  journal: number
  journalLen: number
  dataStart: number // first data block on volume 0
  created: number
}

export function alignUp(n: number, a: number) { return Math.ceil(n / a) * a }

/** Size the metadata regions from the total capacity. */
export function planLayout(vol0Size: number, total: number, journalBytes?: number): Pick<Superblock, 'ckpt' | 'ckptLen' | 'journal' | 'journalLen' | 'dataStart'> {
  const MiB = 1 << 20
  const ckptLen = alignUp(Math.min(64 * MiB, Math.max(MiB, total / 512)), BS)
  if (journalBytes !== undefined && (!Number.isSafeInteger(journalBytes) || journalBytes < 4 * BS || journalBytes > 256 * MiB)) {
    throw new VsmError('EINVAL', `journal size must be 16 KiB..256 MiB, not ${journalBytes}`)
  }
  const journalLen = alignUp(journalBytes ?? Math.min(32 * MiB, Math.max(MiB, total / 1024)), BS)
  const a = 2 * BS, b = a + ckptLen, j = b + ckptLen
  const dataStart = (j + journalLen) / BS
  if ((dataStart + 16) * BS > vol0Size) throw new VsmError('ENOSPC', `volume 0 (${vol0Size} bytes) too small for fs metadata (${dataStart * BS} bytes)`)
  return { ckpt: [a, b], ckptLen, journal: j, journalLen, dataStart }
}

function encodeBlock(magic: string, obj: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(obj))
  if (body.length + 16 > BS) throw new VsmError('EINVAL', 'superblock too large (too many volumes?)')
  const b = Buffer.alloc(BS)
  b.write(magic, 0, 'latin1')
  b.writeUInt32LE(body.length, 8)
  b.writeUInt32LE(crc32(body), 12)
  body.copy(b, 16)
  return b
}

function decodeBlock(magic: string, b: Buffer): any | null {
  if (b.toString('latin1', 0, 8) !== magic) return null
  const len = b.readUInt32LE(8)
  if (len + 16 > b.length) return null
  const body = b.subarray(16, 16 + len)
  if (crc32(body) !== b.readUInt32LE(12)) return null
  try { return JSON.parse(body.toString()) } catch { return null }
}

export function superblockFits(sb: Superblock): boolean {
  return Buffer.byteLength(JSON.stringify(sb)) + 16 <= BS
}

/**
 * Copy 1 first, then copy 0, each made durable before the next: a crash at any
 * instant leaves at least one whole copy, the old or the new (readers take the valid
 * copy with the higher seq).
 */
export async function writeSuperblock(dev: BlockDev, sb: Superblock) {
  const b = encodeBlock(SB_MAGIC, sb)
  for (const off of [BS, 0]) {
    await dev.write(b, off)
    await dev.flush()
  }
}

export async function readSuperblock(dev: BlockDev): Promise<Superblock> {
  let best: Superblock | null = null
  for (const off of [0, BS]) {
    const b = Buffer.alloc(BS)
    await dev.read(b, off)
    const sb = decodeBlock(SB_MAGIC, b)
    if (sb && [1, 2, SB_VERSION].includes(sb.version) && (!best || (sb.seq ?? 0) > (best.seq ?? 0))) best = sb
  }
  if (best) return best
  throw new VsmError('EINVAL', 'no valid vsm fs superblock on volume 0 (not formatted, or both copies damaged)')
}

export async function writeLabel(dev: BlockDev, uuid: string, index: number) {
  await dev.write(encodeBlock(LABEL_MAGIC, { uuid, index }), 0)
}

/** Zero a label (a volume dropped from the fs can be used again). */
export async function clearLabel(dev: BlockDev) {
  await dev.write(Buffer.alloc(BS), 0)
}

export async function readLabel(dev: BlockDev): Promise<{ uuid: string; index: number } | null> {
  const b = Buffer.alloc(BS)
  await dev.read(b, 0)
  return decodeBlock(LABEL_MAGIC, b)
}

/** What the start of a volume holds, as far as the fs is concerned. */
export type Probe =
  | { kind: 'fs'; sb: Superblock }
  | { kind: 'member'; uuid: string; index: number }
  | { kind: 'damaged' }
  | { kind: 'blank' }

/**
 * Look for an fs superblock or an fs label at the start of a volume. A block that
 * carries one of the magics but does not decode is 'damaged': never formatted over.
 */
export async function probeVolume(dev: BlockDev): Promise<Probe> {
  if (dev.size < 2 * BS) return { kind: 'blank' }
  const b = Buffer.alloc(2 * BS)
  await dev.read(b, 0)
  try { return { kind: 'fs', sb: await readSuperblock(dev) } } catch { /* none */ }
  const l = decodeBlock(LABEL_MAGIC, b.subarray(0, BS))
  if (l) return { kind: 'member', uuid: l.uuid, index: l.index }
  for (const m of [SB_MAGIC, LABEL_MAGIC]) {
    if (b.toString('latin1', 0, 8) === m || b.toString('latin1', BS, BS + 8) === m) return { kind: 'damaged' }
  }
  return { kind: 'blank' }
}

// ---- checkpoints ----

export interface CkptHeader { seq: number; nonce: number; jstart: number; len: number }

export function encodeCheckpoint(h: CkptHeader, payload: Buffer): Buffer {
  // only the current format is written
  const total = alignUp(CK_HDR + payload.length, BS)
  const b = Buffer.allocUnsafe(total)
  b.fill(0, 0, CK_HDR)
  b.writeUInt32LE(CK_V2, 0)
  b.writeUIntLE(h.seq, 8, 6)
  b.writeUInt32LE(h.nonce, 16)
  b.writeUInt32LE(h.jstart, 20)
  b.writeUInt32LE(payload.length, 24)
  payload.copy(b, CK_HDR)
  b.fill(0, CK_HDR + payload.length)
  b.writeUInt32LE(crc32(payload, crc32(b.subarray(0, 28))), 28)
  return b
}

export async function readCheckpoint(dev: BlockDev, off: number, areaLen: number, magic: number): Promise<{ h: CkptHeader; payload: Buffer } | null> {
  const hb = Buffer.alloc(CK_HDR)
  await dev.read(hb, off)
  if (hb.readUInt32LE(0) !== magic) return null
  const len = hb.readUInt32LE(24)
  if (len + CK_HDR > areaLen) return null
  const payload = Buffer.alloc(len)
  await dev.read(payload, off + CK_HDR)
  if (crc32(payload, crc32(hb.subarray(0, 28))) !== hb.readUInt32LE(28)) return null
  return { h: { seq: hb.readUIntLE(8, 6), nonce: hb.readUInt32LE(16), jstart: hb.readUInt32LE(20), len }, payload }
}

/** A run of blocks of volume 0. */
export interface Run { start: number; len: number }

// ---- journal records ----

export function recordLen(payloadLen: number) { return alignUp(JR_HDR + payloadLen, SECTOR) }

export function encodeRecord(type: number, seq: number, nonce: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(recordLen(payload.length))
  b.writeUInt32LE(JR_MAGIC, 0)
  b[4] = type
  b.writeUIntLE(seq, 8, 6)
  b.writeUInt32LE(nonce, 16)
  b.writeUInt32LE(payload.length, 20)
  payload.copy(b, JR_HDR)
  b.writeUInt32LE(crc32(payload, crc32(b.subarray(0, 24))), 24)
  return b
}

/** Decode a record header at a journal position; payload read separately. */
export function decodeRecordHeader(hb: Buffer): { type: number; seq: number; nonce: number; len: number; crc: number } | null {
  if (hb.readUInt32LE(0) !== JR_MAGIC) return null
  return { type: hb[4], seq: hb.readUIntLE(8, 6), nonce: hb.readUInt32LE(16), len: hb.readUInt32LE(20), crc: hb.readUInt32LE(24) }
}

export function recordCrcOk(hb: Buffer, payload: Buffer, crc: number) {
  return crc32(payload, crc32(hb.subarray(0, 24))) === crc
}
