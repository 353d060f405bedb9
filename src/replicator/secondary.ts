// A secondary site (`vsm up --secondary`): a pool and no fs, the control socket for
// status and shutdown, and <home>/replica.sock, where `vsm replica serve` (started by
// the primary over SSH) hands over the replication wire. On a group's first hello it
// makes the replica volumes to match the primary's, plus `repl.GROUP` holding the
// replica state (which primary log it follows, the durable position); later hellos
// must come from the same log. One applier per group lives as long as the daemon, so
// a reconnecting primary resumes exactly where the secondary stands. The store of a
// group's resync snapshot (`repl-snap.GROUP`, as large as its replicas) is made at its
// first bitmap resync; without room for it the resync is refused and the replicas
// stay as they are.
import type { Server } from 'net'
import { randomUUID } from 'crypto'
import { join } from 'path'
import type { Logger } from 'pino'
import { BlockDev, VsmError } from '../block/blockdev'
import type { Events } from '../control/events'
import { dispatch } from '../control/dispatch'
import { Jobs } from '../control/jobs'
import { ControlServer } from '../control/server'
import { openSitePool } from '../daemon/stack'
import { VERSION } from '../daemon/options'
import type { Pool } from '../volume/pool'
import { Applier, initReplicaState, ReplicaState, loadReplicaState, rollbackResync } from './applier'
import { readSlots, writeSlot } from './log'
import { PRIMARY_SILENT_MS } from './policy'
import { FailbackSource } from './promoted'
import { checkGroupName, GROUP_NAME, LOG_PREFIX, placeVolume } from './replicator'
import { snapshotStoreSize } from './snapshot'
import { listenReplicaSocket, SecondaryLink, ToSecondary } from './wire'

const STATE_SIZE = 1 << 20
export const SNAPSHOT_PREFIX = 'repl-snap.'

export interface SecondaryOptions {
  home: string
  mount: string
  defaultDeviceSize: number
  log: Logger
  events: Events
  onShutdown: () => void
  /** A group was taken over: this daemon is to serve the home as a primary site (stop this, start the stack). */
  onPromote: () => void
}

interface ReplicaGroup { applier: Applier; volumes: string[]; logId: string; connected: boolean; since: number }

export class SecondarySite {
  private groups = new Map<string, ReplicaGroup>()
  private sources = new Map<string, FailbackSource>()
  private opening = new Map<string, Promise<ReplicaGroup>>()
  private startedAt = Date.now()
  private replicaServer: Server | null = null
  private links = new Set<SecondaryLink>()

  private constructor(private readonly opts: SecondaryOptions, readonly pool: Pool, readonly server: ControlServer) {}

  static async start(opts: SecondaryOptions): Promise<SecondarySite> {
    const pool = await openSitePool(opts, false)
    try {
      const taken = (await takenOverGroups(pool)).filter((t) => !t.steppedDown).map((t) => t.group)
      if (taken.length) throw new VsmError('EEXIST', `group ${taken[0]} was taken over on this site, which serves it now: start it with vsm up (without --secondary)`)
    } catch (e) {
      await pool.close()
      throw e
    }
    const jobs = new Jobs({ events: opts.events })
    await pool.useJobs(jobs)
    const server = new ControlServer({ socketPath: join(opts.home, 'vsm.sock'), version: VERSION, jobs, events: opts.events, log: (msg, err) => opts.log.warn({ err }, msg) })
    const site = new SecondarySite(opts, pool, server)
    try {
      server.register('S', dispatch({
        status: () => site.status(),
        shutdown: () => { setImmediate(opts.onShutdown); return { stopping: true } },
      }))
      server.register('R', dispatch({
        'repl.status': async ({ group }) => (group === undefined ? site.list() : [await site.groupStatus(String(group))]),
        'repl.takeover': ({ group, force }) => site.takeover(group, force === true),
      }))
      await server.listen()
      await site.listenReplica()
    } catch (e) {
      await site.stop()
      throw e
    }
    opts.events.publish('daemon.started', { home: opts.home, role: 'secondary', pid: process.pid, version: VERSION })
    return site
  }

  private async listenReplica(): Promise<void> {
    this.replicaServer = await listenReplicaSocket(this.opts.home, (link) => this.accept(link))
  }

  private accept(link: SecondaryLink): void {
    this.links.add(link)
    link.onClose(() => this.links.delete(link))
    link.onMessage((m) => {
      if (m.t !== 'hello') { link.close('expected hello'); return }
      this.sourceFor(m.group).then((src) => {
        if (src) { src.serve(link, m.logId); return }
        this.serveReplica(link, m)
      }, (e) => { link.send({ t: 'error', code: (e as VsmError).code ?? 'EIO', message: (e as Error).message }); link.close('refused') })
    })
  }

  /** A group stepped down here for a failback: its source, until the old primary has every changed range. */
  private async sourceFor(group: string): Promise<FailbackSource | null> {
    const have = this.sources.get(group)
    if (have) return have
    const stateName = LOG_PREFIX + group
    if (!GROUP_NAME.test(group) || !this.pool.listVolumes().some((v) => v.name === stateName)) return null
    const stateDev = await this.pool.openVolume(stateName)
    const state = await loadReplicaState(stateDev)
    if (!state?.steppedDown || !state.takenOver) return null
    const volumes = await Promise.all(state.volumes.map((v) => this.pool.openVolume(v)))
    const src = await FailbackSource.open(stateDev, { ...state, takenOver: state.takenOver }, volumes, () => {
      this.sources.delete(group)
      this.opts.events.publish('repl.failback-complete', { group, reason: 'the old primary has every range changed here; this site follows its log again' })
    })
    this.sources.set(group, src)
    return src
  }

  private serveReplica(link: SecondaryLink, m: Extract<ToSecondary, { t: 'hello' }>): void {
      this.groupFor(m).then((g) => {
        g.connected = true
        g.since = Date.now()
        link.onClose(() => { g.connected = false })
        g.applier.attach(link)
        this.opts.events.publish('repl.primary-connected', { group: m.group, durable: g.applier.durableSeq })
      }, (e) => {
        link.send({ t: 'error', code: (e as VsmError).code ?? 'EIO', message: (e as Error).message })
        this.opts.events.publish('repl.primary-refused', { group: m.group, reason: (e as Error).message }, 'warn')
        link.close('refused')
      })
  }

  /** The group's applier; on first contact, its replica volumes and state are made. */
  private groupFor(h: Extract<ToSecondary, { t: 'hello' }>): Promise<ReplicaGroup> {
    const have = this.groups.get(h.group)
    if (have) {
      if (have.logId !== h.logId) return Promise.reject(new VsmError('EEXIST', `group ${h.group} here follows another primary log (${have.logId}, not ${h.logId})`))
      return Promise.resolve(have)
    }
    let p = this.opening.get(h.group)
    if (!p) {
      p = this.openGroup(h).finally(() => this.opening.delete(h.group))
      this.opening.set(h.group, p)
    }
    return p
  }

  private async openGroup(h: Extract<ToSecondary, { t: 'hello' }>): Promise<ReplicaGroup> {
    checkGroupName(h.group)
    const stateName = LOG_PREFIX + h.group
    const exists = (n: string) => this.pool.listVolumes().some((v) => v.name === n)
    let stateDev: BlockDev
    let state
    if (exists(stateName)) {
      stateDev = await this.pool.openVolume(stateName)
      state = await loadReplicaState(stateDev)
      if (!state) throw new VsmError('EIO', `volume ${stateName} holds no replica state`)
      if (state.logId !== h.logId) throw new VsmError('EEXIST', `group ${h.group} here follows another primary log (${state.logId}, not ${h.logId})`)
      if (state.takenOver) throw new VsmError('EEXIST', `group ${h.group} was taken over here (generation ${state.takenOver.generation}): this site no longer follows its old primary`)
      if (state.detached) throw new VsmError('EEXIST', `the replicas of group ${h.group} here no longer follow the primary: ${state.detached}`)
    } else {
      for (const v of h.volumes) if (exists(v.name)) throw new VsmError('EEXIST', `volume ${v.name} already exists here and is not a replica of group ${h.group}`)
      for (const v of h.volumes) await placeVolume(this.pool, v.name, v.size, true)
      stateDev = await placeVolume(this.pool, stateName, STATE_SIZE)
      state = await initReplicaState(stateDev, { logId: h.logId, group: h.group, volumes: h.volumes.map((v) => v.name) })
      this.opts.events.publish('repl.replicas-created', { group: h.group, volumes: h.volumes })
    }
    const volumes: BlockDev[] = []
    for (const v of h.volumes) {
      const info = this.pool.volumeInfo(v.name)
      if (info.size !== v.size) throw new VsmError('EINVAL', `replica ${v.name} is ${info.size} bytes, the primary's ${v.size}`)
      volumes.push(await this.pool.openVolume(v.name))
    }
    const snapName = SNAPSHOT_PREFIX + h.group
    const applier = new Applier(volumes, stateDev, state, {
      // a mirror carves its checksum table (under 1/512 of it) out of the size asked for: ask for that much more
      snapshotStore: async () => {
        if (exists(snapName)) return this.pool.openVolume(snapName)
        const size = snapshotStoreSize(volumes.map((v) => v.size))
        return placeVolume(this.pool, snapName, size + Math.ceil(size / 256) + (1 << 20))
      },
      onEvent: (event, detail) => this.opts.events.publish(`repl.${event}`, { group: h.group, ...detail }, event === 'resync-refused' ? 'warn' : 'info'),
    })
    const g: ReplicaGroup = { applier, volumes: h.volumes.map((v) => v.name), logId: h.logId, connected: false, since: 0 }
    this.groups.set(h.group, g)
    return g
  }

  private primaryConnected(g: ReplicaGroup): boolean { return g.connected && g.applier.silentMs < PRIMARY_SILENT_MS }

  /**
   * Promotes this site for a group: the applier stops (what it applied is made
   * durable), an open bitmap resync is rolled back to its snapshot (the last
   * consistent image), and the replica state records the takeover under a new
   * generation id and the seq it holds; then the daemon serves the home as a primary.
   * Refused while the primary is connected unless forced: both would write.
   */
  async takeover(name: unknown, force: boolean) {
    checkGroupName(name)
    const stateName = LOG_PREFIX + name
    if (!this.pool.listVolumes().some((v) => v.name === stateName)) throw new VsmError('ENOENT', `no replication group named ${JSON.stringify(name)}`)
    const g = this.groups.get(name)
    if (g && this.primaryConnected(g) && !force) throw new VsmError('EBUSY', `the primary of group ${name} is connected and replicating: stop it (or cut the link) first, or use --force (both sites then write: split brain)`)
    if (g) {
      this.groups.delete(name)
      await g.applier.close()
    }
    const stateDev = await this.pool.openVolume(stateName)
    let state = await loadReplicaState(stateDev)
    if (!state) throw new VsmError('EIO', `volume ${stateName} holds no replica state`)
    if (state.takenOver) throw new VsmError('EEXIST', `group ${name} was already taken over here`)
    let rolledBack: { point: number; restoredBytes: number } | null = null
    if (state.resync) {
      const volumes = await Promise.all(state.volumes.map((v) => this.pool.openVolume(v)))
      rolledBack = await rollbackResync(stateDev, volumes, await this.pool.openVolume(SNAPSHOT_PREFIX + name))
      state = (await loadReplicaState(stateDev))!
    }
    const takenOver = { generation: randomUUID(), parent: state.logId, point: state.durable, at: Date.now() }
    const next: ReplicaState = { ...state, takenOver, counter: state.counter + 1 }
    await writeSlot(stateDev, next)
    this.opts.events.publish('repl.taken-over', { group: name, ...takenOver, rolledBack, reason: 'vsm repl takeover' }, 'warn')
    setImmediate(this.opts.onPromote)
    return { group: name, ...takenOver, rolledBack }
  }

  async groupStatus(name: string) {
    const g = this.groups.get(name)
    // resyncPoint: during a bitmap resync the replicas are consistent only in the snapshot, as of that seq
    if (g) return { group: name, role: 'secondary', state: 'secondary', connected: this.primaryConnected(g), silentSeconds: g.connected ? g.applier.silentMs / 1000 : null, volumes: g.volumes, durableSeq: g.applier.durableSeq, appliedSeq: g.applier.appliedSeq, appliedRecords: g.applier.applied, resyncPoint: g.applier.resyncPoint }
    if (!this.pool.listVolumes().some((v) => v.name === LOG_PREFIX + name)) throw new VsmError('ENOENT', `no replication group named ${JSON.stringify(name)}`)
    const state = await loadReplicaState(await this.pool.openVolume(LOG_PREFIX + name))
    return { group: name, role: 'secondary', state: 'secondary', connected: false, volumes: state?.volumes ?? [], durableSeq: state?.durable ?? 0, appliedSeq: state?.durable ?? 0, appliedRecords: 0, resyncPoint: state?.resync?.point ?? null }
  }

  list() {
    return Promise.all(this.pool.listVolumes().filter((v) => v.name.startsWith(LOG_PREFIX)).map((v) => this.groupStatus(v.name.slice(LOG_PREFIX.length))))
  }

  async status() {
    return {
      version: VERSION, pid: process.pid, home: this.opts.home, role: 'secondary',
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      devices: this.pool.listDevices(), volumes: this.pool.listVolumes(), groups: await this.list(),
    }
  }

  async stop(): Promise<void> {
    await this.server.close().catch((err) => this.opts.log.error({ err }, 'closing control socket'))
    for (const l of this.links) l.close('secondary stopping')
    await new Promise<void>((r) => (this.replicaServer ? this.replicaServer.close(() => r()) : r()))
    for (const g of this.groups.values()) await g.applier.close().catch((err) => this.opts.log.error({ err }, 'closing an applier'))
    await this.pool.close()
    this.opts.events.publish('daemon.stopped', { home: this.opts.home, role: 'secondary' })
  }
}

/** The groups whose replicas in this pool were taken over (their state volume says so). */
export async function takenOverGroups(pool: Pool): Promise<ReplicaState[]> {
  const out: ReplicaState[] = []
  for (const v of pool.listVolumes()) {
    if (!v.name.startsWith(LOG_PREFIX)) continue
    const s = await readSlots<ReplicaState>(await pool.openVolume(v.name))
    if (s?.takenOver && typeof s.durable === 'number') out.push(s)
  }
  return out
}
