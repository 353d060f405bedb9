// Composes the running stack, bottom to top: pool (devices, volumes) → fs on its
// volumes → virtual disks → FUSE view, with the control socket routing extended
// commands to the component that owns them. Also creates the embedded default pool,
// and reports through the event sink what start found and recovered.
import { promises as fsp } from 'fs'
import { join } from 'path'
import type { Logger } from 'pino'
import { VsmError } from '../block/blockdev'
import { ControlServer } from '../control/server'
import type { Events } from '../control/events'
import { Jobs } from '../control/jobs'
import { FileSystem } from '../fs'
import { mountFromVolumes, VolumeSource } from '../fs/discover'
import { Pool, PoolOptions } from '../volume/pool'
import { DiskManager } from '../virtualizer/disks'
import { FuseView } from '../virtualizer/fuse-view'
import { VERSION, type FuseBindingName } from './options'
import { WriteGate } from '../virtualizer/gate'
import { diskCommands, standardDiskHandler } from '../virtualizer/commands'
import { dispatch } from '../control/dispatch'
import { fsCommands } from '../fs/commands'
import { resumeFsJobs } from '../fs/move'
import { Hsm } from '../hsm/hsm'
import { hsmCommands } from '../hsm/commands'
import { volumeCommands } from '../volume/commands'
import { IoMeters, MeteredDev } from '../metrics/io'
import { Metrics } from '../metrics/metrics'
import { Listen, MetricsServer } from '../metrics/http'
import { attention } from './attention'
import { hostSpace } from './host-space'
import { clearStaleMount } from './mounts'
import { beginMaking, doneMaking, undoUnfinished } from './first-start'
import { authorizer } from './authz'
import { diskPath } from '../virtualizer/paths'
import { Replicator } from '../replicator/replicator'
import { replCommands } from '../replicator/commands'
import { PointKeeper, type PointDisks } from '../replicator/points'

export interface StackOptions {
  home: string
  mount: string
  /** Size of each of the two backing files of the embedded default pool. */
  defaultDeviceSize: number
  /** Other users may use the view; the kernel checks each file's owner and mode. */
  allowOther?: boolean
  /** Members of this group (gid) may use the control socket, each command authorised by its credentials. */
  socketGroup?: number
  /** The FUSE binding to serve the view with (native by default). */
  fuse?: FuseBindingName
  log: Logger
  /** The daemon's one event sink: every component publishes its state changes here. */
  events: Events
  /** Where to serve Prometheus metrics (a loopback address); none: metrics are off and nothing is counted. */
  metrics?: Listen
  /** Called when a client asks the daemon to stop. */
  onShutdown: () => void
  /** A failback made this site step down: stop the stack and serve the home as a replication secondary. */
  onStepDown?: () => void
  /** A failback finished here: start the stack again, serving the fs. */
  onRestart?: () => void
}

const DEFAULT_VOLUME = 'vol0'
const RELEASE_GRACE_MS = 2000
const HSM_RUN_EVERY_MS = 3_600_000
/** A replication point thaws its disks itself; this only bounds a freeze whose point hung. */
const POINT_FREEZE_MS = 60_000

export class Stack {
  private startedAt = Date.now()
  /** host:port metrics are served on, when they are. */
  private metricsAt: string | null = null
  private metricsServer: MetricsServer | null = null
  private constructor(
    private readonly opts: StackOptions,
    readonly pool: Pool,
    readonly repl: Replicator,
    readonly fs: FileSystem,
    readonly disks: DiskManager,
    private readonly gate: WriteGate,
    readonly view: FuseView,
    readonly server: ControlServer,
    /** Per disk and volume I/O counters; null when metrics are off. */
    private readonly meters: IoMeters | null,
    private readonly hsm: Hsm,
    private readonly points: PointKeeper,
    /** Groups taken over by their secondary: the view is not mounted and only status, shutdown and the replicator answer. */
    private readonly standby: string[],
  ) {}

  static async start(opts: StackOptions): Promise<Stack> {
    const { home, log, events } = opts
    const pool = await openSitePool(opts, true)
    // before any volume opens, so rebuilds and reshapes resumed at open run where `vsm job` sees them
    const jobs = new Jobs({ events, store: join(home, 'jobs.json') })
    await pool.useJobs(jobs)
    // On a failed start, undo what was brought up so far (top down) before reporting.
    const undo: Array<() => Promise<unknown>> = [() => pool.close()]
    const meters = opts.metrics ? new IoMeters() : null
    try {
      // before the fs opens its volumes: each replication group's log is replayed onto them first
      let stack: Stack | undefined
      const repl = await Replicator.open({
        pool, jobs, events, home,
        stepDown: {
          check: async (force) => {
            const open = force || !stack ? [] : await stack.openDisks()
            if (open.length) throw new VsmError('EBUSY', `disks are open on the site that took over: ${open.map((d) => d.path).join(', ')}; stop their users, or fail back with --force`)
          },
          go: () => setImmediate(() => opts.onStepDown?.()),
        },
        restart: () => setImmediate(() => opts.onRestart?.()),
      })
      // a group whose secondary took it over: its volumes hold the fs, which this site must not serve until failback
      const standby = repl.takenOver()
      undo.unshift(() => repl.close())
      const fs = await openFs(pool, poolVolumes(pool, repl, meters), events)
      undo.unshift(() => fs.close())
      await doneMaking(home)
      fs.useEvents(events)
      reportRecovery(pool, fs, events)
      // archived ranges of files are readable once their archives are attached: before the view serves
      const hsm = new Hsm(fs, jobs, events)
      if (!standby.length) hsm.attachArchives()
      undo.unshift(() => hsm.close())
      if (clearStaleMount(opts.mount)) events.publish('daemon.stale-mount-removed', { mount: opts.mount, reason: 'left by a daemon that did not stop cleanly' }, 'warn')
      let view: FuseView | undefined
      let server: ControlServer | undefined
      const gate = new WriteGate((ino) => events.publish('disk.thawed', { ino, reason: 'the freeze timed out' }, 'warn'))
      const disks = new DiskManager({
        fs, gate, jobs, events,
        defaultVolume: (path) => fs.volumes()[fs.placementFor(path)].name,
        openCount: (p) => view?.openCount(p) ?? 0,
        writerCount: (p) => view?.writerCount(p) ?? 0,
        changed: async (p, how) => { await view?.changed(p, how) },
        volumeIndex: async (name) => {
          pool.volumeInfo(name) // throws ENOENT for an unknown volume
          try { return fs.volumeIndex(name) } catch (e) {
            throw new VsmError('ENOTSUP', `${(e as Error).message}; add it with: vsm fs add-volume ${name}`)
          }
        },
      })
      view = new FuseView(fs, opts.mount, gate, (name, args) => server!.invoke(name, args), log, meters, { allowOther: !!opts.allowOther, binding: opts.fuse ?? 'native' }, events)
      if (standby.length) events.publish('daemon.standby', { groups: standby, reason: 'the secondary took these groups over: their disks are not served here (vsm repl status)' }, 'warn')
      else {
        await view.mount()
        undo.unshift(() => view!.unmount())
      }
      server = new ControlServer({
        socketPath: join(home, 'vsm.sock'), version: VERSION, jobs, events, log: (msg, err) => log.warn({ err }, msg),
        socketGroup: opts.socketGroup, authorize: authorizer({ ownerOf: (p) => fs.getattr(diskPath(p)) }),
      })
      const points = new PointKeeper(pointDisks(disks, fs), () => repl.scheduled(), {
        taken: (group, point, list, deleted) => events.publish('repl.point-taken', { group, point, disks: list, deleted }),
        failed: (group, reason) => events.publish('repl.point-failed', { group, reason }, 'warn'),
      })
      stack = new Stack(opts, pool, repl, fs, disks, gate, view, server, meters, hsm, points, standby)
      stack.registerCommands()
      await server.listen()
      if (!standby.length) {
        await stack.resumeFsJobs()
        stack.startHsm()
        points.start()
      }
      if (opts.metrics) {
        await stack.serveMetrics(opts.metrics)
        undo.unshift(() => stack.metricsServer!.close())
      }
      events.publish('daemon.started', { home, mount: opts.mount, pid: process.pid, version: VERSION })
      return stack
    } catch (err) {
      for (const step of undo) await step().catch((e) => log.error({ err: e }, 'undoing a failed start'))
      throw err
    }
  }

  /** Flush everything, then take the stack down top to bottom. */
  /** The step stop() is at, for the daemon's stop watchdog to name one that hangs. */
  stopStep = 'not stopping'

  async stop(): Promise<void> {
    const { log } = this.opts
    const step = (name: string) => { this.stopStep = name }
    step('closing the metrics endpoint')
    await this.metricsServer?.close().catch((err) => log.error({ err }, 'closing the metrics endpoint'))
    this.hsm.stop()
    step('waiting for a replication point under way')
    await this.points.stop()
    step('closing the control socket')
    await this.server.close().catch((err) => log.error({ err }, 'closing control socket'))
    step('final sync')
    await this.fs.sync().catch((err) => log.error({ err }, 'final sync'))
    step('unmounting the view')
    await this.view.unmount().catch((err) => log.error({ err }, 'unmount'))
    step('closing the fs')
    await this.fs.close()
    step('closing the archives')
    await this.hsm.close()
    step('closing replication')
    await this.repl.close()
    step('closing the pool')
    await this.pool.close()
    step('stopped')
    this.opts.events.publish('daemon.stopped', { home: this.opts.home, mount: this.opts.mount })
  }

  private async serveMetrics(at: Listen): Promise<void> {
    const metrics = new Metrics(this.meters!, {
      volumes: () => this.pool.listVolumes(),
      devices: () => this.pool.listDevices(),
      jobs: () => this.server.jobs.list(),
      fs: () => this.fsSpace(),
      diskExists: (path) => { try { return !!this.disks.show(path) } catch { return false } },
    })
    this.metricsServer = new MetricsServer(metrics, (err) => this.opts.log.warn({ err }, 'metrics endpoint'))
    const bound = await this.metricsServer.listen(at)
    this.metricsAt = `${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`
    this.opts.events.publish('metrics.listening', { address: this.metricsAt, path: '/metrics' })
  }

  private fsSpace() {
    const s = this.fs.statfs()
    return { size: s.blocks * s.bsize, free: s.bavail * s.bsize, files: s.files - s.ffree }
  }

  async status() {
    const devices = this.pool.listDevices(), volumes = this.pool.listVolumes(), jobs = this.server.jobs.list()
    const hosts = await hostSpace(devices)
    return {
      version: VERSION, pid: process.pid, home: this.opts.home, mount: this.standby.length ? null : this.opts.mount, fuse: this.view.bindingName,
      // a process-wide count (the addon's): what a test or a profile compares before and after
      fuseEarlyWrites: this.view.earlyWrites,
      ...(this.standby.length ? { standby: { groups: this.standby, next: 'vsm repl status' } } : {}),
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      devices, volumes,
      // a stopped fs answers nothing (fs.broken): status must still say what is wrong
      fs: { volumes: this.fs.volumeNames(), ...(this.fs.brokenBy ? { unusable: this.fs.brokenBy } : this.fsSpace()) },
      jobs: jobs.filter((j) => j.state !== 'concluded'),
      attention: attention(devices, volumes, jobs, hosts, this.fs.brokenBy),
      disks: this.fs.brokenBy ? null : this.disks.list().length,
      metrics: this.metricsAt,
    }
  }

  /**
   * Disks with open handles in the view. The kernel sends FUSE's release after close()
   * has returned, so a user that has just closed (QEMU exiting, losetup -d) is given a
   * moment to be seen gone before it counts as open.
   */
  private async openDisks() {
    const deadline = Date.now() + RELEASE_GRACE_MS
    for (;;) {
      const open = this.disks.list().filter((d) => d.open > 0)
      if (!open.length || Date.now() >= deadline) return open
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  /** fs moves and remove-volumes a crash or shutdown interrupted run again. */
  private async resumeFsJobs() {
    for (const r of await resumeFsJobs(this.fs, this.server.jobs)) {
      if (r.job !== undefined) this.opts.events.publish('fs.job-resumed', { what: r.what, job: r.job, reason: 'it was under way when the daemon stopped' })
      else this.opts.events.publish('fs.job-dropped', { what: r.what, error: r.error, reason: 'it was under way when the daemon stopped and cannot run now' }, 'warn')
    }
  }

  /** Moves a crash interrupted run again; the policy runs every hour (and on demand: vsm hsm run). */
  private startHsm() {
    for (const r of this.hsm.resume()) this.opts.events.publish('hsm.resumed', { path: r.path, job: r.job, reason: 'a migration or recall was under way when the daemon stopped' })
    this.hsm.every(HSM_RUN_EVERY_MS)
  }

  /** Each component answers the commands of its own type byte (seed 004, Fig. 3). */
  private registerCommands() {
    this.server.register('S', dispatch({
      status: () => this.status(),
      shutdown: async ({ force }) => {
        // Unmounting under an open disk gives its user ENOTCONN: a running guest loses its disk.
        const open = force ? [] : await this.openDisks()
        if (open.length) {
          throw new VsmError('EBUSY', `disks are open: ${open.map((d) => `${d.path} (${d.open} handle${d.open > 1 ? 's' : ''})`).join(', ')}; stop their users first or use vsm down --force`)
        }
        setImmediate(this.opts.onShutdown)
        return { stopping: true }
      },
    }))
    this.server.register('R', dispatch(replCommands(this.repl, () => this.fs.volumeNames(), () => this.disks.list().map((d) => ({ path: d.path, extents: this.disks.map(d.path).extents })),
      (group) => this.points.points(this.repl.scheduled().find((g) => g.name === group)!))))
    if (this.standby.length) return
    this.server.register('V', dispatch(diskCommands(this.disks)))
    this.server.register('L', dispatch(volumeCommands(this.pool)))
    this.server.register('F', dispatch(fsCommands(this.fs, poolVolumes(this.pool, this.repl, this.meters), this.server.jobs)))
    this.server.register('H', dispatch(hsmCommands(this.hsm)))
    this.server.registerStandard(standardDiskHandler(this.fs, this.gate, this.meters))
  }
}

/** A replication point's freeze, snapshot and thaw are the virtualizer's own commands. */
function pointDisks(disks: DiskManager, fs: FileSystem): PointDisks {
  return {
    list: () => disks.list().map((d) => d.path),
    freeze: async (p) => { await disks.freeze(p, POINT_FREEZE_MS) },
    thaw: (p) => { disks.thaw(p) },
    snapshot: async (p, name) => { await disks.snapshotCreate(p, name) },
    snapshots: (p) => disks.snapshotList(p).map((s) => s.name),
    deleteSnapshot: async (p, name) => { await disks.snapshotDelete(p, name) },
    sync: () => fs.sync(),
  }
}

/**
 * Crash recovery at start: what the fs journal replay did (all zero after a clean stop),
 * and the volumes not healthy. A volume's own recovery (resync, journal replay) is
 * published by the pool as it opens the volume.
 */
function reportRecovery(pool: Pool, fs: FileSystem, events: Events): void {
  const { records, ops, bytes } = fs.replayed
  events.publish('fs.mounted', { replayedRecords: records, replayedOps: ops, replayedBytes: bytes, reason: records ? 'unclean stop: journal replayed' : 'clean' })
  for (const v of pool.listVolumes()) {
    if (v.state !== 'healthy') {
      events.publish(`volume.${v.state}`, { volume: v.name, members: v.members.filter((m) => m.state !== 'ok').map((m) => ({ device: m.device, state: m.state, reason: m.reason })) }, v.state === 'failed' ? 'error' : 'warn')
    }
  }
}

/** The pool's volumes as the fs sees them: by name (ENOENT for an unknown one), counted where the fs meets the volume layer. */
function poolVolumes(pool: Pool, repl: Replicator, meters: IoMeters | null): VolumeSource {
  return {
    names: () => pool.listVolumes().map((v) => v.name),
    open: async (name) => {
      pool.volumeInfo(name)
      const v = await repl.openVolume(name)
      return meters ? new MeteredDev(v, meters.volume(name)) : v
    },
  }
}

/**
 * The fs is wherever its superblock is among the pool's volumes (never a side file's
 * say). Only a pool with no trace of an fs on any volume gets a new one, on the
 * default volume: the window between making the default pool and its fs.
 */
async function openFs(pool: Pool, volumes: VolumeSource, events: Events): Promise<FileSystem> {
  const found = await mountFromVolumes(volumes)
  if (found) return found
  if (!pool.listVolumes().some((v) => v.name === DEFAULT_VOLUME)) {
    throw new VsmError('ENOENT', `no vsm file system on any volume of the pool and no ${DEFAULT_VOLUME} to make one on: this home was not made by vsm up`)
  }
  events.publish('fs.created', { volume: DEFAULT_VOLUME, reason: 'no file system on any volume of the pool' })
  const vol = await volumes.open(DEFAULT_VOLUME)
  await FileSystem.mkfs([vol], { volumeNames: [DEFAULT_VOLUME] })
  return FileSystem.mount([vol], { volumeNames: [DEFAULT_VOLUME] })
}

/**
 * The home's pool, made when there is none: two sparse backing files, with a mirrored
 * volume over them for the fs (a replication secondary leaves them empty: its replicas
 * are made to match the primary's volumes).
 */
export async function openSitePool(opts: Pick<StackOptions, 'home' | 'mount' | 'defaultDeviceSize' | 'events'>, withVolume: boolean): Promise<Pool> {
  const { home, events } = opts
  await fsp.mkdir(home, { recursive: true, mode: 0o700 })
  let pool: Pool
  const undone = await undoUnfinished(home)
  if (undone.length) events.publish('pool.unfinished-removed', { home, removed: undone, reason: 'an earlier vsm up stopped while making the default pool; making it again' }, 'warn')
  if (!(await Pool.exists(home))) {
    await beginMaking(home)
    pool = await createDefaultPool(home, opts.defaultDeviceSize, { protectedPaths: [opts.mount] }, withVolume)
    events.publish('pool.created', { home, devices: pool.listDevices().map((d) => d.name), volumes: pool.listVolumes().map((v) => v.name), deviceSize: opts.defaultDeviceSize, reason: 'no pool in the home: the embedded default' })
    if (!withVolume) await doneMaking(home)
  } else {
    pool = await Pool.open(home, { protectedPaths: [opts.mount] })
  }
  // the pool publishes what its assembly found (devices missing, members failed) through here
  pool.useEvents(events)
  return pool
}

/** Two sparse backing files and (withVolume) a mirrored volume over them: the embedded default. */
async function createDefaultPool(home: string, deviceSize: number, opts: PoolOptions, withVolume: boolean): Promise<Pool> {
  await fsp.mkdir(join(home, 'devices'), { recursive: true })
  const pool = await Pool.create(home, opts)
  await pool.addDevice('d0', join(home, 'devices', 'd0.img'), deviceSize)
  await pool.addDevice('d1', join(home, 'devices', 'd1.img'), deviceSize)
  if (!withVolume) return pool
  const free = Math.min(...pool.listDevices().map((d) => d.free))
  await pool.createVolume(DEFAULT_VOLUME, { layout: 'mirror', devices: ['d0', 'd1'], size: free, copies: 2 })
  return pool
}
