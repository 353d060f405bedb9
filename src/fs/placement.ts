// Placement policy (seed 004: a file's position in the hierarchy and its attributes
// decide its volume). A directory may carry rules in the `vsm.placement` xattr (journaled
// with the rest of the metadata, hidden from the FUSE view): a default volume for new
// files under it and volumes for names matching a pattern. A new file takes the first
// matching pattern rule, else the default, of the nearest directory up the tree that has
// one; none at all: the fs's first volume. Rules name volumes, so a removed volume's
// rules are skipped.
import { VsmError } from '../block/blockdev'
import type { FileSystem } from './filesystem'

export const PLACEMENT_XATTR = 'vsm.placement'

export interface PlacementRule { volume: string; match?: string }

export function parseRules(raw: Buffer | undefined): PlacementRule[] {
  if (!raw) return []
  try {
    const r = JSON.parse(raw.toString())
    return Array.isArray(r) ? r.filter((x) => x && typeof x.volume === 'string') : []
  } catch {
    return []
  }
}

/** Shell-style: `*` any run, `?` one character, `[...]` a class; matched against the whole name. */
function globRe(glob: string): RegExp {
  let re = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]
    if (c === '*') re += '.*'
    else if (c === '?') re += '.'
    else if (c === '[') {
      const j = glob.indexOf(']', i + 2)
      if (j < 0) { re += '\\['; continue }
      const body = glob.slice(i + 1, j).replace(/^!/, '^').replace(/\\/g, '\\\\')
      re += `[${body}]`
      i = j
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&')
  }
  return new RegExp(`^${re}$`, 's')
}

/** The volume a directory's rules give a new file named `name`, or null when they say nothing. */
export function pick(rules: PlacementRule[], name: string, usable: (v: string) => boolean): string | null {
  for (const r of rules) if (r.match !== undefined && usable(r.volume) && globRe(r.match).test(name)) return r.volume
  const d = rules.find((r) => r.match === undefined && usable(r.volume))
  return d ? d.volume : null
}

function checkMatch(m: unknown): string | undefined {
  if (m === undefined) return undefined
  if (typeof m !== 'string' || !m || m.length > 255 || m.includes('/') || m.includes('\0')) {
    throw new VsmError('EINVAL', `match: a file name pattern expected (no '/'), not ${JSON.stringify(m)}`)
  }
  return m
}

/** Set (or replace) the rule of `dir` for `match` (none: the directory's default). */
export async function setPolicy(fs: FileSystem, dir: unknown, volume: string, match?: unknown): Promise<{ dir: string; rules: PlacementRule[] }> {
  if (typeof dir !== 'string' || !dir) throw new VsmError('EINVAL', 'dir: a directory path expected')
  const path = dir.startsWith('/') ? dir : `/${dir}`
  const m = checkMatch(match)
  fs.volumeIndex(volume)
  if ((fs.getattr(path).mode & 0o170000) !== 0o040000) throw new VsmError('ENOTDIR', `not a directory: ${dir}`)
  const rules = parseRules(fs.getxattr(path, PLACEMENT_XATTR)).filter((r) => r.match !== m)
  // pattern rules first, in the order set; the default last
  const next = m === undefined ? [...rules, { volume }] : [...rules.filter((r) => r.match !== undefined), { volume, match: m }, ...rules.filter((r) => r.match === undefined)]
  await fs.setxattr(path, PLACEMENT_XATTR, Buffer.from(JSON.stringify(next)))
  await fs.sync()
  return { dir: path, rules: next }
}

/** Every directory with rules, top down. */
export function listPolicies(fs: FileSystem): { dir: string; volume: string; match: string | null }[] {
  const out: { dir: string; volume: string; match: string | null }[] = []
  const walk = (path: string) => {
    for (const r of parseRules(fs.getxattr(path, PLACEMENT_XATTR))) out.push({ dir: path, volume: r.volume, match: r.match ?? null })
    for (const name of fs.readdir(path).sort()) {
      const child = path === '/' ? `/${name}` : `${path}/${name}`
      if ((fs.getattr(child).mode & 0o170000) === 0o040000) walk(child)
    }
  }
  walk('/')
  return out
}
