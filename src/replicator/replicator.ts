// The replicator on a primary site: finds the groups of a pool at start (each has a
// log volume `repl.GROUP` whose header holds its configuration), opens the fs's
// volumes through taps so their groups see every write, replays each group's log
// before anyone reads, and creates, pauses, resumes and reports groups. At start it
// hears from each group's secondary first: one that took the group over keeps this
// site from serving it. A group taken over on this site (the old secondary) is served
// through a PromotedGroup, which records what changes here. The volumes
// for logs and replicas are placed by placeVolume (policy: mirror when two devices
// have room, else one device).
import { randomUUID } from 'crypto'
import type { Server } from 'net'
import { BlockDev, VsmError } from '../block/blockdev'
import type { EventSink } from '../control/events'
import type { Jobs } from '../control/jobs'
import type { Pool } from '../volume/pool'
import { regionSizeFor } from './bitmap'
import { GroupConfig, PrimaryGroup } from './group'
import { BITMAP_BYTES, LogHeader, readSlots, ReplicationLog } from './log'
import { checkTuning, type Mode, within } from './policy'
import type { ScheduledGroup } from './points'
import { loadReplicaState } from './applier'
import { answerOldPrimaries, PromotedGroup } from './promoted'
import { parseTarget, sshConnect } from './ssh'
import { ReplicatedVolume } from './tap'

export const LOG_PREFIX = 'repl.'
export const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/
export const DEFAULT_LOG_SIZE = 64 << 20
/** How long start waits for each group's secondary to answer before serving (one that took over must be heard first). */
const CONTACT_WAIT_MS = 5_000

export function checkGroupName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !GROUP_NAME.test(name)) throw new VsmError('EINVAL', `bad group name ${JSON.stringify(name)}: letters, digits, _ and -, at most 32`)
}

/**
 * Makes a volume for the replicator: a mirror over the two devices with the most room,
 * else one device. exact: it holds exactly size bytes (a replica matches its primary's
 * volume, whose layout may differ); otherwise size is what it is given.
 */
export async function placeVolume(pool: Pool, name: string, size: number, exact = false): Promise<BlockDev> {
  const devs = pool.listDevices().filter((d) => d.state === 'online').sort((a, b) => b.free - a.free)
  const tries: Array<{ layout: 'mirror' | 'concat'; devices: string[]; copies?: number }> = []
  if (devs.length >= 2) tries.push({ layout: 'mirror', devices: [devs[0].name, devs[1].name], copies: 2 })
  if (devs.length >= 1) tries.push({ layout: 'concat', devices: [devs[0].name] })
  let last: Error = new VsmError('ENOSPC', 'the pool has no devices')
  for (const t of tries) {
    try {
      await pool.createVolume(name, { ...t, size }, { exact })
      return pool.openVolume(name)
    } catch (e) { last = e as Error }
  }
  throw new VsmError('ENOSPC', `no room in the pool for volume ${name} (${size} bytes): ${last.message}; add a device (vsm device add)`)
}

export interface ReplicatorOptions {
  pool: Pool
  /** The home: a site serving a taken-over group answers old primaries on its replica socket. */
  home?: string
  /** A failback asks this site to stop serving: check refuses (open disks, unless forced); go stops the stack and starts it as a secondary. */
  stepDown?: { check(force: boolean): Promise<void>; go(): void }
  /** A failback was agreed: restart the stack, which runs it before the fs mounts. */
  restart?: () => void
  jobs: Jobs
  events: EventSink
  /** Connector override (tests); the default is ssh to the group's target. */
  connect?: (cfg: GroupConfig) => ReturnType<typeof sshConnect>
}

export interface CreateArgs {
  group: string
  volumes: string[]
  target: string
  mode?: Mode
  identity?: string
  knownHosts?: string
  remoteVsm?: string
  logSize?: number
  /** Bytes per second shipping may use. */
  rate?: number
  /** sync-fallback: how long a flush waits for the secondary before the group goes async. */
  syncTimeoutMs?: number
}

export class Replicator {
  private taps = new Map<string, ReplicatedVolume>()
  private groups = new Map<string, PrimaryGroup>()
  private promoted = new Map<string, PromotedGroup>()
  private oldPrimaries: Server | null = null

  private constructor(private readonly opts: ReplicatorOptions) {}

  /**
   * Opens every group's log and replays it onto its volumes before the fs mounts.
   * Refuses a home whose pool holds replicas (a secondary): serving them here would
   * fork them from their primary.
   */
  static async open(opts: ReplicatorOptions): Promise<Replicator> {
    const r = new Replicator(opts)
    try {
      for (const v of opts.pool.listVolumes()) {
        if (!v.name.startsWith(LOG_PREFIX)) continue
        const dev = await opts.pool.openVolume(v.name)
        if (await isReplicaState(dev)) {
          const state = await loadReplicaState(dev)
          if (state?.steppedDown) throw new VsmError('EEXIST', `group ${state.group} stepped down here for a failback: this home is a replication secondary again; start it with vsm up --secondary`)
          if (!state?.takenOver) {
            throw new VsmError('EEXIST', `volume ${v.name} holds the replicas of group ${v.name.slice(LOG_PREFIX.length)}: this home is a replication secondary; start it with vsm up --secondary`)
          }
          const taps = await Promise.all(state.volumes.map((n) => r.tap(n)))
          r.promoted.set(state.group, await PromotedGroup.open(dev, { ...state, takenOver: state.takenOver }, taps))
          opts.events.publish('repl.serving-taken-over', { group: state.group, generation: state.takenOver.generation, takenOverAtSeq: state.takenOver.point })
          continue
        }
        const { log, records } = await ReplicationLog.open(dev)
        const cfg = log.config as unknown as GroupConfig
        const taps = await Promise.all(cfg.volumes.map((n) => r.tap(n)))
        r.groups.set(cfg.group, await PrimaryGroup.open(log, records, taps, r.groupOptions(cfg), opts.jobs))
        opts.events.publish('repl.opened', { group: cfg.group, replayedRecords: records.length })
      }
      if (r.promoted.size && opts.home) {
        r.oldPrimaries = await answerOldPrimaries(opts.home, r.promoted, async (g, force) => {
          if (!opts.stepDown) throw new VsmError('ENOTSUP', 'this site cannot step down')
          await opts.stepDown.check(force)
          g.steppingDown = true
          opts.events.publish('repl.stepping-down', { group: g.name, force, reason: 'the old primary fails back' }, 'warn')
          opts.stepDown.go()
        })
      }
      // before the fs mounts and its disks are served: a secondary that took a group over says so now
      await within(Promise.all([...r.groups.values()].map((g) => g.firstContact)), CONTACT_WAIT_MS)
    } catch (e) {
      await r.close()
      throw e
    }
    return r
  }

  /** The groups as the point scheduler sees them (points.ts). */
  scheduled(): ScheduledGroup[] {
    return [...this.groups.values()].map((g) => ({
      name: g.config.group, schedule: g.config.schedule, takenOver: !!g.config.takenOver,
      pointTaken: (n) => g.pointTaken(n), onSecondary: (n) => g.onSecondary(n), forgetPoints: (ns) => g.forgetPoints(ns),
    }))
  }

  /** Groups whose secondary took over: this site must not serve their volumes (vsm repl failback). */
  takenOver(): string[] { return [...this.groups.values()].filter((g) => g.config.takenOver).map((g) => g.config.group) }

  /** The fs opens its volumes here, so a group made later still sees their writes. */
  async openVolume(name: string): Promise<BlockDev> {
    if (name.startsWith(LOG_PREFIX)) return this.opts.pool.openVolume(name)
    return this.tap(name)
  }

  private async tap(name: string): Promise<ReplicatedVolume> {
    let t = this.taps.get(name)
    if (!t) {
      t = new ReplicatedVolume(name, await this.opts.pool.openVolume(name), () => this.opts.pool.writtenRanges(name))
      this.taps.set(name, t)
    }
    return t
  }

  private groupOptions(cfg: GroupConfig) {
    const target = parseTarget(cfg.target)
    return {
      rate: cfg.rate,
      connect: () => (this.opts.connect ? this.opts.connect(cfg) : sshConnect(target, cfg)),
      onEvent: (event: string, detail: Record<string, unknown>) =>
        this.opts.events.publish(`repl.${event}`, detail, ['disconnected', 'connect-failed', 'logging-to-bitmap', 'resync-failed', 'taken-over', 'split-brain'].includes(event) ? 'warn' : 'info'),
    }
  }

  async create(a: CreateArgs, fsVolumes: string[]): Promise<ReturnType<PrimaryGroup['status']>> {
    checkGroupName(a.group)
    if (this.groups.has(a.group)) throw new VsmError('EEXIST', `group ${a.group} exists`)
    const mode = a.mode ?? 'async'
    checkTuning(mode, a.rate, a.syncTimeoutMs)
    parseTarget(a.target)
    if (!Array.isArray(a.volumes) || !a.volumes.length) throw new VsmError('EINVAL', 'a group needs at least one volume')
    for (const v of a.volumes) {
      if (!fsVolumes.includes(v)) throw new VsmError('EINVAL', `volume ${v} is not a volume of the file system (${fsVolumes.join(', ')})`)
      for (const g of this.groups.values()) if (g.config.volumes.includes(v)) throw new VsmError('EEXIST', `volume ${v} is already in group ${g.config.group}`)
    }
    const logSize = a.logSize ?? DEFAULT_LOG_SIZE
    if (!Number.isSafeInteger(logSize) || logSize < 8 << 20) throw new VsmError('EINVAL', 'the log size must be at least 8M')
    for (const k of ['identity', 'knownHosts', 'remoteVsm'] as const) {
      if (a[k] !== undefined && (typeof a[k] !== 'string' || !a[k])) throw new VsmError('EINVAL', `bad ${k}`)
    }
    const taps = await Promise.all(a.volumes.map((n) => this.tap(n)))
    const cfg: GroupConfig = {
      group: a.group, volumes: a.volumes, target: a.target, mode,
      identity: a.identity, knownHosts: a.knownHosts, remoteVsm: a.remoteVsm, synced: false, paused: false, rate: a.rate, syncTimeoutMs: a.syncTimeoutMs,
      regionSize: regionSizeFor(taps.map((t) => t.size), BITMAP_BYTES),
    }
    const dev = await placeVolume(this.opts.pool, LOG_PREFIX + a.group, logSize)
    const log = await ReplicationLog.format(dev, randomUUID(), cfg as unknown as Record<string, unknown>)
    const g = await PrimaryGroup.create(log, taps, this.groupOptions(cfg), this.opts.jobs)
    this.groups.set(a.group, g)
    this.opts.events.publish('repl.created', { group: a.group, volumes: a.volumes, target: a.target, mode })
    return g.status()
  }

  get(name: string): PrimaryGroup {
    const g = this.groups.get(name)
    if (!g) throw new VsmError('ENOENT', `no replication group named ${JSON.stringify(name)}`)
    return g
  }

  list() { return [...[...this.groups.values()].map((g) => g.status()), ...[...this.promoted.values()].map((g) => g.status())] }

  /** The status of a group, primary or taken over here. */
  statusOf(name: string) { return this.promoted.get(name)?.status() ?? this.get(name).status() }

  /** Asks the site that took a group over to step down, then restarts this site's stack, which copies back and serves. */
  async failback(name: string, force: boolean): Promise<{ group: string; failingBack: true }> {
    const g = this.get(name)
    if (!this.opts.restart) throw new VsmError('ENOTSUP', 'this site cannot restart its stack')
    await g.requestFailback(force)
    this.opts.restart()
    return { group: name, failingBack: true }
  }

  /** Starts an online comparison of a group's volumes with its secondary, as a job. */
  verify(name: string): { job: number } {
    const g = this.get(name)
    return { job: this.opts.jobs.start('repl-verify', (signal, progress) => g.verify(signal, progress), { description: `verify group ${name}` }) }
  }

  async close(): Promise<void> {
    await new Promise<void>((res) => (this.oldPrimaries ? this.oldPrimaries.close(() => res()) : res()))
    for (const g of this.groups.values()) await g.close()
    this.groups.clear()
    for (const g of this.promoted.values()) await g.close()
    this.promoted.clear()
  }
}

/** A `repl.*` volume holds either a log (primary) or a replica state (secondary); their headers differ. */
export async function isReplicaState(dev: BlockDev): Promise<boolean> {
  const h = await readSlots<LogHeader & { durable?: number }>(dev)
  return h !== null && typeof h.durable === 'number' && h.tailLsn === undefined
}
