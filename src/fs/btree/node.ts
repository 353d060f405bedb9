// The on-disk B+tree node: one 4 KiB metadata block. A 32-byte header {magic BTN1,
// crc32 of the rest, its own block number (a node read from the wrong place is
// refused), leaf flag, value size, key count}, then the keys (u64 as two u32, safe
// integers), then the values: a leaf's fixed-size values, an internal node's child
// block numbers.
import { crc32 } from '../../native/sums'
import { VsmError } from '../../block/blockdev'

export const NODE_SIZE = 4096
const MAGIC = 0x314e5442
const HDR = 32
const CHILD = 8

export interface Node {
  block: number
  leaf: boolean
  /** Bytes per value in a leaf (internal nodes hold 8-byte child block numbers). */
  vsize: number
  keys: number[]
  /** A leaf's values. */
  vals: Buffer[]
  /** An internal node's children; keys[i] is the lowest key under kids[i]. */
  kids: number[]
}

/** Entries a node holds at most. */
export function capacity(leaf: boolean, vsize: number): number {
  return Math.floor((NODE_SIZE - HDR) / (8 + (leaf ? vsize : CHILD)))
}

function putU64(b: Buffer, o: number, v: number) {
  b.writeUInt32LE(Math.floor(v / 2 ** 32), o)
  b.writeUInt32LE(v >>> 0, o + 4)
}

function getU64(b: Buffer, o: number): number {
  return b.readUInt32LE(o) * 2 ** 32 + b.readUInt32LE(o + 4)
}

export function encode(n: Node): Buffer {
  const b = Buffer.alloc(NODE_SIZE)
  const cap = capacity(n.leaf, n.vsize)
  if (n.keys.length > cap) throw new VsmError('EIO', `btree node ${n.block} holds ${n.keys.length} > ${cap} entries`)
  b.writeUInt32LE(MAGIC, 0)
  putU64(b, 8, n.block)
  b.writeUInt8(n.leaf ? 1 : 0, 16)
  b.writeUInt16LE(n.vsize, 18)
  b.writeUInt16LE(n.keys.length, 20)
  const vo = HDR + 8 * cap
  const vs = n.leaf ? n.vsize : CHILD
  n.keys.forEach((k, i) => {
    putU64(b, HDR + 8 * i, k)
    if (n.leaf) n.vals[i].copy(b, vo + vs * i, 0, vs)
    else putU64(b, vo + vs * i, n.kids[i])
  })
  b.writeUInt32LE(crc32(b.subarray(8)), 4)
  return b
}

/** Where node buffer b keeps its entries, its header checked (magic, crc, block, count). */
function layout(b: Buffer, block: number): { leaf: boolean; vsize: number; count: number; vo: number; vs: number } {
  const bad = (why: string) => new VsmError('EIO', `btree node at block ${block}: ${why}`)
  if (b.readUInt32LE(0) !== MAGIC) throw bad('no node magic')
  if (b.readUInt32LE(4) !== crc32(b.subarray(8, NODE_SIZE))) throw bad('checksum mismatch')
  if (getU64(b, 8) !== block) throw bad(`written as block ${getU64(b, 8)}`)
  const leaf = b.readUInt8(16) === 1
  const vsize = b.readUInt16LE(18)
  const count = b.readUInt16LE(20)
  const cap = capacity(leaf, vsize)
  if (count > cap) throw bad(`${count} entries > capacity ${cap}`)
  return { leaf, vsize, count, vo: HDR + 8 * cap, vs: leaf ? vsize : CHILD }
}

export function decode(b: Buffer, block: number): Node {
  const { leaf, vsize, count, vo, vs } = layout(b, block)
  const n: Node = { block, leaf, vsize, keys: [], vals: [], kids: [] }
  for (let i = 0; i < count; i++) {
    n.keys.push(getU64(b, HDR + 8 * i))
    // views of b, not copies: b is this node's own buffer and nothing writes a value in
    // place (a changed value is a new buffer)
    if (leaf) n.vals.push(b.subarray(vo + vs * i, vo + vs * (i + 1)))
    else n.kids.push(getU64(b, vo + vs * i))
  }
  return n
}

/**
 * A leaf's entries handed to `value` as (key, b, offset of the value in b) without
 * building a Node (a walk reading every leaf once makes no view per value); an internal
 * node's children returned, null for a leaf.
 */
export function scan(b: Buffer, block: number, value: (key: number, b: Buffer, at: number) => void): number[] | null {
  const { leaf, count, vo, vs } = layout(b, block)
  if (!leaf) return Array.from({ length: count }, (_, i) => getU64(b, vo + vs * i))
  for (let i = 0; i < count; i++) value(getU64(b, HDR + 8 * i), b, vo + vs * i)
  return null
}
