// The pool configuration: the one document that describes devices, their extent
// allocations and the volumes built on them. It is versioned by seq (incremented on
// every change) and a full copy lives in every device label and in <home>/pool.json.
// Pure data and pure functions here (validation, allocation); I/O lives in pool.ts.
import { VsmError } from '../block/blockdev'
import { MiB } from './label'

export type LayoutKind = 'concat' | 'stripe' | 'mirror' | 'raid10' | 'raid5'
export const BUILT_LAYOUTS: readonly LayoutKind[] = ['concat', 'stripe', 'mirror']

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
  /** 'failed' after an I/O error took a member on it out; 'spare' reserved for hot spares. */
  state: 'online' | 'failed' | 'spare'
  extents: ExtentConfig[]
}

export interface MemberConfig {
  /** Device id (stable across renames of the device). */
  device: string
  offset: number
  length: number
  /** 'failed': out of service; 'stale': present but needs rebuild (rebuild: later). */
  state: 'ok' | 'failed' | 'stale'
  reason?: string
  /** Reserved for raid10 (mirror group of this member). */
  group?: number
}

export interface VolumeConfig {
  id: string
  name: string
  layout: LayoutKind
  size: number
  stripeUnit?: number
  copies?: number
  /** concat: in address order; stripe: column order; mirror: copy order. */
  members: MemberConfig[]
  created: string
}

export interface PoolConfig {
  format: 'vsm-pool'
  version: 1
  poolId: string
  seq: number
  extentSize: number
  created: string
  updated: string
  devices: DeviceConfig[]
  volumes: VolumeConfig[]
  /** Reserved for hot-spare device ids. */
  spares: string[]
}

export interface VolumeSpec {
  layout: 'concat' | 'stripe' | 'mirror'
  devices: string[]
  size: number
  stripeUnit?: number
  copies?: number
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

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
  return { format: 'vsm-pool', version: 1, poolId, seq: 1, extentSize: MiB, created: now, updated: now, devices: [], volumes: [], spares: [] }
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
function fitOne(d: DeviceConfig, length: number): number | null {
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
  if (layout === 'raid10' || layout === 'raid5') throw new VsmError('EINVAL', `layout ${layout} is not supported yet`)
  if (!BUILT_LAYOUTS.includes(layout)) throw new VsmError('EINVAL', `unknown layout ${JSON.stringify(spec.layout)}: use concat, stripe or mirror`)
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

  if (layout === 'concat') {
    if (spec.stripeUnit !== undefined) throw new VsmError('EINVAL', '--stripe-unit applies to stripe volumes only')
    if (spec.copies !== undefined) throw new VsmError('EINVAL', '--copies applies to mirror volumes only')
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
    // members of one device must be in address order within the volume as allocated; already are
  } else if (layout === 'stripe') {
    if (spec.copies !== undefined) throw new VsmError('EINVAL', '--copies applies to mirror volumes only')
    stripeUnit = spec.stripeUnit ?? 64 * 1024
    if (!Number.isSafeInteger(stripeUnit) || stripeUnit < 512 || stripeUnit > 64 * MiB || (stripeUnit & (stripeUnit - 1)) !== 0) {
      throw new VsmError('EINVAL', `invalid stripe unit ${JSON.stringify(spec.stripeUnit)}: a power of two from 512 bytes to 64 MiB`)
    }
    if (n < 2) throw new VsmError('EINVAL', 'a stripe needs at least two devices')
    const per = roundUp(Math.ceil(spec.size / n), Math.max(MiB, stripeUnit))
    for (const d of devs) {
      const off = fitOne(d, per)
      if (off === null) throw new VsmError('ENOSPC', `device ${d.name} has no free extent of ${fmt(per)} for a ${n}-way stripe`)
      take(d, off, per)
    }
    size = per * n
  } else {
    if (spec.stripeUnit !== undefined) throw new VsmError('EINVAL', '--stripe-unit applies to stripe volumes only')
    copies = spec.copies ?? n
    if (!Number.isSafeInteger(copies) || copies < 2 || copies > 8) throw new VsmError('EINVAL', `invalid copies ${JSON.stringify(spec.copies)}: 2 to 8`)
    if (copies !== n) throw new VsmError('EINVAL', `a ${copies}-copy mirror needs exactly ${copies} devices, got ${n}`)
    size = roundUp(spec.size, MiB)
    for (const d of devs) {
      const off = fitOne(d, size)
      if (off === null) throw new VsmError('ENOSPC', `device ${d.name} has no free extent of ${fmt(size)} for a mirror copy`)
      take(d, off, size)
    }
  }
  if (!Number.isSafeInteger(size)) throw new VsmError('EINVAL', `volume size ${spec.size} too large`)
  const volume: VolumeConfig = { id, name, layout, size, members, created: now }
  if (stripeUnit !== undefined) volume.stripeUnit = stripeUnit
  if (copies !== undefined) volume.copies = copies
  return { volume, extents: ext }
}
