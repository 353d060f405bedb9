// A pool: the devices in one home directory and the volumes built on them. This is its
// public face: create and open (assembly.ts), devices added and removed, volumes created,
// listed and opened, and the operations of its parts: failures and member changes
// (failure.ts), rebuilds (rebuild.ts), grow/move/relayout (relayout.ts), scrub
// (scrub.ts). Every config change goes through one store (store.ts); each layout's
// planning and opening is the driver table (layouts.ts). Mutations are serialized; a
// rejected request throws before anything is written. Every state change is published
// through one sink (useEvents), which the daemon logs and streams; events before it is
// given are held and handed over then.
import { promises as fsp } from 'fs'
import * as path from 'path'
import { randomUUID } from 'crypto'
import { BlockDev, VsmError } from '../block/blockdev'
import { openDevice } from './device'
import { MiB, RESERVED_BYTES, readLabel, wipeLabel } from './label'
import { DeviceBitmap } from './bitmap'
import { DeviceConfig, PoolConfig, VolumeSpec, checkName, checkSize, emptyConfig } from './config'
import { Jobs } from '../control/jobs'
import type { EventSink } from '../control/events'
import { probeContents } from './probe'
import { ConfigVersion } from './store'
import { planExactly, planVolume } from './layouts'
import { PoolCore, DeviceInfo, VolumeInfo, PoolOptions, errMsg, stopJob } from './core'
import { assemble, findConfig, poolExists } from './assembly'
import { offlineDevice, onlineDevice, replaceMember } from './failure'
import { startRebuild } from './rebuild'
import { ReshapeChange, abortReshape, reshapeVolume, runReshape } from './relayout'
import { scrubVolume } from './scrub'

export type { DeviceInfo, MemberInfo, VolumeInfo, RebuildInfo, PoolOptions } from './core'
export type { ReshapeChange } from './relayout'

async function exists(p: string): Promise<boolean> {
  try { await fsp.stat(p); return true } catch { return false }
}

export class Pool {
  private readonly core: PoolCore
  /** Devices seen at assembly but not used, and why (another pool's label). */
  refused: { path: string; reason: string }[] = []

  private constructor(readonly home: string, cfg: PoolConfig, opts: PoolOptions) {
    this.core = new PoolCore(home, cfg, opts)
  }

  /** Where rebuilds and reshapes run; the daemon hands over its registry (useJobs) so `vsm job` sees them. */
  get jobs(): Jobs { return this.core.jobs }

  /** Publish the pool's events into sink from now on, starting with those held since open. */
  useEvents(sink: EventSink): void { this.core.useEvents(sink) }

  /** Config seq (generation); bumps on every change. */
  get seq(): number { return this.core.cfg.seq }
  get id(): string { return this.core.cfg.poolId }
  /** A deep copy of the current configuration. */
  get config(): PoolConfig { return structuredClone(this.core.cfg) }

  /** The recent versions of the config: seq, when, what changed (oldest first). */
  history(): Promise<ConfigVersion[]> { return this.core.store.history() }

  /** A pool is here if its pool.json is, or if devices under the home carry its labels. */
  static exists(home: string): Promise<boolean> { return poolExists(home) }

  static async create(home: string, opts: PoolOptions = {}): Promise<Pool> {
    if (typeof home !== 'string' || home === '') throw new VsmError('EINVAL', 'pool home directory not given')
    home = path.resolve(home)
    if (await Pool.exists(home)) throw new VsmError('EEXIST', `a pool already exists in ${home}`)
    await fsp.mkdir(home, { recursive: true, mode: 0o700 })
    const pool = new Pool(home, emptyConfig(randomUUID()), opts)
    await pool.core.store.init()
    return pool
  }

  static async open(home: string, opts: PoolOptions = {}): Promise<Pool> {
    home = path.resolve(home)
    const { cfg, fileSeq, refused } = await findConfig(home)
    const pool = new Pool(home, cfg, opts)
    pool.refused = refused
    try {
      await assemble(pool.core, cfg, fileSeq)
    } catch (e) {
      await pool.abandon()
      throw e
    }
    return pool
  }

  // ---- devices ----

  /**
   * A spare waits, unused, until a member of a redundant volume fails. An existing path
   * that holds anything (probe.ts) is refused unless forced; a path inside a directory
   * the pool must not build on (the daemon's FUSE view) always is. A failed add leaves
   * the path as it was: a file it created is removed, a reserved area it wrote is zeroed
   * again (it was zero, or the add was forced).
   */
  addDevice(name: string, devPath: string, size?: number, spare = false, force = false): Promise<DeviceInfo> {
    return this.core.serial(async () => {
      checkName('device', name)
      if (typeof devPath !== 'string' || devPath === '') throw new VsmError('EINVAL', 'device path not given')
      if (size !== undefined) checkSize('device size', size)
      const abs = path.resolve(devPath)
      if (this.core.cfg.devices.some((d) => d.name === name)) throw new VsmError('EEXIST', `device ${name} already exists`)
      const dup = this.core.cfg.devices.find((d) => d.path === abs)
      if (dup) throw new VsmError('EEXIST', `${abs} is already in the pool as device ${dup.name}`)
      await this.refuseProtected(abs)
      const minSize = RESERVED_BYTES + MiB
      const existed = await exists(abs)
      if (!existed) {
        if (size === undefined) throw new VsmError('ENOENT', `${abs} does not exist (give a size to create a sparse file)`)
        if (size < minSize) throw new VsmError('EINVAL', `device size ${size} is too small: at least ${minSize} bytes`)
        if (!(await exists(path.dirname(abs)))) throw new VsmError('ENOENT', `directory ${path.dirname(abs)} does not exist`)
      }
      const dev = await openDevice(abs, { ...this.core.deviceOptions, create: existed ? undefined : size })
      let ok = false
      let wrote = false
      try {
        if (existed && size !== undefined && size !== dev.size) {
          throw new VsmError('EINVAL', `${abs} exists with size ${dev.size}, not ${size}`)
        }
        if (dev.size < minSize) throw new VsmError('EINVAL', `${abs} is too small (${dev.size} bytes): at least ${minSize} bytes`)
        const io = this.core.wrap(name, dev)
        const { label } = await readLabel(io)
        if (label && label.poolId !== this.core.cfg.poolId) throw new VsmError('EBUSY', `${abs} belongs to another vsm pool (${label.poolId}); remove it there first`)
        // a label of this pool for a device it does not list is what an add killed after its first label write leaves
        if (label && this.core.cfg.devices.some((d) => d.id === label.deviceId)) throw new VsmError('EEXIST', `${abs} already carries a label of this pool (device ${label.deviceName})`)
        const holds = existed && !force && !label ? await probeContents(io) : null
        if (holds) throw new VsmError('EEXIST', `${abs} holds ${holds}; add it with --force to overwrite it`)
        const d: DeviceConfig = {
          id: randomUUID(), name, path: abs, size: dev.size, dataOffset: RESERVED_BYTES,
          dataSize: Math.floor((dev.size - RESERVED_BYTES) / MiB) * MiB,
          blockDevice: dev.isBlockDevice, state: spare ? 'spare' : 'online', extents: [],
        }
        wrote = true
        const bitmap = await DeviceBitmap.init(io, d.dataSize)
        this.core.rt.set(d.id, { dev, io, bitmap, label: null })
        try {
          await this.core.store.change((next) => {
            next.devices.push(d)
            if (spare) next.spares.push(d.id)
            return `device ${name} added${spare ? ' as a spare' : ''} (${abs}, ${dev.size} bytes)`
          })
        } catch (e) {
          this.core.rt.delete(d.id)
          throw e
        }
        ok = true
        return this.core.deviceInfo(d)
      } finally {
        if (!ok) {
          if (existed && wrote) await dev.write(Buffer.alloc(RESERVED_BYTES), 0).then(() => dev.flush()).catch(() => {})
          await dev.close().catch(() => {})
          if (!existed) await fsp.unlink(abs).catch(() => {})
        }
      }
    })
  }

  /** Refuse a path under one of opts.protectedPaths, both resolved through symlinks. */
  private async refuseProtected(abs: string): Promise<void> {
    if (!this.core.opts.protectedPaths?.length) return
    // the file may not exist yet: resolve its directory, which must
    const real = await fsp.realpath(abs).catch(() => fsp.realpath(path.dirname(abs)).then((dir) => path.join(dir, path.basename(abs)), () => abs))
    for (const p of this.core.opts.protectedPaths) {
      const root = await fsp.realpath(p).catch(() => path.resolve(p))
      if (real === root || real.startsWith(root.endsWith(path.sep) ? root : root + path.sep)) {
        throw new VsmError('EINVAL', `${abs} is inside ${p}, the vsm view: a device there would store the pool inside itself`)
      }
    }
  }

  listDevices(): DeviceInfo[] {
    return this.core.cfg.devices.map((d) => this.core.deviceInfo(d))
  }

  removeDevice(name: string): Promise<void> {
    return this.core.serial(async () => {
      const d = this.core.cfg.devices.find((x) => x.name === name)
      if (!d) throw new VsmError('ENOENT', `no device named ${JSON.stringify(name)}`)
      // members, and the extents of a reshape under way (its new layout, its log)
      const users = [...new Set(d.extents.map((e) => e.volume))]
      if (users.length) throw new VsmError('EBUSY', `device ${name} is used by volume${users.length > 1 ? 's' : ''} ${users.join(', ')}`)
      const r = this.core.rt.get(d.id)
      this.core.rt.delete(d.id)
      try {
        await this.core.store.change((next) => {
          next.devices = next.devices.filter((x) => x.id !== d.id)
          next.spares = next.spares.filter((x) => x !== d.id)
          return `device ${name} removed`
        })
      } catch (e) {
        if (r) this.core.rt.set(d.id, r)
        throw e
      }
      if (r?.io) await wipeLabel(r.io).catch(() => {})
      await r?.dev?.close().catch(() => {})
    })
  }

  /**
   * exact: the volume holds exactly spec.size bytes (a replica must match its primary's
   * size), though a layout carves metadata from its extents; otherwise spec.size is what
   * is allocated and the layout's tables come out of it.
   */
  createVolume(name: string, spec: VolumeSpec, opts: { exact?: boolean } = {}): Promise<VolumeInfo> {
    return this.core.serial(async () => {
      const { volume, extents } = (opts.exact ? planExactly : planVolume)(this.core.cfg, name, spec, randomUUID())
      for (const id of extents.keys()) {
        const r = this.core.rt.get(id)
        if (r?.missing || !r?.io) {
          throw new VsmError('EINVAL', `device ${this.core.cfg.devices.find((d) => d.id === id)?.name} is missing: ${r?.missing ?? 'not open'}`)
        }
      }
      await this.core.store.change((next) => {
        next.volumes.push(volume)
        for (const d of next.devices) d.extents.push(...(extents.get(d.id) ?? []))
        return `volume ${name} created: ${volume.layout}, ${volume.size} bytes on ${spec.devices.join(',')}`
      })
      return this.volumeInfo(name)
    })
  }

  // ---- volumes ----

  listVolumes(): VolumeInfo[] {
    return this.core.cfg.volumes.map((v) => this.core.info(v))
  }

  volumeInfo(name: string): VolumeInfo { return this.core.volumeInfo(name) }

  openVolume(name: string): Promise<BlockDev> { return this.core.openVolume(name) }

  /**
   * Byte ranges of open volume `name` that may hold data (sorted, disjoint): the rest was
   * never written since the volume was made and reads as zeros. The whole volume where
   * its layout keeps no tables to tell. Ranges written after the call are not in it.
   */
  async writtenRanges(name: string): Promise<[number, number][]> {
    const size = this.core.volumeInfo(name).size
    return (await this.core.redundancy.get(name)?.usedRanges()) ?? [[0, size]]
  }

  /** The layout under an open volume's handle (tests, diagnostics). */
  layoutOf(name: string): BlockDev | undefined {
    return this.core.volumes.get(name)?.inner
  }

  /** Take a device out of service on purpose (as mdadm --fail); refused if a volume would stop. */
  offlineDevice(name: string): Promise<DeviceInfo> { return offlineDevice(this.core, name) }

  /** Bring a failed or offline device back; its members are resynced by what they missed. Returns the rebuild jobs started. */
  onlineDevice(name: string): Promise<{ device: DeviceInfo; jobs: number[] }> { return onlineDevice(this.core, name) }

  /** Move volume's member on device `from` onto device `to` (a spare or any device with room), rebuilding it there. */
  replaceMember(volume: string, from: string, to: string, opts: { rate?: number; takeover?: boolean } = {}): Promise<{ job: number | null; volume: VolumeInfo }> {
    return replaceMember(this.core, volume, from, to, opts)
  }

  /** Verify and repair a redundant volume as a job; `rate` holds it to that many bytes per second (0: unlimited). */
  scrubVolume(name: string, opts: { rate?: number } = {}): Promise<{ job: number }> { return scrubVolume(this.core, name, opts) }

  /** Grow, move or relayout a volume online, as a job (relayout.ts). */
  reshapeVolume(name: string, kind: 'grow' | 'move' | 'relayout', change: ReshapeChange): Promise<{ job: number; volume: VolumeInfo }> {
    return reshapeVolume(this.core, name, kind, change)
  }

  /** Reverse an unfinished grow/move/relayout: the volume stays on its old layout and the new extents are freed. */
  abortReshape(name: string): Promise<VolumeInfo> { return abortReshape(this.core, name) }

  /**
   * Run jobs in another registry from now on. Jobs already resumed at open (before the
   * daemon's registry existed) stop at a chunk boundary and start again there,
   * from the state the config and the layouts keep.
   */
  async useJobs(jobs: Jobs): Promise<void> {
    const old = this.core.jobs
    if (old === jobs) return
    this.core.jobs = jobs
    const rebuilds = [...this.core.rebuilds].map(([name, r]) => [name, r] as const)
    const reshapes = [...this.core.reshaping].map(([name, st]) => [name, st] as const)
    for (const [, r] of rebuilds) stopJob(old, r.job, 'moved to the daemon\'s job registry')
    for (const [, st] of reshapes) {
      st.stopping = true
      stopJob(old, st.job, 'moved to the daemon\'s job registry')
    }
    await Promise.all([...rebuilds.map(([, r]) => old.wait(r.job)), ...reshapes.map(([, st]) => old.wait(st.job))])
    if (this.core.closed) return
    for (const [name, r] of rebuilds) {
      const v = this.core.cfg.volumes.find((x) => x.name === name)
      const i = v?.members.findIndex((m) => m.state === 'stale' && this.core.cfg.devices.find((d) => d.id === m.device)?.name === r.device) ?? -1
      if (i >= 0) startRebuild(this.core, name, i, r.rate)
    }
    for (const [name, st] of reshapes) {
      const rs = this.core.cfg.volumes.find((x) => x.name === name)?.reshape
      if (rs && this.core.reshaping.get(name) === st) {
        st.stopping = false
        st.job = runReshape(this.core, name, st, rs)
      }
    }
  }

  /** Flush and close every open volume (mirrors mark their dirty regions clean), then the devices. */
  async close(): Promise<void> {
    if (this.core.closed) return
    this.core.closing = true
    // a rebuild stops at a chunk boundary and resumes from its checkpoint at the next open
    // again while any is left: a rebuild that ends as it is cancelled starts the next stale member's
    for (;;) {
      const running = [...this.core.rebuilds.values(), ...this.core.reshaping.values()].map((r) => r.job).filter((id) => this.core.jobs.get(id).state !== 'concluded')
      if (!running.length) break
      for (const id of running) stopJob(this.core.jobs, id, 'stopped as the pool closed; it resumes at the next open')
      await Promise.all(running.map((id) => this.core.jobs.wait(id)))
    }
    await this.core.lock
    const errors: string[] = []
    for (const [name, v] of [...this.core.volumes]) {
      try { await v.close() } catch (e) { errors.push(`${name}: ${errMsg(e)}`) }
    }
    await this.core.lock
    this.core.closed = true
    for (const [id, r] of this.core.rt) {
      // a device already recorded as failed is expected to refuse I/O; nothing to report
      const failed = this.core.cfg.devices.find((d) => d.id === id)?.state === 'failed'
      if (r.bitmap) await r.bitmap.persist(true).catch((e) => { if (!failed) errors.push(errMsg(e)) })
      await r.dev?.close().catch(() => {})
    }
    this.core.volumes.clear()
    if (errors.length) throw new VsmError('EIO', `pool closed with errors: ${errors.join('; ')}`)
  }

  /**
   * Drop every device handle without flushing or marking anything clean: what a
   * crash leaves behind. For crash tests and for a daemon that must let go fast.
   */
  async abandon(): Promise<void> {
    this.core.closed = true
    this.core.volumes.clear()
    for (const r of this.core.rt.values()) await r.dev?.close().catch(() => {})
  }
}
