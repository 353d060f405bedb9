// HSM policy: which files (or, under --regions, which regions of them) a policy run
// migrates or brings back. A pure function of the files' facts (size, last access, pin,
// the policy they inherit, where their bytes live, region heat) and the clock, kept apart from the mechanism that moves extents (src/hsm/hsm.ts, fs relocate)
// so it can be tested with a table of cases.
import { VsmError } from '../block/blockdev'

/**
 * coldAfterMs: migrate files not accessed for this long. highPct/lowPct (both or
 * neither): when a volume holding the files' bytes is fuller than high, migrate the
 * coldest of them, however recently used, until it would be at low. premigrate: a cold
 * file is only copied to the tier (an archive) and keeps its pool blocks until a
 * watermark needs the space; then they are released without copying. regionBytes: heat
 * is judged per region of this size (a multiple of REGION_UNIT): cold regions of a file
 * go to the tier and hot ones come back, however hot or cold the file is as a whole.
 * snapshotsFirst: the blocks only the file's snapshots hold (not the file: cold by
 * construction) go to the tier at every run, before anything else and whatever the heat.
 */
export interface Policy { coldAfterMs: number; minSize: number; tier: string; highPct?: number; lowPct?: number; premigrate?: true; regionBytes?: number; snapshotsFirst?: true }
/** The grain of region heat: 1 MiB, fs move's step. */
export const REGION_UNIT = 1 << 20
/** A region of a file: blocks [b0, b1), its last access (ms), its allocated bytes on the policy's tier and elsewhere. */
export interface RegionFacts { b0: number; b1: number; lastAccess: number; onTier: number; elsewhere: number }
/** `volume`: the fs location of the tier's bytes: a volume name, or archive:NAME for an archive tier. */
export interface Tier { name: string; volume: string }
/** A pool volume's capacity and use, in bytes. */
export interface VolumeUse { name: string; size: number; used: number }

export interface FileFacts {
  path: string
  size: number
  /** Newest of atime (kept lazily by the fs, relatime) and mtime, epoch ms. */
  lastAccess: number
  pinned: boolean
  /** A migration or recall of it is under way or recorded as unfinished. */
  moving: boolean
  /** The nearest policy: the file's own, else its nearest directory's; null when none. */
  policy: Policy | null
  /** Allocated bytes per volume (its extent map). */
  bytesOn: Record<string, number>
  /** A copy on its policy's tier that still matches the file (premigrated). */
  premigrated?: boolean
  /** Under a --regions policy: its regions holding data. */
  regions?: RegionFacts[]
  /** Under a --snapshots-first policy: bytes its snapshots hold that the file does not, off the policy's tier. */
  snapshotOnly?: number
}

/**
 * reason: 'cold' (not accessed for cold-after), 'watermark' (its volume is above high),
 * 'hot' (regions on the tier accessed within cold-after), 'snapshot' (held only by
 * snapshots). action: move the bytes, only copy them (premigrate), let the pool blocks
 * of a premigrated file go (release), or bring them back from the tier (recall).
 * `ranges`: only these blocks [b0, b1) (regions); `snapshots`: only the blocks its
 * snapshots hold and it does not.
 */
export interface Decision {
  path: string; tier: string; volume: string; bytes: number; reason: 'cold' | 'watermark' | 'hot' | 'snapshot'
  action: 'migrate' | 'premigrate' | 'release' | 'recall'; ranges?: [number, number][]; snapshots?: true
}

/** Adjacent regions as one range of blocks. */
function ranges(regions: RegionFacts[]): [number, number][] {
  const out: [number, number][] = []
  for (const r of regions) {
    const last = out[out.length - 1]
    if (last && last[1] === r.b0) last[1] = r.b1
    else out.push([r.b0, r.b1])
  }
  return out
}

/**
 * Files to migrate, coldest first: those cold by their policy's cold-after, and, while a
 * volume holding their bytes started above a policy's high watermark and would still be
 * above its low one after what is already picked, the coldest of that policy's files on it.
 */
export function decide(files: FileFacts[], tiers: Tier[], now: number, volumes: VolumeUse[] = []): Decision[] {
  const projected = new Map(volumes.map((v) => [v.name, v.used]))
  const over = (p: Policy, f: FileFacts, tierVolume: string) => p.highPct !== undefined && Object.keys(f.bytesOn).some((name) => {
    const v = volumes.find((x) => x.name === name)
    return !!v && name !== tierVolume && v.used > v.size * p.highPct! / 100 && projected.get(name)! > v.size * p.lowPct! / 100
  })
  const out: Decision[] = []
  const first: Decision[] = []
  const coldest = files.slice().sort((a, b) => a.lastAccess - b.lastAccess || (a.path < b.path ? -1 : 1))
  for (const f of coldest) {
    const p = f.policy
    if (!p || f.pinned || f.moving || f.size < p.minSize) continue
    const tier = tiers.find((t) => t.name === p.tier)
    if (!tier) continue
    if (p.snapshotsFirst && f.snapshotOnly) first.push({ path: f.path, tier: tier.name, volume: tier.volume, bytes: f.snapshotOnly, reason: 'snapshot', action: 'migrate', snapshots: true })
    if (p.regionBytes && f.regions) {
      // per region, whatever the file as a whole: cold ones go, hot ones on the tier come back
      const cold = f.regions.filter((r) => now - r.lastAccess >= p.coldAfterMs && r.elsewhere > 0)
      const hot = f.regions.filter((r) => now - r.lastAccess < p.coldAfterMs && r.onTier > 0)
      const sum = (rs: RegionFacts[], k: 'onTier' | 'elsewhere') => rs.reduce((a, r) => a + r[k], 0)
      if (cold.length) out.push({ path: f.path, tier: tier.name, volume: tier.volume, bytes: sum(cold, 'elsewhere'), reason: 'cold', action: 'migrate', ranges: ranges(cold) })
      if (hot.length) out.push({ path: f.path, tier: tier.name, volume: tier.volume, bytes: sum(hot, 'onTier'), reason: 'hot', action: 'recall', ranges: ranges(hot) })
      continue
    }
    const allocated = Object.values(f.bytesOn).reduce((a, b) => a + b, 0)
    const elsewhere = allocated - (f.bytesOn[tier.volume] ?? 0)
    if (elsewhere <= 0) continue
    const cold = now - f.lastAccess >= p.coldAfterMs
    // a premigrating policy's cold file is only copied: it frees nothing until a watermark wants its space
    let action: Decision['action'] | null = null
    if (over(p, f, tier.volume) || (cold && !p.premigrate)) action = f.premigrated ? 'release' : 'migrate'
    else if (cold && !f.premigrated) action = 'premigrate'
    if (!action) continue
    const reason = cold ? 'cold' : 'watermark'
    if (action !== 'premigrate') for (const [name, n] of Object.entries(f.bytesOn)) if (name !== tier.volume && projected.has(name)) projected.set(name, projected.get(name)! - n)
    out.push({ path: f.path, tier: tier.name, volume: tier.volume, bytes: elsewhere, reason, action })
  }
  return [...first, ...out]
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }

/** '7d', '12h', '30m', '45s', '2w', or a bare number of seconds; `what` names the option in the error. */
export function parseDuration(v: unknown, what = 'cold-after'): number {
  const m = typeof v === 'number' ? [String(v), String(v), 's'] : typeof v === 'string' ? /^(\d+(?:\.\d+)?)([smhdw]?)$/.exec(v.trim()) : null
  const ms = m ? Number(m[1]) * UNIT_MS[m[2] || 's'] : NaN
  if (!Number.isFinite(ms) || ms < 0 || ms > 100 * 365 * 86_400_000) throw new VsmError('EINVAL', `${what}: a duration such as 7d, 12h, 30m or 45s expected, not ${JSON.stringify(v)}`)
  return Math.round(ms)
}

/** '85%' or 85: a percentage of a volume's size. */
function parsePercent(v: unknown, what: string): number {
  const m = typeof v === 'number' ? [String(v), String(v)] : typeof v === 'string' ? /^(\d+(?:\.\d+)?)%?$/.exec(v.trim()) : null
  const n = m ? Number(m[1]) : NaN
  if (!(n > 0 && n <= 100)) throw new VsmError('EINVAL', `${what}: a percentage such as 85% expected (0-100), not ${JSON.stringify(v)}`)
  return n
}

export function checkPolicy(x: { coldAfter?: unknown; minSize?: unknown; tier?: unknown; high?: unknown; low?: unknown; premigrate?: unknown; regions?: unknown; snapshotsFirst?: unknown }, tiers: Tier[]): Policy {
  if (typeof x.tier !== 'string' || !tiers.some((t) => t.name === x.tier)) {
    throw new VsmError('ENOENT', `tier: ${JSON.stringify(x.tier)} is not a tier (tiers: ${tiers.map((t) => t.name).join(', ') || 'none; add one with vsm hsm tier add'})`)
  }
  const minSize = x.minSize ?? 0
  if (typeof minSize !== 'number' || !Number.isSafeInteger(minSize) || minSize < 0) throw new VsmError('EINVAL', 'min-size: a number of bytes expected')
  const policy: Policy = { coldAfterMs: parseDuration(x.coldAfter ?? '7d'), minSize, tier: x.tier }
  if (x.premigrate) {
    if (!tiers.find((t) => t.name === x.tier)!.volume.startsWith('archive:')) throw new VsmError('EINVAL', `premigrate: tier ${x.tier} is not an archive (a volume tier has no copy to keep beside the pool's)`)
    policy.premigrate = true
  }
  if (x.regions !== undefined && x.regions !== false) {
    const bytes = x.regions === true ? REGION_UNIT : x.regions
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0 || bytes % REGION_UNIT) throw new VsmError('EINVAL', `regions: a region size in whole MiB expected (1M, 4M, ...), not ${JSON.stringify(x.regions)}`)
    if (policy.premigrate) throw new VsmError('EINVAL', 'regions: not with --premigrate (copies are kept per file)')
    policy.regionBytes = bytes
  }
  if (x.snapshotsFirst) policy.snapshotsFirst = true
  if (x.high === undefined && x.low === undefined) return policy
  if (x.high === undefined || x.low === undefined) throw new VsmError('EINVAL', 'watermarks: give both --high and --low')
  if (policy.regionBytes) throw new VsmError('EINVAL', 'regions: not with watermarks (heat decides per region)')
  const highPct = parsePercent(x.high, 'high'), lowPct = parsePercent(x.low, 'low')
  if (lowPct >= highPct) throw new VsmError('EINVAL', `watermarks: low (${lowPct}%) must be below high (${highPct}%)`)
  return { ...policy, highPct, lowPct }
}
