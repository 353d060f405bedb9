// The layout driver table: per layout, how a volume is planned onto devices (member
// extents and size), whether it can run with the members it has, and how its layout
// objects are opened over the members' windows (with the Redundancy the pool drives a
// redundant one through, redundancy.ts). The pool asks the table; it has no
// per-layout branches of its own.
import { randomBytes } from 'crypto'
import { BlockDev, VsmError } from '../block/blockdev'
import { MiB } from './label'
import { SUM_BLOCK, tableBytes } from './checksum'
import {
  DeviceConfig, ExtentConfig, LayoutKind, MemberConfig, PoolConfig, VolumeConfig, VolumeSpec, BUILT_LAYOUTS,
  checkName, checkSize, fitOne, freeBytes, freeExtents, journalBytes, roundUp,
} from './config'
import type { LogMember } from './drl'
import { ConcatDev } from './concat'
import { StripeDev } from './stripe'
import { MirrorDev } from './mirror'
import { Raid5Dev } from './raid5'
import type { SliceDev } from './slice'
import { MemberIo, MirrorGroups, Raid5Members, Redundancy } from './redundancy'

/** What a layout's plan gets: the devices (in spec order) and the common allocators. */
export interface PlanInput {
  spec: VolumeSpec
  devs: DeviceConfig[]
  stripeUnit?: number
  copies?: number
  /** One equal extent of per + extra bytes on every device. */
  equal(per: number, what: string, extra?: number): void
  /** An extent of length at offset on d as the next member. */
  take(d: DeviceConfig, offset: number, length: number): void
  members: MemberConfig[]
}

export interface Planned { size: number; journal?: number; checksums?: number }

/** What opening a volume's layout needs from the pool. */
export interface OpenInput {
  /** Members in service (null: failed, stale or missing). */
  ios: (MemberIo | null)[]
  /** Member i's write-intent bits (null: none). */
  log(i: number): LogMember | null
  /** A stale member whose device is here, to be put back before any write (raid5). */
  rebuildable(i: number): boolean
  memberIo(i: number): Promise<MemberIo>
  onMemberFailed(i: number, err: unknown): Promise<void>
  deviceName(i: number): string
}

export interface Opened {
  dev: BlockDev
  /** Redundant layouts: what the pool drives failures, rebuilds and scrubs through. */
  redundancy: Redundancy | null
  /** Mirror/raid10: bytes resynced from dirty regions. */
  resynced?: number
  /** raid5: stripe journal records replayed. */
  replayed?: number
}

export interface LayoutDriver {
  /** Takes a stripe unit. */
  striped: boolean
  /** Takes --copies: its default for n devices. */
  copies?: (n: number) => number
  /** Survives the loss of a member (open gives a Redundancy). */
  redundant: boolean
  plan(p: PlanInput): Planned
  /** Can it serve I/O with only the members marked true in ok? */
  canRun(v: VolumeConfig, ok: boolean[]): boolean
  open(v: VolumeConfig, input: OpenInput): Promise<Opened>
  /**
   * How a member that was away catches up: by the regions it missed, or whole (raid5
   * volumes made before raid5 kept write-intent bits, which have no checksums either,
   * cannot tell what it missed).
   */
  catchUp?(v: VolumeConfig): 'delta' | 'full'
}

function fmt(n: number): string {
  return n % MiB === 0 ? `${n / MiB} MiB` : `${n} bytes`
}

/** groups: member indexes of each mirror group, in stripe column order (mirror: one group of all). */
async function openMirrors(v: VolumeConfig, input: OpenInput, groups: number[][]): Promise<{ mirrors: MirrorDev[]; redundancy: MirrorGroups; resynced: number }> {
  const mirrors: MirrorDev[] = []
  let resynced = 0
  for (const idx of groups) {
    const mirror = new MirrorDev(idx.map((i) => input.ios[i]?.data ?? null), {
      size: v.layout === 'mirror' ? v.size : undefined,
      log: idx.map((i) => (input.ios[i] ? input.log(i) : null)),
      onMemberFailed: (k, err) => input.onMemberFailed(idx[k], err),
      sums: v.checksums ? idx.map((i) => input.ios[i]?.sums ?? null) : undefined,
    })
    resynced += await mirror.resync()
    mirrors.push(mirror)
  }
  return { mirrors, redundancy: new MirrorGroups(mirrors.map((mirror, g) => ({ mirror, idx: groups[g] })), v.stripeUnit), resynced }
}

/** concat and stripe: every member must be there. */
function present(v: VolumeConfig, input: OpenInput): SliceDev[] {
  const missing = input.ios.findIndex((io) => !io)
  if (missing >= 0) throw new VsmError('ENODEV', `volume ${v.name} (${v.layout}) cannot run without device ${input.deviceName(missing)}`)
  return input.ios.map((io) => io!.data)
}

const allOk = (_v: VolumeConfig, ok: boolean[]) => ok.every((x) => x)

export const LAYOUTS: Record<LayoutKind, LayoutDriver> = {
  concat: {
    striped: false, redundant: false, canRun: allOk,
    plan({ spec, devs, take }) {
      const size = roundUp(spec.size, MiB)
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
      return { size }
    },
    async open(v, input) {
      return { dev: new ConcatDev(present(v, input), { size: v.size }), redundancy: null }
    },
  },
  stripe: {
    striped: true, redundant: false, canRun: allOk,
    plan({ spec, devs, stripeUnit, equal }) {
      const n = devs.length
      if (n < 2) throw new VsmError('EINVAL', 'a stripe needs at least two devices')
      const per = roundUp(Math.ceil(spec.size / n), Math.max(MiB, stripeUnit!))
      equal(per, `a ${n}-way stripe`)
      return { size: per * n }
    },
    async open(v, input) {
      return { dev: new StripeDev(present(v, input), v.stripeUnit, { size: v.size }), redundancy: null }
    },
  },
  mirror: {
    striped: false, redundant: true, copies: (n) => n,
    canRun: (_v, ok) => ok.some((x) => x),
    plan({ spec, devs, copies, equal }) {
      if (copies !== devs.length) throw new VsmError('EINVAL', `a ${copies}-copy mirror needs exactly ${copies} devices, got ${devs.length}`)
      // the checksum table is carved from the extent, as a file system's metadata is from its disk
      const per = roundUp(spec.size, MiB)
      const checksums = tableBytes(per, true)
      equal(per, 'a mirror copy')
      return { size: per - checksums, checksums }
    },
    async open(v, input) {
      const { mirrors, redundancy, resynced } = await openMirrors(v, input, [v.members.map((_, i) => i)])
      return { dev: mirrors[0], redundancy, resynced }
    },
  },
  raid10: {
    striped: true, redundant: true, copies: () => 2,
    canRun: (v, ok) => v.members.every((m) => v.members.some((o, j) => o.group === m.group && ok[j])),
    plan({ spec, devs, stripeUnit, copies, equal, members }) {
      const n = devs.length
      if (n < 2 * copies! || n % copies! !== 0) throw new VsmError('EINVAL', `raid10 with ${copies} copies needs a multiple of ${copies} devices, at least ${2 * copies!}; got ${n}`)
      const groups = n / copies!
      const per = roundUp(Math.ceil(spec.size / groups), Math.max(MiB, stripeUnit!))
      const checksums = tableBytes(per, true)
      equal(per, `a raid10 copy`)
      members.forEach((m, i) => { m.group = Math.floor(i / copies!) })
      return { size: Math.floor((per - checksums) / stripeUnit!) * stripeUnit! * groups, checksums }
    },
    async open(v, input) {
      const groups: number[][] = []
      v.members.forEach((m, i) => { (groups[m.group ?? 0] ??= []).push(i) })
      const { mirrors, redundancy, resynced } = await openMirrors(v, input, groups)
      return { dev: new StripeDev(mirrors, v.stripeUnit, { size: v.size }), redundancy, resynced }
    },
  },
  raid5: {
    striped: true, redundant: true,
    canRun: (_v, ok) => ok.filter((x) => !x).length <= 1,
    plan({ spec, devs, stripeUnit, equal }) {
      const n = devs.length
      if (n < 3) throw new VsmError('EINVAL', 'raid5 needs at least three devices')
      const per = roundUp(Math.ceil(spec.size / (n - 1)), Math.max(MiB, stripeUnit!))
      const journal = journalBytes(n, stripeUnit!)
      // sums cover the member in member coordinates (journal included, never verified there);
      // below one checksum block per unit there are none
      const checksums = stripeUnit! >= SUM_BLOCK ? tableBytes(journal + per, true) : undefined
      equal(per, 'a raid5 column', journal + (checksums ?? 0))
      return { size: per * (n - 1), journal, checksums }
    },
    async open(v, input) {
      const r5 = new Raid5Dev(input.ios.map((io) => io?.data ?? null), {
        stripeUnit: v.stripeUnit!, journal: v.journal!, tag: v.id, size: v.size, onMemberFailed: input.onMemberFailed,
        sums: v.checksums ? input.ios.map((io) => io?.sums ?? null) : undefined,
        log: v.members.map((_, i) => (input.ios[i] ? input.log(i) : null)),
      })
      const replayed = await r5.replay()
      const redundancy = new Raid5Members(r5, v.stripeUnit!)
      // a stale member (a crash mid-rebuild) goes back in before any write can miss it
      for (const [i, m] of v.members.entries()) {
        if (input.rebuildable(i)) redundancy.attach(i, m, await input.memberIo(i), input.log(i))
      }
      return { dev: r5, redundancy, replayed }
    },
    catchUp: (v) => (v.checksums ? 'delta' : 'full'),
  },
}

export function volumeState(v: VolumeConfig, ok: boolean[]): 'healthy' | 'degraded' | 'failed' {
  if (ok.every((x) => x)) return 'healthy'
  return LAYOUTS[v.layout].canRun(v, ok) ? 'degraded' : 'failed'
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
  const driver = LAYOUTS[layout]
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
  const ext = new Map<string, ExtentConfig[]>()
  const members: MemberConfig[] = []
  const take = (d: DeviceConfig, offset: number, length: number) => {
    if (!ext.has(d.id)) ext.set(d.id, [])
    ext.get(d.id)!.push({ volume: name, offset, length })
    members.push({ device: d.id, offset, length, state: 'ok' })
  }
  const equal = (per: number, what: string, extra = 0) => {
    for (const d of devs) {
      const off = fitOne(d, per + extra)
      if (off === null) throw new VsmError('ENOSPC', `device ${d.name} has no free extent of ${fmt(per + extra)} for ${what}`)
      take(d, off, per + extra)
    }
  }
  let stripeUnit: number | undefined
  let copies: number | undefined
  if (spec.stripeUnit !== undefined && !driver.striped) throw new VsmError('EINVAL', '--stripe-unit applies to stripe, raid10 and raid5 volumes only')
  if (spec.copies !== undefined && !driver.copies) throw new VsmError('EINVAL', '--copies applies to mirror and raid10 volumes only')
  if (driver.striped) {
    stripeUnit = spec.stripeUnit ?? 64 * 1024
    if (!Number.isSafeInteger(stripeUnit) || stripeUnit < 512 || stripeUnit > 64 * MiB || (stripeUnit & (stripeUnit - 1)) !== 0) {
      throw new VsmError('EINVAL', `invalid stripe unit ${JSON.stringify(spec.stripeUnit)}: a power of two from 512 bytes to 64 MiB`)
    }
  }
  if (driver.copies) {
    copies = spec.copies ?? driver.copies(devs.length)
    if (!Number.isSafeInteger(copies) || copies < 2 || copies > 8) throw new VsmError('EINVAL', `invalid copies ${JSON.stringify(spec.copies)}: 2 to 8`)
  }
  const { size, journal, checksums } = driver.plan({ spec, devs, stripeUnit, copies, equal, take, members })
  if (!Number.isSafeInteger(size)) throw new VsmError('EINVAL', `volume size ${spec.size} too large`)
  const volume: VolumeConfig = { id, name, layout, size, members, created: new Date().toISOString() }
  if (stripeUnit !== undefined) volume.stripeUnit = stripeUnit
  if (copies !== undefined) volume.copies = copies
  if (journal !== undefined) volume.journal = journal
  if (checksums !== undefined) {
    volume.checksums = checksums
    volume.checksumSalt = randomBytes(8).toString('hex')
  }
  return { volume, extents: ext }
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
