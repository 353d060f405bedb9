// The hierarchical storage manager's state and jobs: tiers (named fs volumes, or archives
// outside the pool attached to the fs as archive locations), per-file state (pin, home
// volume, an unfinished move), policies on paths, migrate/recall jobs and policy runs.
// Everything lives in fs xattrs in the 'vsm.hsm' namespace (journaled with the fs
// metadata, hidden from the FUSE view), so it travels with the pool and survives losing
// vsm.json. How extents move is the fs's (fs/move.ts, relocate); which files move is
// policy.ts's.
import { createHash } from 'crypto'
import { VsmError } from '../block/blockdev'
import type { EventSink } from '../control/events'
import type { Jobs, Progress } from '../control/jobs'
import { S_IFMT, S_IFREG, type FileSystem } from '../fs/filesystem'
import { readJsonXattr, regularFiles, writeJsonXattr } from '../fs/intent'
import { checkRate, moveExtents } from '../fs/move'
import { openArchive } from './archive'
import { ArchiveDev, OBJECT_BLOCKS, objectKey, objectOfKey } from './archive-dev'
import { checkPolicy, decide, parseDuration, REGION_UNIT, type Decision, type FileFacts, type Policy, type RegionFacts, type Tier } from './policy'

/** On the root directory: the tiers, [TierRecord]. */
const TIERS_XATTR = 'vsm.hsm.tiers'
/** On a file or directory: the policy its files inherit. */
const POLICY_XATTR = 'vsm.hsm.policy'
/**
 * On a file: {pin?, home?, to?, rate?, range?}: pinned; the volume a recall returns it
 * to; a move under way (its target, its rate, and for a range recall its blocks [b0, b1)).
 */
const FILE_XATTR = 'vsm.hsm'

interface FileState { pin?: true; home?: string; to?: string; rate?: number; range?: [number, number] }

/**
 * On a file: its premigrated copies, {location, stamp, sha, runs, parts?}: the archive
 * location, the file's stamp when they were made, the sha256 of the bytes copied (run
 * by run), the copies as [file block, address, blocks]. A long list goes on in
 * PRE_XATTR.1, .2, ... (`parts` in all); the parts are written before the record and
 * dropped after it, so a record is whole whenever it exists.
 */
const PRE_XATTR = 'vsm.hsm.pre'
/** Runs per xattr: each at most ~45 bytes of JSON, well under the fs's 64 KiB xattr limit. */
const PRE_RUNS_PER_XATTR = 1000
interface Premigration { location: string; stamp: number; sha: string; runs: [number, number, number][]; parts?: number }

/** Adjacent runs (next in the file and at the next address) as one. */
function coalesce(runs: [number, number, number][]): [number, number, number][] {
  const out: [number, number, number][] = []
  for (const r of runs) {
    const last = out[out.length - 1]
    if (last && last[0] + last[2] === r[0] && last[1] + last[2] === r[1]) last[2] += r[2]
    else out.push([...r])
  }
  return out
}

/**
 * A tier as recorded: a volume of the fs, or an archive (a directory or an SFTP URL with
 * the key and known_hosts to reach it) in slot `slot` of the fs's archive locations.
 */
interface TierRecord { name: string; volume?: string; archive?: string; identity?: string; knownHosts?: string; slot?: number; timeoutMs?: number }

/** The fs location name of an archive tier's bytes (no volume name has a ':'). */
const archiveLocation = (name: string) => `archive:${name}`
const DEFAULT_ARCHIVE_TIMEOUT_MS = 30_000

const BS = 4096
/** Blocks per step of a premigration copy: 1 MiB, as fs move's steps. */
const STEP = 256
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

function checkPath(p: unknown): string {
  if (typeof p !== 'string' || !p) throw new VsmError('EINVAL', 'path: a path in the fs expected')
  return p.startsWith('/') ? p : `/${p}`
}

/** 'A-B' (bytes, with size suffixes) or [A, B]: A < B <= size. */
function checkRange(r: unknown, size: number): [number, number] {
  let ab: unknown[] | null = Array.isArray(r) ? r : null
  if (typeof r === 'string') {
    const m = /^(\d+)-(\d+)$/.exec(r.trim())
    ab = m ? [Number(m[1]), Number(m[2])] : null
  }
  if (!ab || ab.length !== 2 || !ab.every((x) => Number.isSafeInteger(x) && (x as number) >= 0) || (ab[0] as number) >= (ab[1] as number) || (ab[1] as number) > size) {
    throw new VsmError('EINVAL', `range: A-B in bytes with A < B <= the file's size (${size}) expected, not ${JSON.stringify(r)}`)
  }
  return [ab[0] as number, ab[1] as number]
}

export class Hsm {
  /** ino -> job id of its migrate/recall (one at a time per file). */
  private moving = new Map<number, number>()
  private runJob: number | null = null
  private lastRun = 0
  /** Moves into an archive under way: check waits for none (their objects are written before the fs points at them). */
  private archiveWriters = 0
  /**
   * Premigrations (inode:stamp) this daemon run made or checked against the pool: their
   * stamp alone says they match. One recorded before a restart is checked by its hash
   * first, since a crash may have lost the lazily journaled stamp of a write in place.
   */
  private trusted = new Set<string>()
  private timer: NodeJS.Timeout | null = null

  /** Location name (a volume, or archive:TIER) -> the fs's index for it (archives once attached). */
  private archives = new Map<string, { vol: number; dev: ArchiveDev }>()
  /**
   * Region heat: inode -> 1 MiB unit -> last read or write (ms). In memory: after a
   * restart a unit counts as last accessed at the start (or at the file's last access,
   * if older), so nothing turns cold sooner than cold-after from then.
   */
  private heat = new Map<number, Map<number, number>>()
  private readonly since = Date.now()

  constructor(private fs: FileSystem, private jobs: Jobs, private events: EventSink) {
    fs.watchAccess((ino, b0, b1) => this.touch(ino, b0, b1))
  }

  private touch(ino: number, b0: number, b1: number): void {
    const unit = REGION_UNIT / BS
    let h = this.heat.get(ino)
    if (!h) this.heat.set(ino, h = new Map())
    const now = Date.now()
    for (let u = Math.floor(b0 / unit); u * unit < b1; u++) h.set(u, now)
  }

  /** The file's regions holding data, with their heat and where their bytes are (tier or elsewhere). */
  private regionFacts(ino: number, regionBytes: number, fileLastAccess: number, tierVolume: string): RegionFacts[] {
    const per = regionBytes / BS, unit = REGION_UNIT / BS
    const base = Math.min(this.since, fileLastAccess)
    const regions = new Map<number, RegionFacts>()
    for (const e of this.fs.extentMap(ino)) {
      for (let off = e.offset; off < e.offset + e.length;) {
        const r = Math.floor(off / BS / per)
        const end = Math.min(e.offset + e.length, (r + 1) * per * BS)
        let f = regions.get(r)
        if (!f) regions.set(r, f = { b0: r * per, b1: (r + 1) * per, lastAccess: base, onTier: 0, elsewhere: 0 })
        if (e.volume === tierVolume) f.onTier += end - off
        else f.elsewhere += end - off
        off = end
      }
    }
    const h = this.heat.get(ino)
    for (const f of regions.values()) {
      for (let u = f.b0 / unit; h && u < f.b1 / unit; u++) f.lastAccess = Math.max(f.lastAccess, h.get(u) ?? 0)
    }
    return [...regions.values()].sort((a, b) => a.b0 - b.b0)
  }

  /** Attaches every archive tier to the fs as a location; before the view serves reads of archived ranges. */
  attachArchives(): void {
    for (const t of this.records()) if (t.archive !== undefined) this.attach(t)
  }

  private attach(t: TierRecord): { vol: number; dev: ArchiveDev } {
    const name = archiveLocation(t.name)
    const dev = new ArchiveDev(name, openArchive({ archive: t.archive!, identity: t.identity, knownHosts: t.knownHosts }), t.timeoutMs ?? DEFAULT_ARCHIVE_TIMEOUT_MS,
      (what, e) => this.events.publish('hsm.archive-error', { tier: t.name, what, error: e.message, reason: 'the archive did not answer or answered wrong: readers of archived ranges get EIO, a later access retries' }, 'warn'))
    const vol = this.fs.attachArchive(t.slot!, dev)
    // the objects the fs and the premigration records point into are never handed out again
    for (const r of [...this.fs.archivedRuns(vol), ...this.premigratedRuns(name, true)]) dev.reserveBelow(r.start + r.len)
    const a = { vol, dev }
    this.archives.set(name, a)
    return a
  }

  private records(): TierRecord[] {
    const t = readJsonXattr<TierRecord[]>(this.fs, '/', TIERS_XATTR, [])
    return Array.isArray(t) ? t.filter((x) => x && typeof x.name === 'string' && (typeof x.volume === 'string' || (typeof x.archive === 'string' && Number.isSafeInteger(x.slot)))) : []
  }

  /** The tiers as policy sees them: each with the fs location its bytes are counted under. */
  tiers(): Tier[] {
    return this.records().map((t) => ({ name: t.name, volume: t.volume ?? archiveLocation(t.name) }))
  }

  /**
   * A volume the fs does not span is refused, not added: adding a volume to the fs is
   * its own decision (placement rules start using it), so the operator runs fs add-volume.
   * An archive must exist and answer (an SFTP one with its host key in known_hosts).
   */
  async addTier(name: unknown, x: { volume?: unknown; archive?: unknown; identity?: unknown; knownHosts?: unknown; timeout?: unknown }): Promise<Tier & { archive?: string }> {
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw new VsmError('EINVAL', `tier name: letters, digits, '.', '_', '-' (up to 64) expected, not ${JSON.stringify(name)}`)
    if ((x.volume === undefined) === (x.archive === undefined)) throw new VsmError('EINVAL', 'a tier is either --volume V or --archive DIR|sftp://USER@HOST[:PORT]/PATH')
    const records = this.records()
    if (records.some((t) => t.name === name)) throw new VsmError('EEXIST', `tier ${name} exists`)
    let rec: TierRecord
    if (x.volume !== undefined) {
      const volume = x.volume
      if (typeof volume !== 'string' || !volume) throw new VsmError('EINVAL', 'volume: a volume name expected')
      if (!this.fs.volumeNames().includes(volume)) {
        throw new VsmError('ENOENT', `volume ${volume} is not part of the file system (it spans ${this.fs.volumeNames().join(', ')}); add it first with: vsm fs add-volume ${volume}`)
      }
      const other = records.find((t) => t.volume === volume)
      if (other) throw new VsmError('EEXIST', `volume ${volume} is already tier ${other.name}`)
      rec = { name, volume }
    } else {
      rec = await this.archiveRecord(name, x, records)
    }
    await this.fs.setxattr('/', TIERS_XATTR, Buffer.from(JSON.stringify([...records, rec])))
    await this.fs.sync()
    if (rec.archive !== undefined) this.attach(rec)
    return { name, volume: rec.volume ?? archiveLocation(name), ...(rec.archive !== undefined ? { archive: rec.archive } : {}) }
  }

  private async archiveRecord(name: string, x: { archive?: unknown; identity?: unknown; knownHosts?: unknown; timeout?: unknown }, records: TierRecord[]): Promise<TierRecord> {
    const archive = x.archive
    if (typeof archive !== 'string' || !archive) throw new VsmError('EINVAL', 'archive: a directory or sftp://USER@HOST[:PORT]/PATH expected')
    const sftp = archive.startsWith('sftp:')
    for (const [k, v] of [['identity', x.identity], ['known-hosts', x.knownHosts]] as const) {
      if (v === undefined) continue
      if (!sftp) throw new VsmError('EINVAL', `--${k} is for an sftp:// archive`)
      if (typeof v !== 'string' || !v.startsWith('/')) throw new VsmError('EINVAL', `${k}: an absolute path expected (the daemon reads it at each connect)`)
    }
    const other = records.find((t) => t.archive === archive)
    if (other) throw new VsmError('EEXIST', `archive ${archive} is already tier ${other.name}`)
    const timeoutMs = x.timeout === undefined ? undefined : parseDuration(x.timeout, 'timeout')
    if (timeoutMs === 0) throw new VsmError('EINVAL', 'timeout: more than 0 expected')
    const store = openArchive({ archive, identity: x.identity as string | undefined, knownHosts: x.knownHosts as string | undefined })
    try { await store.probe() } finally { await store.close() }
    const slot = records.reduce((m, t) => Math.max(m, (t.slot ?? -1) + 1), 0)
    return { name, archive, slot, ...(sftp ? { identity: x.identity as string | undefined, knownHosts: x.knownHosts as string | undefined } : {}), ...(timeoutMs ? { timeoutMs } : {}) }
  }

  listTiers(): (Tier & { archive?: string; size: number | null; used: number; free: number | null })[] {
    const space = this.fs.volumeSpace()
    return this.records().map((t) => {
      if (t.archive !== undefined) return { name: t.name, volume: archiveLocation(t.name), archive: t.archive, size: null, used: this.archivedBytes(archiveLocation(t.name)), free: null }
      const s = space.find((v) => v.name === t.volume)
      return { name: t.name, volume: t.volume!, size: s?.size ?? 0, used: s ? s.size - s.free : 0, free: s?.free ?? 0 }
    })
  }

  /** Bytes the fs's maps hold in an archive (shared ones once). */
  private archivedBytes(location: string): number {
    const a = this.archives.get(location)
    return a ? this.fs.archivedRuns(a.vol).reduce((n, r) => n + r.len * BS, 0) : 0
  }

  /** The fs index of a tier's location. */
  private target(t: Tier): number {
    const a = this.archives.get(t.volume)
    if (a) return a.vol
    if (t.volume.startsWith('archive:')) throw new VsmError('EIO', `archive tier ${t.name} is not attached`)
    return this.fs.volumeIndex(t.volume)
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
    return readJsonXattr<FileState>(this.fs, path, FILE_XATTR, {})
  }

  private async setState(path: string, s: FileState): Promise<void> {
    await writeJsonXattr(this.fs, path, FILE_XATTR, Object.keys(s).length ? s : null)
  }

  async pin(p: unknown, on: boolean): Promise<{ path: string; pinned: boolean }> {
    const path = checkPath(p)
    this.file(path)
    const { pin: _, ...rest } = this.state(path)
    await this.setState(path, on ? { ...rest, pin: true } : rest)
    return { path, pinned: on }
  }

  async setPolicy(p: unknown, x: { coldAfter?: unknown; minSize?: unknown; tier?: unknown; high?: unknown; low?: unknown; premigrate?: unknown; regions?: unknown; snapshotsFirst?: unknown }): Promise<{ path: string; policy: Policy }> {
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
      const pol = readJsonXattr<Policy | null>(this.fs, p, POLICY_XATTR, null)
      if (pol) return pol
      if (p === '/') return null
    }
  }

  // ------------------------------------------------------------------ moves

  /**
   * Moves the file's bytes (with `range`, blocks [b0, b1) only) to `location`, recording
   * the intent first so that a restart resumes it; however the move ends (done,
   * cancelled, failed) the intent goes, so only one a crash or shutdown interrupted runs
   * again. A shutdown closes the fs under the move: dropping the intent fails then, and
   * it stays for the next up.
   */
  private async moveTo(path: string, ino: number, location: string, signal: AbortSignal, progress: Progress, rate = 0, range?: [number, number]): Promise<number> {
    const to = this.target({ name: location, volume: location })
    const intoArchive = this.archives.has(location)
    if (intoArchive) this.archiveWriters++
    try {
      const s = this.state(path)
      const home = s.home ?? this.fs.placementVolume(ino)
      await this.setState(path, { ...s, home, to: location, ...(rate ? { rate } : {}), ...(range ? { range } : {}) })
      let done = false
      try {
        const moved = await moveExtents(this.fs, ino, path, to, signal, progress, rate, range)
        done = true
        return moved * BS
      } finally {
        try {
          if (this.fs.lookup(path) === ino) {
            const { to: _, home: __, rate: ___, range: ____, ...rest } = this.state(path)
            // all of it home: nothing left to recall
            await this.setState(path, done && !range && location === home ? rest : { ...rest, home })
          }
        } catch { /* the fs closed under the move (a shutdown): the intent stays */ }
      }
    } finally {
      if (intoArchive) this.archiveWriters--
    }
  }

  private startMove(kind: 'hsm.migrate' | 'hsm.recall', path: string, location: string, tier: string | null, rate = 0, range?: [number, number]): { job: number; path: string; volume: string; tier: string | null } {
    const ino = this.file(path)
    const busy = this.moving.get(ino)
    if (busy !== undefined) throw new VsmError('EBUSY', `${path} is being moved by job ${busy}`)
    this.target({ name: tier ?? location, volume: location })
    const what = range ? `${kind === 'hsm.migrate' ? 'migrate' : 'recall'} ${path} bytes ${range[0] * BS}-${range[1] * BS}` : `${kind === 'hsm.migrate' ? 'migrate' : 'recall'} ${path}`
    const job = this.jobs.start(kind, async (signal, progress) => {
      try {
        const movedBytes = kind === 'hsm.migrate' && !range
          ? await this.releaseTo(path, ino, location, signal, progress, rate)
          : await this.moveTo(path, ino, location, signal, progress, rate, range)
        return { path, volume: location, tier, ...(range ? { range: range.map((b) => b * BS) } : {}), movedBytes, bytesOn: this.fs.placementOf(ino) }
      } finally {
        this.moving.delete(ino)
      }
    }, { description: `${what} to ${tier ?? location}`, total: range ? range[1] - range[0] : this.fs.blockSpan(ino), pausable: true })
    this.moving.set(ino, job)
    return { job, path, volume: location, tier }
  }

  /** `rate`: at most this many bytes per second (recorded with the intent: a restart resumes at it). */
  migrate(p: unknown, tierName: unknown, rate?: unknown, premigrate?: unknown): ReturnType<Hsm['startMove']> {
    const r = checkRate(rate)
    const path = checkPath(p)
    const tier = tierName === undefined ? this.policyTier(path) : this.tier(tierName)
    if (!premigrate) return this.startMove('hsm.migrate', path, tier.volume, tier.name, r)
    if (!this.archives.has(tier.volume)) throw new VsmError('EINVAL', `premigrate: tier ${tier.name} is not an archive`)
    const ino = this.file(path)
    const busy = this.moving.get(ino)
    if (busy !== undefined) throw new VsmError('EBUSY', `${path} is being moved by job ${busy}`)
    const job = this.jobs.start('hsm.premigrate', async (signal, progress) => {
      try {
        const copiedBytes = await this.premigrateTo(path, ino, tier.volume, signal, progress)
        return { path, volume: tier.volume, tier: tier.name, copiedBytes }
      } finally { this.moving.delete(ino) }
    }, { description: `premigrate ${path} to ${tier.name}`, total: this.fs.blockSpan(ino), pausable: true })
    this.moving.set(ino, job)
    return { job, path, volume: tier.volume, tier: tier.name }
  }

  /**
   * Copies the file's pool bytes to an archive and keeps them in the pool (premigration),
   * 1 MiB at a time; the copies count only if the file did not change from the first
   * step to the last (else it starts over, three times at most). They are recorded on the
   * file (durably, after the copies are) with the file's stamp and their hash.
   */
  private async premigrateTo(path: string, ino: number, location: string, signal: AbortSignal, progress: Progress): Promise<number> {
    const to = this.target({ name: location, volume: location })
    this.archiveWriters++
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        await this.writePremigration(path, null)
        const span = this.fs.blockSpan(ino)
        const runs: [number, number, number][] = []
        const hash = createHash('sha256')
        let stamp: number | null = null
        let changed = false
        for (let b = 0; b < span && !changed; b += STEP) {
          progress(b, span)
          await progress.checkpoint()
          if (signal.aborted) throw new VsmError('ECANCELED', 'cancelled')
          if (this.fs.lookup(path) !== ino) throw new VsmError('ENOENT', `${path} went away during the premigration`)
          const r = await this.fs.copyOut(ino, b, Math.min(span, b + STEP), to, hash)
          changed = stamp !== null && r.stamp !== stamp
          stamp = r.stamp
          runs.push(...r.runs)
        }
        if (changed || stamp === null) continue
        progress(span, span)
        await this.writePremigration(path, { location, stamp, sha: hash.digest('hex'), runs: coalesce(runs) })
        this.trusted.add(`${ino}:${stamp}`)
        return runs.reduce((a, r) => a + r[2], 0) * BS
      }
      throw new VsmError('EAGAIN', `${path} kept changing during the premigration: nothing kept (hsm check removes the copies)`)
    } finally {
      this.archiveWriters--
    }
  }

  /** The file's premigration record, whole, or null. */
  private premigrationRecord(path: string): Premigration | null {
    const p = readJsonXattr<Premigration | null>(this.fs, path, PRE_XATTR, null)
    if (!p || typeof p.location !== 'string' || typeof p.stamp !== 'number' || !Array.isArray(p.runs)) return null
    const runs = [...p.runs]
    for (let k = 1; k < (p.parts ?? 1); k++) {
      const more = readJsonXattr<[number, number, number][] | null>(this.fs, path, `${PRE_XATTR}.${k}`, null)
      if (!Array.isArray(more)) return null
      runs.push(...more)
    }
    return { ...p, runs }
  }

  /** Records (null: drops) the file's premigration, durably: the parts first and the record last; dropped record first. */
  private async writePremigration(path: string, p: Premigration | null): Promise<void> {
    const old = readJsonXattr<{ parts?: number } | null>(this.fs, path, PRE_XATTR, null)
    if (old) await writeJsonXattr(this.fs, path, PRE_XATTR, null)
    for (let k = 1; k < (old?.parts ?? 1); k++) if (this.fs.getxattr(path, `${PRE_XATTR}.${k}`)) await this.fs.removexattr(path, `${PRE_XATTR}.${k}`)
    if (!p) return
    const chunks: [number, number, number][][] = []
    for (let i = 0; i < Math.max(1, p.runs.length); i += PRE_RUNS_PER_XATTR) chunks.push(p.runs.slice(i, i + PRE_RUNS_PER_XATTR))
    for (let k = 1; k < chunks.length; k++) await this.fs.setxattr(path, `${PRE_XATTR}.${k}`, Buffer.from(JSON.stringify(chunks[k])))
    await writeJsonXattr(this.fs, path, PRE_XATTR, { ...p, runs: chunks[0], ...(chunks.length > 1 ? { parts: chunks.length } : {}) })
  }

  /** Premigration record `p` of file `ino` if its stamp still matches the file's, else null. */
  private current(ino: number, p: Premigration | null): Premigration | null {
    return p && this.fs.statIno(ino).stamp === p.stamp ? p : null
  }

  /**
   * Whether the pool still holds what the copies hold. Made (or checked) by this daemon
   * run: the stamp says so. Recorded before a restart: a crash may have lost the
   * journaled stamp of a write in place, so the pool's bytes are read back (not an
   * access) and hashed; a write meanwhile moves the stamp, which release checks.
   */
  private async matches(ino: number, p: Premigration): Promise<boolean> {
    const key = `${ino}:${p.stamp}`
    if (this.trusted.has(key)) return true
    const hash = createHash('sha256')
    for (const [fb, , len] of p.runs) {
      for (let b = fb; b < fb + len; b += STEP) {
        const buf = Buffer.alloc(Math.min(STEP, fb + len - b) * BS)
        await this.fs.read(ino, buf, b * BS, { atime: false })
        hash.update(buf)
      }
    }
    if (hash.digest('hex') !== p.sha) return false
    this.trusted.add(key)
    return true
  }

  /**
   * Lets the pool blocks of a premigrated file go (no copy); a copy gone stale, or one
   * whose bytes no longer match the pool's, falls back to a migration. The record goes
   * either way: the copies are now the file's, or orphans for check.
   */
  private async releaseTo(path: string, ino: number, location: string, signal: AbortSignal, progress: Progress, rate = 0): Promise<number> {
    const rec = this.premigrationRecord(path)
    const p = rec?.location === location ? this.current(ino, rec) : null
    const released = p && await this.matches(ino, p) ? await this.fs.releaseCopies(ino, p.runs, this.target({ name: location, volume: location }), p.stamp) : -1
    if (rec?.location === location) await this.writePremigration(path, null)
    // whatever the copies did not cover (all of it when there were none, else none unless the file grew into holes) moves the usual way
    return Math.max(0, released) * BS + await this.moveTo(path, ino, location, signal, progress, rate)
  }

  private policyTier(path: string): Tier {
    const pol = this.policyFor(path)
    if (!pol) throw new VsmError('EINVAL', `no policy names a tier for ${path}: give --tier`)
    return this.tier(pol.tier)
  }

  /**
   * Back to the volume the file came from: the whole file, or with `range` [A, B) bytes
   * only (rounded out to blocks); `rate`: at most this many bytes per second.
   */
  recall(p: unknown, range?: unknown, rate?: unknown): ReturnType<Hsm['startMove']> {
    const r = checkRate(rate)
    const path = checkPath(p)
    const ino = this.file(path)
    const home = this.state(path).home ?? this.fs.placementVolume(ino)
    const tier = this.tiers().find((t) => t.volume === home)?.name ?? null
    if (range === undefined) return this.startMove('hsm.recall', path, home, tier, r)
    const [a, b] = checkRange(range, this.fs.sizeOf(ino))
    return this.startMove('hsm.recall', path, home, tier, r, [Math.floor(a / BS), Math.ceil(b / BS)])
  }

  /** At start: a move (or range recall) that a crash or shutdown interrupted runs again as a new job, at its rate. */
  resume(): { path: string; job: number }[] {
    const out: { path: string; job: number }[] = []
    for (const path of regularFiles(this.fs, '/')) {
      const s = this.state(path)
      if (!s.to || !(this.fs.volumeNames().includes(s.to) || this.archives.has(s.to))) continue
      const r = this.startMove(s.to === s.home ? 'hsm.recall' : 'hsm.migrate', path, s.to, this.tiers().find((t) => t.volume === s.to)?.name ?? null, s.rate, s.range)
      out.push({ path, job: r.job })
    }
    return out
  }

  // ------------------------------------------------------------------ policy runs

  private facts(path: string, policy = this.policyFor(path)): FileFacts {
    const st = this.fs.getattr(path)
    const s = this.state(path)
    const lastAccess = Math.max(st.atime, st.mtime)
    const tier = policy?.regionBytes || policy?.snapshotsFirst ? this.tiers().find((t) => t.name === policy.tier) : undefined
    return {
      path, size: st.size, lastAccess, pinned: !!s.pin,
      moving: !!s.to || this.moving.has(st.ino), policy, bytesOn: this.fs.placementOf(st.ino),
      premigrated: !!this.current(st.ino, this.premigrationRecord(path)),
      ...(tier && policy!.regionBytes ? { regions: this.regionFacts(st.ino, policy!.regionBytes, lastAccess, tier.volume) } : {}),
      ...(tier && policy!.snapshotsFirst ? { snapshotOnly: this.snapshotOnlyBytes(path, st.ino, tier.volume) } : {}),
    }
  }

  /** Bytes the file's snapshots hold that the file itself does not, off `tierVolume` (each once, however many snapshots share it). */
  private snapshotOnlyBytes(path: string, ino: number, tierVolume: string): number {
    const snaps = this.fs.snapshots(path)
    if (!snaps.length) return 0
    const merged = (xs: [number, number][]) => {
      const out: [number, number][] = []
      for (const [a, b] of xs.sort((x, y) => x[0] - y[0])) {
        const last = out[out.length - 1]
        if (last && a <= last[1]) last[1] = Math.max(last[1], b)
        else out.push([a, b])
      }
      return out
    }
    const byVolume = (entries: { volume: string; physical: number; length: number }[]) => {
      const m = new Map<string, [number, number][]>()
      for (const e of entries) if (e.volume !== tierVolume) (m.get(e.volume) ?? m.set(e.volume, []).get(e.volume)!).push([e.physical, e.physical + e.length])
      return new Map([...m].map(([v, xs]) => [v, merged(xs)]))
    }
    const live = byVolume(this.fs.extentMap(ino))
    let bytes = 0
    for (const [v, xs] of byVolume(snaps.flatMap((sn) => this.fs.extentMap(sn.ino)))) {
      const held = live.get(v) ?? []
      for (const [a, b] of xs) {
        // [a, b) less what the file holds there
        let covered = 0
        for (const [c, d] of held) if (c < b && d > a) covered += Math.min(b, d) - Math.max(a, c)
        bytes += b - a - covered
      }
    }
    return bytes
  }

  /**
   * The blocks the file's snapshots hold and the file does not go to `location`, 1 MiB
   * of each snapshot at a time (every step is wholly moved or not: a crash needs no
   * intent, the next run moves what is left). Blocks several snapshots share move once,
   * remapped in all of them.
   */
  private async moveSnapshotBlocks(path: string, ino: number, location: string, signal: AbortSignal, progress: Progress): Promise<number> {
    const to = this.target({ name: location, volume: location })
    const intoArchive = this.archives.has(location)
    if (intoArchive) this.archiveWriters++
    try {
      let moved = 0
      for (const sn of this.fs.snapshots(path)) {
        const span = this.fs.blockSpan(sn.ino)
        for (let b = 0; b < span; b += STEP) {
          await progress.checkpoint()
          if (signal.aborted) throw new VsmError('ECANCELED', 'cancelled')
          if (this.fs.lookup(path) !== ino) throw new VsmError('ENOENT', `${path} went away during the move`)
          moved += await this.fs.relocate(sn.ino, b, Math.min(span, b + STEP), to, { unlessHeldBy: ino })
        }
      }
      await this.fs.sync()
      return moved * BS
    } finally {
      if (intoArchive) this.archiveWriters--
    }
  }

  /** A region decision: its ranges to the tier, or (hot ones) back to the file's home, one after the other. */
  private async moveRanges(d: Decision, path: string, ino: number, _volume: string, signal: AbortSignal, progress: Progress): Promise<number> {
    const location = d.action === 'recall' ? this.state(path).home ?? this.fs.placementVolume(ino) : d.volume
    let moved = 0
    for (const r of d.ranges!) moved += await this.moveTo(path, ino, location, signal, progress, 0, r)
    return moved
  }

  /** What a policy run would migrate now (policy.ts's decide over every file and the pool volumes' use). */
  private decideNow(now: number) {
    const volumes = this.fs.volumeSpace().map((v) => ({ name: v.name, size: v.size, used: v.size - v.free }))
    const paths = regularFiles(this.fs, '/')
    // the heat of files that are gone goes too
    const live = new Set(paths.map((p) => this.fs.lookup(p)))
    for (const ino of this.heat.keys()) if (!live.has(ino)) this.heat.delete(ino)
    // decide() passes over a file under no policy: its facts walk its whole extent map
    // (where its bytes live), which stalled the daemon ~0.5 s a minute on a disk of 300k extents
    const files: FileFacts[] = []
    for (const p of paths) {
      const policy = this.policyFor(p)
      if (policy) files.push(this.facts(p, policy))
    }
    return decide(files, this.tiers(), now, volumes)
  }

  /** A policy run as a job: what decide() picks, coldest first, one file after the other. */
  run(now = Date.now(), picked = this.decideNow(now)): { job: number; files: number } {
    if (this.runJob !== null) throw new VsmError('EBUSY', `a policy run is under way: job ${this.runJob}`)
    this.lastRun = now
    const job = this.jobs.start('hsm.run', async (signal, progress) => {
      const migrated: { path: string; tier: string; action: string; reason: string; movedBytes: number }[] = []
      try {
        for (const [i, d] of picked.entries()) {
          progress(i, picked.length)
          let ino: number
          try { ino = this.file(d.path) } catch { continue } // gone since the decision
          if (this.moving.has(ino) || this.state(d.path).pin) continue
          this.moving.set(ino, job)
          try {
            const quiet = Object.assign(() => {}, { checkpoint: progress.checkpoint })
            const how = d.ranges ? this.moveRanges.bind(this, d) : d.snapshots ? this.moveSnapshotBlocks.bind(this) : d.action === 'premigrate' ? this.premigrateTo.bind(this) : d.action === 'release' ? this.releaseTo.bind(this) : this.moveTo.bind(this)
            migrated.push({ path: d.path, tier: d.tier, action: d.action, reason: d.reason, ...(d.ranges ? { ranges: d.ranges.map(([a, b]) => [a * BS, b * BS]) } : {}), movedBytes: await how(d.path, ino, d.volume, signal, quiet) })
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

  /**
   * Runs the policy every `ms` (skipped while one runs), and sooner when a volume has
   * passed a high watermark: every `watchMs` it asks decide() and starts a run when that
   * would migrate something for a watermark.
   */
  every(ms: number, watchMs = 60_000): void {
    this.lastRun = Date.now()
    this.timer = setInterval(() => {
      if (this.runJob !== null) return
      const now = Date.now()
      if (now - this.lastRun >= ms) { this.run(now); return }
      const picked = this.decideNow(now)
      if (picked.some((d) => d.reason === 'watermark')) this.run(now, picked)
    }, Math.min(ms, watchMs))
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /** After the fs is closed: the archives' connections. */
  async close(): Promise<void> {
    this.stop()
    for (const a of this.archives.values()) await a.dev.close().catch(() => undefined)
    this.archives.clear()
  }

  // ------------------------------------------------------------------ check

  /**
   * Per archive tier: the objects nothing in the fs points into (left by recalls, by
   * overwritten or deleted archived ranges, by a migration a crash cut short) are
   * removed, unless `dryRun`; objects the fs points into that are gone are reported.
   * Refused while a migration into an archive runs: its objects exist before the fs
   * points at them. Objects allocated while the check lists are left alone; everything
   * listed is fenced off from future allocation; the fs commits before anything is
   * removed, so no durable state can point into a removed object.
   */
  async check(dryRun = false): Promise<{ tiers: { tier: string; objects: number; orphans: string[]; removed: number; missing: string[] }[] }> {
    if (this.archiveWriters) throw new VsmError('EBUSY', `a migration into an archive is under way (${[...this.moving.values()].map((j) => `job ${j}`).join(', ')}): run check after it`)
    const out = []
    for (const t of this.records()) {
      if (t.archive === undefined) continue
      const a = this.archives.get(archiveLocation(t.name))
      if (!a) continue
      const floor = a.dev.nextObject()
      const keys = await a.dev.store.list()
      const ceil = a.dev.nextObject()
      const numbered = keys.map((k) => [k, objectOfKey(k)] as const).filter((x): x is readonly [string, number] => x[1] !== null)
      a.dev.reserveBelow((numbered.reduce((m, [, n]) => Math.max(m, n), -1) + 1) * OBJECT_BLOCKS)
      const orphansOf = () => {
        const held = this.referencedObjects(a.vol)
        return numbered.filter(([, n]) => !held.has(n) && !(n >= floor && n < ceil)).map(([k]) => k)
      }
      let orphans = orphansOf()
      const listed = new Set(numbered.map(([, n]) => n))
      const missing = [...this.referencedObjects(a.vol)].filter((n) => !listed.has(n)).sort((x, y) => x - y).map(objectKey)
      let removed = 0
      if (!dryRun && orphans.length) {
        await this.fs.sync()
        orphans = orphansOf()
        for (const k of orphans) { await a.dev.store.delete(k); removed++ }
      }
      if (missing.length) this.events.publish('hsm.archive-missing', { tier: t.name, objects: missing.slice(0, 20), count: missing.length, reason: 'the fs points into archive objects that are gone: those ranges read as EIO' }, 'error')
      out.push({ tier: t.name, objects: numbered.length, orphans, removed, missing })
    }
    return { tiers: out }
  }

  /** Object numbers the fs's maps and the premigration records point into in archive location `vol`. */
  private referencedObjects(vol: number): Set<number> {
    const held = new Set<number>()
    const loc = [...this.archives.entries()].find(([, a]) => a.vol === vol)?.[0]
    for (const r of [...this.fs.archivedRuns(vol), ...(loc ? this.premigratedRuns(loc, false) : [])]) {
      for (let o = Math.floor(r.start / OBJECT_BLOCKS); o <= Math.floor((r.start + r.len - 1) / OBJECT_BLOCKS); o++) held.add(o)
    }
    return held
  }

  /**
   * The copies the premigration records on `location` hold; `stale` too: those of
   * records the file has changed since (no use any more, their objects are orphans, but
   * their addresses are never handed out again).
   */
  private premigratedRuns(location: string, stale: boolean): { start: number; len: number }[] {
    return regularFiles(this.fs, '/').flatMap((path) => {
      const p = this.premigrationRecord(path)
      if (p?.location !== location || (!stale && !this.current(this.fs.lookup(path), p))) return []
      return p.runs.map(([, start, len]) => ({ start, len }))
    })
  }

  // ------------------------------------------------------------------ status

  /** Per file, bytes per tier (a volume that is no tier by its own name); totals per tier. */
  status(p: unknown = '/'): { files: { path: string; size: number; pinned: boolean; moving: boolean; home: string | null; bytes: Record<string, number> }[]; totals: Record<string, number> } {
    const root = checkPath(p)
    const tiers = this.tiers()
    const label = (vol: string) => tiers.find((t) => t.volume === vol)?.name ?? vol
    const totals: Record<string, number> = {}
    const files = regularFiles(this.fs, root).map((path) => {
      const f = this.facts(path)
      const bytes: Record<string, number> = {}
      for (const [vol, n] of Object.entries(f.bytesOn)) {
        bytes[label(vol)] = (bytes[label(vol)] ?? 0) + n
        totals[label(vol)] = (totals[label(vol)] ?? 0) + n
      }
      const pre = f.premigrated ? this.premigrationRecord(path) : null
      const premigrated = pre ? { [label(pre.location)]: pre.runs.reduce((a, r) => a + r[2], 0) * BS } : {}
      return { path, size: f.size, pinned: f.pinned, moving: f.moving, home: this.state(path).home ?? null, bytes, premigrated }
    })
    return { files, totals }
  }
}
