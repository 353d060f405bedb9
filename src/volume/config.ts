// The pool configuration: the one document that describes devices, their extent
// allocations and the volumes built on them. It is versioned by seq (incremented on
// every change) and a full copy lives in every device label and in <home>/pool.json.
// Pure data and pure functions here (validation, allocation); changes are committed
// by store.ts.
import { randomBytes } from 'crypto'
import { VsmError } from '../block/blockdev'
import { MiB } from './label'
import { SUM_BLOCK, tableBytes } from './checksum'

export type LayoutKind = 'concat' | 'stripe' | 'mirror' | 'raid10' | 'raid5'
export const BUILT_LAYOUTS: readonly LayoutKind[] = ['concat', 'stripe', 'mirror', 'raid10', 'raid5']
/** Layouts that survive the loss of a member (they get a dirty-region log or a stripe journal). */
export const REDUNDANT: readonly LayoutKind[] = ['mirror', 'raid10', 'raid5']

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

function fmt(n: number): string {
  return n % MiB === 0 ? `${n / MiB} MiB` : `${n} bytes`
}

/**
 * Validate a volume spec and plan its members. Pure: returns the new volume and the
 * extents to add to each device, or throws without touching the config.
 */
export function planVolume(cfg: PoolConfig, name: string, spec: VolumeSpec, id: string):
    { volume: VolumeConfig; extents: Map<string, ExtentConfig[]> } {
  checkName('volume', name)
  if (cfg.volumes.some((v) => v.name === name)) throw new VsmError('EEXIST', `volume ${name} already exists`)
  if (!spec || typeof spec !== 'object') throw new VsmError('EINVAL', 'missing volume spec')
  const layout = spec.layout as LayoutKind
  if (!BUILT_LAYOUTS.includes(layout)) throw new VsmError('EINVAL', `unknown layout ${JSON.stringify(spec.layout)}: use ${BUILT_LAYOUTS.join(', ')}`)
  checkSize('volume size', spec.size)
  if (!Array.isArray(spec.devices) || spec.devices.length === 0) throw new VsmError('EINVAL', 'a volume needs at least one device')
  const seen = new Set<string>()
  const devs: DeviceConfig[] = []
  for (const dn of spec.devices) {
    if (typeof dn !== 'string') throw new VsmError('EINVAL', `invalid device name ${JSON.stringify(dn)}`)
    if (seen.has(dn)) throw new VsmError('EINVAL', `device ${dn} listed twice`)
    seen.add(dn)
    const d = cfg.devices.find((x) => x.name === dn)
    if (!d) throw new VsmError('ENOENT', `no device named ${dn}`)
    if (d.state !== 'online') throw new VsmError('EINVAL', `device ${dn} is ${d.state}`)
    devs.push(d)
  }
  const n = devs.length
  const ext = new Map<string, ExtentConfig[]>()
  const members: MemberConfig[] = []
  const take = (d: DeviceConfig, offset: number, length: number) => {
    if (!ext.has(d.id)) ext.set(d.id, [])
    ext.get(d.id)!.push({ volume: name, offset, length })
    members.push({ device: d.id, offset, length, state: 'ok' })
  }
  const now = new Date().toISOString()
  let size: number
  let stripeUnit: number | undefined
  let copies: number | undefined
  let journal: number | undefined
  let checksums: number | undefined

  const striped = layout === 'stripe' || layout === 'raid10' || layout === 'raid5'
  if (spec.stripeUnit !== undefined && !striped) throw new VsmError('EINVAL', '--stripe-unit applies to stripe, raid10 and raid5 volumes only')
  if (spec.copies !== undefined && layout !== 'mirror' && layout !== 'raid10') throw new VsmError('EINVAL', '--copies applies to mirror and raid10 volumes only')
  if (striped) {
    stripeUnit = spec.stripeUnit ?? 64 * 1024
    if (!Number.isSafeInteger(stripeUnit) || stripeUnit < 512 || stripeUnit > 64 * MiB || (stripeUnit & (stripeUnit - 1)) !== 0) {
      throw new VsmError('EINVAL', `invalid stripe unit ${JSON.stringify(spec.stripeUnit)}: a power of two from 512 bytes to 64 MiB`)
    }
  }
  if (layout === 'mirror' || layout === 'raid10') {
    copies = spec.copies ?? (layout === 'mirror' ? n : 2)
    if (!Number.isSafeInteger(copies) || copies < 2 || copies > 8) throw new VsmError('EINVAL', `invalid copies ${JSON.stringify(spec.copies)}: 2 to 8`)
  }
  /** One equal extent per device (each with `extra` reserved bytes in front). */
  const equal = (per: number, what: string, extra = 0) => {
    for (const d of devs) {
      const off = fitOne(d, per + extra)
      if (off === null) throw new VsmError('ENOSPC', `device ${d.name} has no free extent of ${fmt(per + extra)} for ${what}`)
      take(d, off, per + extra)
    }
  }

  if (layout === 'concat') {
    size = roundUp(spec.size, MiB)
    const total = devs.reduce((s, d) => s + freeBytes(d), 0)
    if (total < size) throw new VsmError('ENOSPC', `not enough free space for ${fmt(size)}: devices ${spec.devices.join(',')} have ${fmt(total)} free`)
    let left = size
    for (const d of devs) {
      // largest holes first: fewest members for a fragmented device
      const holes = freeExtents(d).sort((a, b) => b[1] - a[1])
      for (const [off, len] of holes) {
        if (left === 0) break
        const l = Math.min(len, left)
        take(d, off, l)
        left -= l
      }
      if (left === 0) break
    }
  } else if (layout === 'stripe') {
    if (n < 2) throw new VsmError('EINVAL', 'a stripe needs at least two devices')
    const per = roundUp(Math.ceil(spec.size / n), Math.max(MiB, stripeUnit!))
    equal(per, `a ${n}-way stripe`)
    size = per * n
  } else if (layout === 'mirror') {
    if (copies !== n) throw new VsmError('EINVAL', `a ${copies}-copy mirror needs exactly ${copies} devices, got ${n}`)
    // the checksum table is carved from the extent, as a file system's metadata is from its disk
    const per = roundUp(spec.size, MiB)
    checksums = tableBytes(per, true)
    equal(per, 'a mirror copy')
    size = per - checksums
  } else if (layout === 'raid10') {
    if (n < 2 * copies! || n % copies! !== 0) throw new VsmError('EINVAL', `raid10 with ${copies} copies needs a multiple of ${copies} devices, at least ${2 * copies!}; got ${n}`)
    const groups = n / copies!
    const per = roundUp(Math.ceil(spec.size / groups), Math.max(MiB, stripeUnit!))
    checksums = tableBytes(per, true)
    equal(per, `a raid10 copy`)
    members.forEach((m, i) => { m.group = Math.floor(i / copies!) })
    size = Math.floor((per - checksums) / stripeUnit!) * stripeUnit! * groups
  } else {
    if (n < 3) throw new VsmError('EINVAL', 'raid5 needs at least three devices')
    const per = roundUp(Math.ceil(spec.size / (n - 1)), Math.max(MiB, stripeUnit!))
    journal = journalBytes(n, stripeUnit!)
    // sums cover the member in member coordinates (journal included, never verified there);
    // below one checksum block per unit there are none
    if (stripeUnit! >= SUM_BLOCK) checksums = tableBytes(journal + per, true)
    equal(per, 'a raid5 column', journal + (checksums ?? 0))
    size = per * (n - 1)
  }
  if (!Number.isSafeInteger(size)) throw new VsmError('EINVAL', `volume size ${spec.size} too large`)
  const volume: VolumeConfig = { id, name, layout, size, members, created: now }
  if (stripeUnit !== undefined) volume.stripeUnit = stripeUnit
  if (copies !== undefined) volume.copies = copies
  if (journal !== undefined) volume.journal = journal
  if (checksums !== undefined) {
    volume.checksums = checksums
    volume.checksumSalt = randomBytes(8).toString('hex')
  }
  return { volume, extents: ext }
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

/**
 * Plan a volume of exactly spec.size bytes, as a grow, move or relayout does (a volume
 * keeps its size, so it fits back where it came from): the smallest allocation whose
 * layout holds that much. What rounding leaves over in the extents is not addressed.
 */
export function planExactly(cfg: PoolConfig, name: string, spec: VolumeSpec, id: string):
    { volume: VolumeConfig; extents: Map<string, ExtentConfig[]> } {
  for (let ask = spec.size; ;) {
    const plan = planVolume(cfg, name, { ...spec, size: ask }, id)
    if (plan.volume.size >= spec.size) {
      plan.volume.size = spec.size
      return plan
    }
    // metadata carved from the extents (checksums) or whole stripe rows left it short: ask for more
    ask += Math.max(spec.size - plan.volume.size, MiB)
  }
}

/** raid5 journal: room for enough whole-row records that a burst of writes rarely waits for a checkpoint. */
export function journalBytes(members: number, stripeUnit: number): number {
  const slot = 4096 + members * stripeUnit
  return roundUp(Math.max(16, Math.ceil(8 * MiB / slot)) * slot, MiB)
}

/** Can a volume serve I/O with only the members marked true in ok? */
export function canRun(v: VolumeConfig, ok: boolean[]): boolean {
  const bad = ok.filter((x) => !x).length
  switch (v.layout) {
    case 'concat': case 'stripe': return bad === 0
    case 'mirror': return bad < ok.length
    case 'raid5': return bad <= 1
    case 'raid10': return v.members.every((m) => v.members.some((o, j) => o.group === m.group && ok[j]))
  }
}

export function volumeState(v: VolumeConfig, ok: boolean[]): 'healthy' | 'degraded' | 'failed' {
  if (ok.every((x) => x)) return 'healthy'
  return canRun(v, ok) ? 'degraded' : 'failed'
}

/** Policy: the hot spare that takes over a failed member of `length` bytes (null if none fits). */
export function pickSpare(cfg: PoolConfig, length: number): DeviceConfig | null {
  for (const id of cfg.spares) {
    const d = cfg.devices.find((x) => x.id === id)
    if (d && d.state === 'spare' && fitOne(d, length) !== null) return d
  }
  return null
}
