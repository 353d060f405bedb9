// HSM policy: which files a policy run migrates. A pure function of the files' facts
// (size, last access, pin, the policy they inherit, where their bytes live) and the
// clock, kept apart from the mechanism that moves extents (src/hsm/hsm.ts, fs relocate)
// so it can be tested with a table of cases.
import { VsmError } from '../block/blockdev'

export interface Policy { coldAfterMs: number; minSize: number; tier: string }
/** `volume`: the fs location of the tier's bytes: a volume name, or archive:NAME for an archive tier. */
export interface Tier { name: string; volume: string }

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
}

export interface Decision { path: string; tier: string; volume: string; bytes: number }

/** Files to migrate, coldest first. */
export function decide(files: FileFacts[], tiers: Tier[], now: number): Decision[] {
  const out: (Decision & { lastAccess: number })[] = []
  for (const f of files) {
    const p = f.policy
    if (!p || f.pinned || f.moving || f.size < p.minSize) continue
    if (now - f.lastAccess < p.coldAfterMs) continue
    const tier = tiers.find((t) => t.name === p.tier)
    if (!tier) continue
    const allocated = Object.values(f.bytesOn).reduce((a, b) => a + b, 0)
    const elsewhere = allocated - (f.bytesOn[tier.volume] ?? 0)
    if (elsewhere <= 0) continue
    out.push({ path: f.path, tier: tier.name, volume: tier.volume, bytes: elsewhere, lastAccess: f.lastAccess })
  }
  return out.sort((a, b) => a.lastAccess - b.lastAccess || (a.path < b.path ? -1 : 1)).map(({ lastAccess: _, ...d }) => d)
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }

/** '7d', '12h', '30m', '45s', '2w', or a bare number of seconds; `what` names the option in the error. */
export function parseDuration(v: unknown, what = 'cold-after'): number {
  const m = typeof v === 'number' ? [String(v), String(v), 's'] : typeof v === 'string' ? /^(\d+(?:\.\d+)?)([smhdw]?)$/.exec(v.trim()) : null
  const ms = m ? Number(m[1]) * UNIT_MS[m[2] || 's'] : NaN
  if (!Number.isFinite(ms) || ms < 0 || ms > 100 * 365 * 86_400_000) throw new VsmError('EINVAL', `${what}: a duration such as 7d, 12h, 30m or 45s expected, not ${JSON.stringify(v)}`)
  return Math.round(ms)
}

export function checkPolicy(x: { coldAfter?: unknown; minSize?: unknown; tier?: unknown }, tiers: Tier[]): Policy {
  if (typeof x.tier !== 'string' || !tiers.some((t) => t.name === x.tier)) {
    throw new VsmError('ENOENT', `tier: ${JSON.stringify(x.tier)} is not a tier (tiers: ${tiers.map((t) => t.name).join(', ') || 'none; add one with vsm hsm tier add'})`)
  }
  const minSize = x.minSize ?? 0
  if (typeof minSize !== 'number' || !Number.isSafeInteger(minSize) || minSize < 0) throw new VsmError('EINVAL', 'min-size: a number of bytes expected')
  return { coldAfterMs: parseDuration(x.coldAfter ?? '7d'), minSize, tier: x.tier }
}
