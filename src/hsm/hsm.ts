// The hierarchical storage manager's state and jobs: tiers (named fs volumes), per-file
// state (pin, home volume, an unfinished move), policies on paths, migrate/recall jobs
// and policy runs. Everything lives in fs xattrs in the 'vsm.hsm' namespace (journaled
// with the fs metadata, hidden from the FUSE view), so it travels with the pool and
// survives losing vsm.json. How extents move is the fs's (fs/move.ts, relocate); which
// files move is policy.ts's.
import { VsmError } from '../block/blockdev'
import type { Jobs, Progress } from '../control/jobs'
import { S_IFDIR, S_IFMT, S_IFREG, type FileSystem } from '../fs/filesystem'
import { checkRate, moveExtents } from '../fs/move'
import { checkPolicy, decide, type FileFacts, type Policy, type Tier } from './policy'

/** On the root directory: the tiers, [{name, volume}]. */
const TIERS_XATTR = 'vsm.hsm.tiers'
/** On a file or directory: the policy its files inherit. */
const POLICY_XATTR = 'vsm.hsm.policy'
/** On a file: {pin?, home?, to?}: pinned; the volume a recall returns it to; a move under way. */
const FILE_XATTR = 'vsm.hsm'

interface FileState { pin?: true; home?: string; to?: string }

const BS = 4096
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

function checkPath(p: unknown): string {
  if (typeof p !== 'string' || !p) throw new VsmError('EINVAL', 'path: a path in the fs expected')
  return p.startsWith('/') ? p : `/${p}`
}

function readJson<T>(raw: Buffer | undefined, fallback: T): T {
  if (!raw) return fallback
  try { return JSON.parse(raw.toString()) as T } catch { return fallback }
}

export class Hsm {
  /** ino -> job id of its migrate/recall (one at a time per file). */
  private moving = new Map<number, number>()
  private runJob: number | null = null
  private timer: NodeJS.Timeout | null = null

  constructor(private fs: FileSystem, private jobs: Jobs) {}

  // ------------------------------------------------------------------ tiers

  tiers(): Tier[] {
    const t = readJson<Tier[]>(this.fs.getxattr('/', TIERS_XATTR), [])
    return Array.isArray(t) ? t.filter((x) => x && typeof x.name === 'string' && typeof x.volume === 'string') : []
  }

  /**
   * A volume the fs does not span is refused, not added: adding a volume to the fs is
   * its own decision (placement rules start using it), so the operator runs fs add-volume.
   */
  async addTier(name: unknown, volume: unknown): Promise<Tier> {
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw new VsmError('EINVAL', `tier name: letters, digits, '.', '_', '-' (up to 64) expected, not ${JSON.stringify(name)}`)
    if (typeof volume !== 'string' || !volume) throw new VsmError('EINVAL', 'volume: a volume name expected')
    if (!this.fs.volumeNames().includes(volume)) {
      throw new VsmError('ENOENT', `volume ${volume} is not part of the file system (it spans ${this.fs.volumeNames().join(', ')}); add it first with: vsm fs add-volume ${volume}`)
    }
    const tiers = this.tiers()
    if (tiers.some((t) => t.name === name)) throw new VsmError('EEXIST', `tier ${name} exists`)
    const other = tiers.find((t) => t.volume === volume)
    if (other) throw new VsmError('EEXIST', `volume ${volume} is already tier ${other.name}`)
    const tier = { name, volume }
    await this.fs.setxattr('/', TIERS_XATTR, Buffer.from(JSON.stringify([...tiers, tier])))
    await this.fs.sync()
    return tier
  }

  listTiers(): (Tier & { size: number; used: number; free: number })[] {
    const space = this.fs.volumeSpace()
    return this.tiers().map((t) => {
      const s = space.find((v) => v.name === t.volume)
      return { ...t, size: s?.size ?? 0, used: s ? s.size - s.free : 0, free: s?.free ?? 0 }
    })
  }

  private tier(name: unknown): Tier {
    const t = this.tiers().find((x) => x.name === name)
    if (!t) throw new VsmError('ENOENT', `no tier ${JSON.stringify(name)} (tiers: ${this.tiers().map((x) => x.name).join(', ') || 'none'})`)
    return t
  }

  // ------------------------------------------------------------------ files

  private file(path: string): number {
    if ((this.fs.getattr(path).mode & S_IFMT) !== S_IFREG) throw new VsmError('EINVAL', `not a regular file: ${path}`)
    return this.fs.lookup(path)
  }

  private state(path: string): FileState {
    return readJson<FileState>(this.fs.getxattr(path, FILE_XATTR), {})
  }

  private async setState(path: string, s: FileState): Promise<void> {
    if (Object.keys(s).length) await this.fs.setxattr(path, FILE_XATTR, Buffer.from(JSON.stringify(s)))
    else if (this.fs.getxattr(path, FILE_XATTR)) await this.fs.removexattr(path, FILE_XATTR)
    await this.fs.sync()
  }

  async pin(p: unknown, on: boolean): Promise<{ path: string; pinned: boolean }> {
    const path = checkPath(p)
    this.file(path)
    const { pin: _, ...rest } = this.state(path)
    await this.setState(path, on ? { ...rest, pin: true } : rest)
    return { path, pinned: on }
  }

  async setPolicy(p: unknown, x: { coldAfter?: unknown; minSize?: unknown; tier?: unknown }): Promise<{ path: string; policy: Policy }> {
    const path = checkPath(p)
    const policy = checkPolicy(x, this.tiers())
    this.fs.getattr(path)
    await this.fs.setxattr(path, POLICY_XATTR, Buffer.from(JSON.stringify(policy)))
    await this.fs.sync()
    return { path, policy }
  }

  /** The file's own policy, else the nearest directory's up the tree. */
  private policyFor(path: string): Policy | null {
    for (let p = path; ; p = p.slice(0, Math.max(1, p.lastIndexOf('/')))) {
      const pol = readJson<Policy | null>(this.fs.getxattr(p, POLICY_XATTR), null)
      if (pol) return pol
      if (p === '/') return null
    }
  }

  /** Every regular file under `root` (or root itself). */
  private files(root: string): string[] {
    const out: string[] = []
    const walk = (p: string) => {
      const t = this.fs.getattr(p).mode & S_IFMT
      if (t === S_IFREG) out.push(p)
      else if (t === S_IFDIR) for (const n of this.fs.readdir(p).sort()) walk(p === '/' ? `/${n}` : `${p}/${n}`)
    }
    walk(root)
    return out
  }

  // ------------------------------------------------------------------ moves

  /** Moves the file onto `volume`, recording the intent first so a restart resumes it. */
  private async moveTo(path: string, ino: number, volume: string, signal: AbortSignal, progress: Progress, rate = 0): Promise<number> {
    const to = this.fs.volumeIndex(volume)
    const s = this.state(path)
    const home = s.home ?? this.fs.placementVolume(ino)
    await this.setState(path, { ...s, home, to: volume })
    const moved = await moveExtents(this.fs, ino, path, to, signal, progress, rate)
    const { to: _, home: __, ...rest } = this.state(path)
    await this.setState(path, volume === home ? rest : { ...rest, home })
    return moved * BS
  }

  private startMove(kind: 'hsm.migrate' | 'hsm.recall', path: string, volume: string, tier: string | null, rate = 0): { job: number; path: string; volume: string; tier: string | null } {
    const ino = this.file(path)
    const busy = this.moving.get(ino)
    if (busy !== undefined) throw new VsmError('EBUSY', `${path} is being moved by job ${busy}`)
    this.fs.volumeIndex(volume)
    const job = this.jobs.start(kind, async (signal, progress) => {
      try {
        const movedBytes = await this.moveTo(path, ino, volume, signal, progress, rate)
        return { path, volume, tier, movedBytes, bytesOn: this.fs.placementOf(ino) }
      } finally {
        this.moving.delete(ino)
      }
    }, { description: `${kind === 'hsm.migrate' ? 'migrate' : 'recall'} ${path} to ${tier ?? volume}`, total: this.fs.blockSpan(ino), pausable: true })
    this.moving.set(ino, job)
    return { job, path, volume, tier }
  }

  /** `rate`: at most this many bytes per second (a restart resumes at full speed). */
  migrate(p: unknown, tierName: unknown, rate?: unknown): ReturnType<Hsm['startMove']> {
    const r = checkRate(rate)
    const path = checkPath(p)
    const tier = tierName === undefined ? this.policyTier(path) : this.tier(tierName)
    return this.startMove('hsm.migrate', path, tier.volume, tier.name, r)
  }

  private policyTier(path: string): Tier {
    const pol = this.policyFor(path)
    if (!pol) throw new VsmError('EINVAL', `no policy names a tier for ${path}: give --tier`)
    return this.tier(pol.tier)
  }

  recall(p: unknown): ReturnType<Hsm['startMove']> {
    const path = checkPath(p)
    const ino = this.file(path)
    const home = this.state(path).home ?? this.fs.placementVolume(ino)
    return this.startMove('hsm.recall', path, home, this.tiers().find((t) => t.volume === home)?.name ?? null)
  }

  /** At start: a move that a crash or shutdown interrupted runs again as a new job. */
  resume(): { path: string; job: number }[] {
    const out: { path: string; job: number }[] = []
    for (const path of this.files('/')) {
      const s = this.state(path)
      if (!s.to || !this.fs.volumeNames().includes(s.to)) continue
      const r = this.startMove(s.to === s.home ? 'hsm.recall' : 'hsm.migrate', path, s.to, this.tiers().find((t) => t.volume === s.to)?.name ?? null)
      out.push({ path, job: r.job })
    }
    return out
  }

  // ------------------------------------------------------------------ policy runs

  private facts(path: string): FileFacts {
    const st = this.fs.getattr(path)
    const s = this.state(path)
    return {
      path, size: st.size, lastAccess: Math.max(st.atime, st.mtime), pinned: !!s.pin,
      moving: !!s.to || this.moving.has(st.ino), policy: this.policyFor(path), bytesOn: this.fs.placementOf(st.ino),
    }
  }

  /** A policy run as a job: the files policy.ts picks, coldest first, one after the other. */
  run(now = Date.now()): { job: number; files: number } {
    if (this.runJob !== null) throw new VsmError('EBUSY', `a policy run is under way: job ${this.runJob}`)
    const picked = decide(this.files('/').map((p) => this.facts(p)), this.tiers(), now)
    const job = this.jobs.start('hsm.run', async (signal, progress) => {
      const migrated: { path: string; tier: string; movedBytes: number }[] = []
      try {
        for (const [i, d] of picked.entries()) {
          progress(i, picked.length)
          let ino: number
          try { ino = this.file(d.path) } catch { continue } // gone since the decision
          if (this.moving.has(ino) || this.state(d.path).pin) continue
          this.moving.set(ino, job)
          try {
            migrated.push({ path: d.path, tier: d.tier, movedBytes: await this.moveTo(d.path, ino, d.volume, signal, Object.assign(() => {}, { checkpoint: progress.checkpoint })) })
          } finally {
            this.moving.delete(ino)
          }
        }
        progress(picked.length, picked.length)
        return { decided: picked.length, migrated }
      } finally {
        this.runJob = null
      }
    }, { description: `hsm policy run (${picked.length} files)`, total: picked.length, pausable: true })
    this.runJob = job
    return { job, files: picked.length }
  }

  /** Runs the policy every `ms` (skipped while one runs). */
  every(ms: number): void {
    this.timer = setInterval(() => { if (this.runJob === null) this.run() }, ms)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  // ------------------------------------------------------------------ status

  /** Per file, bytes per tier (a volume that is no tier by its own name); totals per tier. */
  status(p: unknown = '/'): { files: { path: string; size: number; pinned: boolean; moving: boolean; home: string | null; bytes: Record<string, number> }[]; totals: Record<string, number> } {
    const root = checkPath(p)
    const tiers = this.tiers()
    const label = (vol: string) => tiers.find((t) => t.volume === vol)?.name ?? vol
    const totals: Record<string, number> = {}
    const files = this.files(root).map((path) => {
      const f = this.facts(path)
      const bytes: Record<string, number> = {}
      for (const [vol, n] of Object.entries(f.bytesOn)) {
        bytes[label(vol)] = (bytes[label(vol)] ?? 0) + n
        totals[label(vol)] = (totals[label(vol)] ?? 0) + n
      }
      return { path, size: f.size, pinned: f.pinned, moving: f.moving, home: this.state(path).home ?? null, bytes }
    })
    return { files, totals }
  }
}
