// The reserved metadata area at the start of every device and the label in it.
//
//   [0, 256K)     label slot A (even seq)      [256K, 512K)  label slot B (odd seq)
//   [512K, 516K)  write-intent bitmap header   [516K, 1M)    bitmap bits (see bitmap.ts)
//   [1M, end)     data area, handed out to volumes as extents
//
// Slots alternate by seq parity so a torn label write can only damage the slot being
// written; the other slot still holds the previous generation. Each slot is a small
// binary header (magic, length, seq, crc32) followed by pretty-printed JSON holding a
// full copy of the pool configuration, so `strings`/`head -c` on a device shows the
// pool (LVM2 keeps its metadata text the same way), and a pool can be assembled from
// its devices alone.
import { crc32 } from '../native/sums'
import { BlockDev, VsmError } from '../block/blockdev'
import type { PoolConfig } from './config'

export const MiB = 1 << 20
export const RESERVED_BYTES = MiB
export const LABEL_SLOT_BYTES = 256 * 1024
export const LABEL_SLOTS = [0, LABEL_SLOT_BYTES]
export const BITMAP_OFFSET = 2 * LABEL_SLOT_BYTES
export const BITMAP_HEADER_BYTES = 4096
export const BITMAP_BITS_OFFSET = BITMAP_OFFSET + BITMAP_HEADER_BYTES
export const BITMAP_BITS_BYTES = RESERVED_BYTES - BITMAP_BITS_OFFSET

const MAGIC = Buffer.from('VSMLABL1')
const HEADER_BYTES = 512
const FORMAT = 1

export interface Label {
  poolId: string
  deviceId: string
  deviceName: string
  /** Generation: the config seq this label carries. */
  seq: number
  config: PoolConfig
}

export function encodeLabel(label: Label): Buffer {
  const text = JSON.stringify({
    vsm_label: FORMAT,
    pool_id: label.poolId,
    device_id: label.deviceId,
    device_name: label.deviceName,
    seq: label.seq,
    reserved_bytes: RESERVED_BYTES,
    written: new Date().toISOString(),
    config: label.config,
  }, null, 2) + '\n'
  const json = Buffer.from(text, 'utf8')
  if (HEADER_BYTES + json.length > LABEL_SLOT_BYTES) {
    throw new VsmError('ENOSPC', `pool configuration (${json.length} bytes) does not fit a label slot`)
  }
  // whole 4 KiB sectors, so the slot write never read-modify-writes a partial sector
  const out = Buffer.alloc(Math.ceil((HEADER_BYTES + json.length) / 4096) * 4096)
  MAGIC.copy(out, 0)
  out.writeUInt32LE(FORMAT, 8)
  out.writeUInt32LE(json.length, 12)
  out.writeBigUInt64LE(BigInt(label.seq), 16)
  json.copy(out, HEADER_BYTES)
  out.writeUInt32LE(crc32(json, crc32(out.subarray(0, 24))), 24)
  return out
}

/** Parse one slot; null if it is blank, torn or corrupt. */
export function decodeLabel(slot: Buffer): Label | null {
  if (slot.length < HEADER_BYTES || !slot.subarray(0, 8).equals(MAGIC)) return null
  if (slot.readUInt32LE(8) !== FORMAT) return null
  const len = slot.readUInt32LE(12)
  if (HEADER_BYTES + len > slot.length) return null
  const json = slot.subarray(HEADER_BYTES, HEADER_BYTES + len)
  if (crc32(json, crc32(slot.subarray(0, 24))) !== slot.readUInt32LE(24)) return null
  try {
    const o = JSON.parse(json.toString('utf8'))
    const seq = Number(slot.readBigUInt64LE(16))
    if (o.seq !== seq || typeof o.pool_id !== 'string' || typeof o.device_id !== 'string') return null
    return { poolId: o.pool_id, deviceId: o.device_id, deviceName: o.device_name, seq, config: o.config }
  } catch {
    return null
  }
}

export function labelSlotFor(seq: number): number {
  return LABEL_SLOTS[seq % 2]
}

/** Write the label into the slot its seq selects and make it durable. */
export async function writeLabel(dev: BlockDev, label: Label): Promise<void> {
  await dev.write(encodeLabel(label), labelSlotFor(label.seq))
  await dev.flush()
}

export interface ReadLabelResult {
  label: Label | null
  /** The valid slots found, for diagnostics and tests. */
  slots: (Label | null)[]
}

/** Read both slots and return the valid one with the highest seq. */
export async function readLabel(dev: BlockDev): Promise<ReadLabelResult> {
  if (dev.size < RESERVED_BYTES) return { label: null, slots: [null, null] }
  const slots = await Promise.all(LABEL_SLOTS.map(async (off) => {
    const head = Buffer.alloc(HEADER_BYTES)
    await dev.read(head, off)
    if (!head.subarray(0, 8).equals(MAGIC)) return null
    const len = head.readUInt32LE(12)
    if (HEADER_BYTES + len > LABEL_SLOT_BYTES) return null
    const slot = Buffer.alloc(HEADER_BYTES + len)
    await dev.read(slot, off)
    return decodeLabel(slot)
  }))
  let best: Label | null = null
  for (const s of slots) if (s && (!best || s.seq > best.seq)) best = s
  return { label: best, slots }
}

/**
 * Zero the reserved area, both slots and the bitmap (device removed from its pool):
 * a device that never held a volume's data can then be added again without --force.
 */
export async function wipeLabel(dev: BlockDev): Promise<void> {
  await dev.write(Buffer.alloc(RESERVED_BYTES), 0)
  await dev.flush()
}
