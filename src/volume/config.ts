// The pool configuration: the one document that describes devices, their extent
// allocations and the volumes built on them. It is versioned by seq (incremented on
// every change) and a full copy lives in every device label and in <home>/pool.json.
// Pure data and pure functions here (validation, allocation); how each layout is
// planned is layouts.ts, and changes are committed by store.ts.
import { VsmError } from '../block/blockdev'
import { MiB } from './label'

export type LayoutKind = 'concat' | 'stripe' | 'mirror' | 'raid10' | 'raid5'
export const BUILT_LAYOUTS: readonly LayoutKind[] = ['concat', 'stripe', 'mirror', 'raid10', 'raid5']

export interface ExtentConfig {
  volume: string
  /** Offset within the device's data area. */
  offset: number
  length: number
}

export interface DeviceConfig {
  id: string
  name: string
  path: string
  /** Whole device, bytes. */
  size: number
  /** Where the data area starts (after the reserved label/bitmap area). */
  dataOffset: number
  /** Allocatable bytes in the data area (whole extents). */
  dataSize: number
  blockDevice: boolean
  /** 'failed' after an I/O error took a member on it out, 'offline' by the operator; 'spare' waits for a failure. */
  state: 'online' | 'failed' | 'offline' | 'spare'
  extents: ExtentConfig[]
}

export interface MemberConfig {
  /** Device id (stable across renames of the device). */
  device: string
  offset: number
  length: number
  /** 'failed': out of service; 'stale': in place but being brought up to date. */
  state: 'ok' | 'failed' | 'stale'
  reason?: string
  /** stale: 'delta' copies only what the copy missed (its bits on the others), 'full' everything. */
  resync?: 'delta' | 'full'
  /** Resume point after a crash. stale, full mirror copy: volume bytes already copied; stale raid5 member (delta or full): its rows below this many bytes past the journal are done. */
  rebuilt?: number
  /** raid10: the mirror group (stripe column) this copy belongs to. */
  group?: number
}

export interface VolumeConfig {
  id: string
  name: string
  layout: LayoutKind
  size: number
  stripeUnit?: number
  copies?: number
  /** raid5: bytes at the start of every member holding the stripe journal. */
  journal?: number
  /** Bytes at the end of every member holding its block checksums (checksum.ts); raid5 volumes made before had none. */
  checksums?: number
  /**
   * Tagged checksum tables (checksum.ts): each member's pages carry a generation from
   * this salt and the member's place, so a new table is made by writing nothing. Absent:
   * dense tables, zeroed when the volume was made.
   */
  checksumSalt?: string
  /** Grow, move or relayout in progress: the volume being built (its extents are already allocated). */
  reshape?: ReshapeConfig
  /** concat: in address order; stripe/raid5: column order; mirror: copy order; raid10: group by group. */
  members: MemberConfig[]
  created: string
}

export interface ReshapeConfig {
  target: VolumeConfig
  kind: 'grow' | 'move' | 'relayout'
  /** Extent (RESHAPE_LOG_BYTES, owned by the volume) holding the copy's write-intent bitmap; absent if no device had room. */
  log?: { device: string; offset: number }
  /** Volume bytes [0, copied) are on the target but for the regions the log marks (resume point after a crash). */
  copied?: number
  /** Bytes per second the copy is held to (absent: unlimited). */
  rate?: number
}

export interface PoolConfig {
  format: 'vsm-pool'
  version: 1
  poolId: string
  seq: number
  extentSize: number
  created: string
  /** When this version was committed. */
  updated: string
  /** What this version changed, one line (absent in configs from before it was kept). */
  change?: string
  devices: DeviceConfig[]
  volumes: VolumeConfig[]
  /** Hot-spare device ids, in the order they are used. */
  spares: string[]
}

export interface VolumeSpec {
  layout: LayoutKind
  devices: string[]
  size: number
  stripeUnit?: number
  copies?: number
}

export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

export function checkName(kind: string, name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new VsmError('EINVAL', `invalid ${kind} name ${JSON.stringify(name)}: use 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit`)
  }
}

export function checkSize(what: string, n: unknown): asserts n is number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0) {
    throw new VsmError('EINVAL', `invalid ${what} ${JSON.stringify(n)}: must be a positive whole number of bytes`)
  }
}

export const roundUp = (n: number, unit: number) => Math.ceil(n / unit) * unit

export function emptyConfig(poolId: string): PoolConfig {
  const now = new Date().toISOString()
  return { format: 'vsm-pool', version: 1, poolId, seq: 1, extentSize: MiB, created: now, updated: now, change: 'pool created', devices: [], volumes: [], spares: [] }
}

export function freeExtents(d: DeviceConfig): [number, number][] {
  const used = [...d.extents].sort((a, b) => a.offset - b.offset)
  const out: [number, number][] = []
  let pos = 0
  for (const e of used) {
    if (e.offset > pos) out.push([pos, e.offset - pos])
    pos = Math.max(pos, e.offset + e.length)
  }
  if (d.dataSize > pos) out.push([pos, d.dataSize - pos])
  return out
}

export const usedBytes = (d: DeviceConfig) => d.extents.reduce((s, e) => s + e.length, 0)
export const freeBytes = (d: DeviceConfig) => d.dataSize - usedBytes(d)

/** First fit of one contiguous extent; null if none is large enough. */
export function fitOne(d: DeviceConfig, length: number): number | null {
  for (const [off, len] of freeExtents(d)) if (len >= length) return off
  return null
}

export const RESHAPE_LOG_BYTES = MiB

/**
 * Policy: where a reshape's write-intent log goes. On a device of the new layout if one
 * has room (a failure there stops the reshape anyway), else on any device in service;
 * null when none has room (the copy then starts over after a crash).
 */
export function placeReshapeLog(cfg: PoolConfig, target: VolumeConfig): { device: string; offset: number } | null {
  const ids = target.members.map((m) => m.device)
  const order = [...cfg.devices.filter((d) => ids.includes(d.id)), ...cfg.devices.filter((d) => !ids.includes(d.id) && d.state === 'online')]
  for (const d of order) {
    const offset = fitOne(d, RESHAPE_LOG_BYTES)
    if (offset !== null) return { device: d.id, offset }
  }
  return null
}

/** raid5 journal: room for enough whole-row records that a burst of writes rarely waits for a checkpoint. */
export function journalBytes(members: number, stripeUnit: number): number {
  const slot = 4096 + members * stripeUnit
  return roundUp(Math.max(16, Math.ceil(8 * MiB / slot)) * slot, MiB)
}

/** Policy: the hot spare that takes over a failed member of `length` bytes (null if none fits). */
export function pickSpare(cfg: PoolConfig, length: number): DeviceConfig | null {
  for (const id of cfg.spares) {
    const d = cfg.devices.find((x) => x.id === id)
    if (d && d.state === 'spare' && fitOne(d, length) !== null) return d
  }
  return null
}
