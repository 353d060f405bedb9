// A pool: the devices in one home directory and the volumes built on them. Owns the
// config lifecycle (validate → plan → commit through the store, store.ts),
// assembly from devices at open, the live volume instances, and the policy of
// failures: which member goes out, which device a rebuild goes onto (a hot spare, a
// returning device, an operator's replacement), as jobs; how bytes are copied is the
// layouts' mechanism (mirror.ts copyRanges, raid5.ts rebuild). Mutations are
// serialized; a rejected request throws before anything is written.
// Every state change (device offline/failed/online, spare takeover, rebuild and reshape
// start/end/abort, scrub repairs) is published through one sink (useEvents), which the
// daemon logs and streams; events before it is given are held and handed over then.
import { promises as fsp } from 'fs'
import * as path from 'path'
import { randomUUID } from 'crypto'
import { BlockDev, VsmError } from '../block/blockdev'
import { Device, openDevice } from './device'
import { Label, MiB, RESERVED_BYTES, BITMAP_OFFSET, readLabel, wipeLabel } from './label'
import { ConfigStore, ConfigVersion, POOL_FILE } from './store'
import { DeviceBitmap } from './bitmap'
import type { LogMember } from './drl'
import {
  PoolConfig, DeviceConfig, VolumeConfig, VolumeSpec, MemberConfig, LayoutKind, ReshapeConfig,
  checkName, checkSize, emptyConfig, planVolume, planExactly, roundUp, freeBytes, usedBytes, canRun, volumeState, fitOne, pickSpare,
  placeReshapeLog, RESHAPE_LOG_BYTES,
} from './config'
import { Jobs } from '../control/jobs'
import type { EventLevel, EventSink } from '../control/events'
import { SliceDev } from './slice'
import { ConcatDev } from './concat'
import { StripeDev } from './stripe'
import { MirrorDev } from './mirror'
import { Raid5Dev } from './raid5'
import { ChecksumTable, SUM_BLOCK, tableGeneration } from './checksum'
import { ReshapeDev } from './reshape'
import { probeContents } from './probe'
import { VolumeHandle } from './handle'

export interface DeviceInfo {
  name: string
  id: string
  path: string
  size: number
  free: number
  used: number
  state: DeviceConfig['state'] | 'missing'
  blockDevice: boolean
  /** Why a device is missing (cannot open, foreign label, ...). */
  reason?: string
}

export interface MemberInfo {
  device: string
  deviceId: string
  offset: number
  length: number
  state: 'ok' | 'failed' | 'stale' | 'missing'
  reason?: string
}

export interface VolumeInfo {
  name: string
  layout: VolumeConfig['layout']
  size: number
  devices: string[]
  stripeUnit?: number
  copies?: number
  state: 'healthy' | 'degraded' | 'failed'
  members: MemberInfo[]
  open: boolean
  /** Mirror/raid10: bytes resynced from dirty regions when it was last opened. */
  resyncedBytes?: number
  /** raid5: stripe journal records replayed when it was last opened. */
  replayedRecords?: number
  /** A member being brought up to date. */
  rebuild?: RebuildInfo
  /** A grow, move or relayout under way; copied: its last checkpoint (where it resumes after a crash). */
  reshape?: { kind: string; layout: LayoutKind; size: number; job: number | null; copied?: number }
}

export interface ReshapeChange {
  size?: number
  from?: string
  to?: string
  layout?: string
  devices?: string[]
  stripeUnit?: number
  copies?: number
  /** Bytes per second the copy is held to (0 or absent: unlimited). */
  rate?: number
}

export interface RebuildInfo {
  job: number
  device: string
  kind: 'delta' | 'full'
  done: number
  total: number
  /** Bytes per second the copy is held to (0: unlimited). */
  rate: number
  bytesPerSecond: number
  etaSeconds: number | null
}

/** A volume being copied onto a new layout: writes go to both through a ReshapeDev until the switch. */
interface Reshape {
  job: number
  dev: ReshapeDev
  /** The target's volume id: tells this reshape from a later one of the same volume. */
  id: string
  targetLive: Live
  handle: VolumeHandle
  /** The pool stops the job to resume it (close, another job registry): not an abort. */
  stopping?: boolean
  /** The copy is complete and the config is switching: too late to abort. */
  switching?: boolean
}

/** The layout objects of an open volume that a rebuild needs to reach. */
interface Live {
  /** mirror: one group; raid10: one per stripe column. idx maps a group's copy to the volume's member. */
  mirrors: { mirror: MirrorDev; idx: number[] }[]
  raid5?: Raid5Dev
}

export interface PoolOptions {
  /** Interpose on each device's I/O (fault injection in tests): name → wrapper. */
  wrapDevice?: (name: string, dev: BlockDev) => BlockDev
  /** Directories no device may be added under (the daemon's FUSE view). */
  protectedPaths?: string[]
}

interface DevRt {
  dev: Device | null
  io: BlockDev | null
  bitmap: DeviceBitmap | null
  label: Label | null
  /** Set when the device cannot be used; the reason, for messages. */
  missing?: string
  /** Its label is older than the pool: it missed changes, so its copies stay out until resynced. */
  behind?: string
}

function errMsg(e: unknown): string { return (e as Error)?.message ?? String(e) }

async function exists(p: string): Promise<boolean> {
  try { await fsp.stat(p); return true } catch { return false }
}

const CHECKPOINT_MS = 1000

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export class Pool {
  /** Where rebuilds and reshapes run; the daemon hands over its registry (useJobs) so `vsm job` sees them. */
  jobs = new Jobs()
  private readonly rt = new Map<string, DevRt>()
  private readonly live = new Map<string, Live>()
  private readonly rebuilds = new Map<string, RebuildInfo>()
  private readonly volumes = new Map<string, VolumeHandle>()
  private readonly reshaping = new Map<string, Reshape>()
  private readonly opening = new Map<string, Promise<BlockDev>>()
  /** By layout id, not name: a reshape's new layout is assembled under the volume's name. */
  private readonly resynced = new Map<string, number>()
  private readonly replayed = new Map<string, number>()
  private lock: Promise<unknown> = Promise.resolve()
  /** close() has begun: jobs stopped now resume at the next open, they are not cancelled. */
  private closing = false
  /** Volumes a change holds between its checks (under the lock) and its commit: name → what. */
  private readonly claims = new Map<string, string>()
  private closed = false

  /** Every config change goes through it (store.ts). */
  private readonly store: ConfigStore

  private constructor(readonly home: string, cfg: PoolConfig, private readonly opts: PoolOptions) {
    this.store = new ConfigStore(home, cfg, (id) => this.rt.get(id)?.io ?? null,
      (e) => this.event('pool.archive-failed', { reason: errMsg(e) }, 'warn'))
  }

  private get cfg(): PoolConfig { return this.store.current }

  private sink: EventSink | null = null
  /** Events published before a sink was given (assembly at open), oldest first, bounded. */
  private early: [string, object, EventLevel][] = []

  /** Publish the pool's events into sink from now on, starting with those held since open. */
  useEvents(sink: EventSink): void {
    this.sink = sink
    for (const [name, data, level] of this.early.splice(0)) sink.publish(name, data, level)
  }

  /** The one place the pool reports a state change: losing redundancy is an error, a planned degradation or an undone change a warning. */
  private event(name: string, data: object, level: EventLevel = 'info'): void {
    if (this.sink) this.sink.publish(name, data, level)
    else if (this.early.push([name, data, level]) > 256) this.early.shift()
  }

  /** Config seq (generation); bumps on every change. */
  get seq(): number { return this.cfg.seq }
  get id(): string { return this.cfg.poolId }
  /** A deep copy of the current configuration. */
  get config(): PoolConfig { return structuredClone(this.cfg) }

  /** The recent versions of the config: seq, when, what changed (oldest first). */
  history(): Promise<ConfigVersion[]> { return this.store.history() }

  /** A pool is here if its pool.json is, or if devices under the home carry its labels. */
  static async exists(home: string): Promise<boolean> {
    return (await exists(path.join(home, POOL_FILE))) || (await Pool.scan(path.resolve(home))).found.length > 0
  }

  /**
   * Labels of the devices in <home>/devices and <home> itself: where a pool whose
   * pool.json is lost is assembled from. Only one pool can own a home; devices of any
   * other pool are refused, with the reason.
   */
  private static async scan(home: string): Promise<{ found: { path: string; label: Label }[]; refused: { path: string; reason: string }[] }> {
    const labels: { path: string; label: Label }[] = []
    for (const dir of [path.join(home, 'devices'), home]) {
      let names: string[]
      try { names = await fsp.readdir(dir) } catch { continue }
      for (const n of names) {
        const p = path.join(dir, n)
        const st = await fsp.stat(p).catch(() => null)
        if (!st || !(st.isFile() || st.isBlockDevice()) || st.size < RESERVED_BYTES) continue
        const dev = await openDevice(p).catch(() => null)
        if (!dev) continue
        try {
          const { label } = await readLabel(dev)
          if (label) labels.push({ path: p, label })
        } catch { /* unreadable: not ours to judge */ } finally {
          await dev.close().catch(() => {})
        }
      }
    }
    const count = new Map<string, number>()
    for (const l of labels) count.set(l.label.poolId, (count.get(l.label.poolId) ?? 0) + 1)
    const owner = [...count].sort((a, b) => b[1] - a[1])[0]?.[0]
    return {
      found: labels.filter((l) => l.label.poolId === owner),
      refused: labels.filter((l) => l.label.poolId !== owner).map((l) => ({
        path: l.path, reason: `${l.path} belongs to another vsm pool (${l.label.poolId}, device ${l.label.deviceName}); not used`,
      })),
    }
  }

  /** Devices seen at assembly but not used, and why (another pool's label). */
  refused: { path: string; reason: string }[] = []

  static async create(home: string, opts: PoolOptions = {}): Promise<Pool> {
    if (typeof home !== 'string' || home === '') throw new VsmError('EINVAL', 'pool home directory not given')
    home = path.resolve(home)
    if (await Pool.exists(home)) throw new VsmError('EEXIST', `a pool already exists in ${home}`)
    await fsp.mkdir(home, { recursive: true, mode: 0o700 })
    const pool = new Pool(home, emptyConfig(randomUUID()), opts)
    await pool.store.init()
    return pool
  }

  static async open(home: string, opts: PoolOptions = {}): Promise<Pool> {
    home = path.resolve(home)
    let fileCfg = await ConfigStore.readFile(home)
    const fileSeq = fileCfg?.seq ?? null
    let refused: { path: string; reason: string }[] = []
    if (!fileCfg) {
      const scan = await Pool.scan(home)
      if (!scan.found.length) {
        throw new VsmError('ENOENT', `no pool in ${home} (${POOL_FILE} not found, and no device in ${home} or ${path.join(home, 'devices')} carries a vsm label${scan.refused.length ? ' of a single pool' : ''})`)
      }
      // the newest configuration any device carries, with devices found where they are now
      fileCfg = scan.found.reduce((a, b) => (b.label.seq > a.label.seq ? b : a)).label.config
      for (const f of scan.found) {
        const d = fileCfg.devices.find((x) => x.id === f.label.deviceId)
        if (d) d.path = f.path
      }
      refused = scan.refused
    }
    if (fileCfg?.format !== 'vsm-pool' || typeof fileCfg.poolId !== 'string') {
      throw new VsmError('EINVAL', `${path.join(home, POOL_FILE)} is not a vsm pool configuration`)
    }
    const pool = new Pool(home, fileCfg, opts)
    pool.refused = refused
    try {
      await pool.assemble(fileCfg, fileSeq)
    } catch (e) {
      await pool.abandon()
      throw e
    }
    return pool
  }

  /** Open every device, adopt the newest config found in any label, check that every volume can run. */
  private async assemble(fileCfg: PoolConfig, fileSeq: number | null): Promise<void> {
    let best = fileCfg
    // a crash between label writes and pool.json leaves newer configs on devices; follow them
    for (let round = 0; round < 4; round++) {
      for (const d of best.devices) if (!this.rt.has(d.id)) this.rt.set(d.id, await this.openMember(best, d))
      let newest = best
      for (const r of this.rt.values()) {
        if (r.label && r.label.poolId === best.poolId && r.label.seq > newest.seq) newest = r.label.config
      }
      if (newest === best) break
      best = newest
    }
    this.store.assembled(best)
    for (const [id, r] of this.rt) {
      if (!best.devices.some((d) => d.id === id)) {
        this.rt.delete(id)
        await r.dev?.close().catch(() => {})
      }
    }
    // labels of a device listed in an older config may still identify it; recheck against the adopted one
    for (const d of best.devices) {
      const r = this.rt.get(d.id)!
      if (!r.missing && r.dev && r.dev.size < d.size) r.missing = `device is ${r.dev.size} bytes, config says ${d.size}`
      if (r.missing) {
        await r.dev?.close().catch(() => {})
        r.dev = r.io = null
        continue
      }
      r.bitmap = await DeviceBitmap.load(r.io!, d.dataSize)
      const stale = best.volumes.some((v) => v.members.some((m) => m.device === d.id && m.state !== 'ok'))
      if (r.label && r.label.seq < best.seq && stale) {
        r.behind = `label is at seq ${r.label.seq}, the pool at ${best.seq}: it missed changes, so its copies are not used; 'vsm device online ${d.name}' resyncs them`
      }
    }

    const failedNow: string[] = []
    const changed = await this.store.change((next) => {
    for (const v of next.volumes) {
      for (const m of v.members) {
        const r = this.rt.get(m.device)
        const d = next.devices.find((x) => x.id === m.device)
        if (m.state !== 'ok' || !r?.missing) continue
        const why = `device ${d?.name ?? m.device} (${d?.path ?? '?'}) is missing: ${r.missing}`
        if (!canRun(v, v.members.map((x) => x !== m && x.state === 'ok' && !this.rt.get(x.device)?.missing))) {
          throw new VsmError('ENODEV', `volume ${v.name} (${v.layout}) cannot run without device ${d?.name ?? m.device} (${d?.path ?? '?'}): ${r.missing}`)
        }
        m.state = 'failed'
        m.reason = why
        failedNow.push(`${v.name} on ${d?.name ?? m.device}`)
        this.event('volume.member-failed', { volume: v.name, device: d?.name ?? m.device, reason: why, at: 'open' }, 'error')
      }
      if (!canRun(v, v.members.map((m) => m.state === 'ok'))) {
        throw new VsmError('ENODEV', `volume ${v.name} (${v.layout}) has too few members left: ${v.members.map((m) => m.reason ?? m.state).join('; ')}`)
      }
    }
    return failedNow.length ? `assembled with devices missing: member${failedNow.length > 1 ? 's' : ''} ${failedNow.join(', ')} failed` : null
    })
    if (!changed) {
      // bring lagging labels and pool.json up to the adopted generation
      await this.store.catchUp(fileSeq, best.devices.filter((d) => {
        const r = this.rt.get(d.id)!
        return !r.missing && (!r.label || r.label.seq < best.seq)
      }))
    }
  }

  private async openMember(cfg: PoolConfig, d: DeviceConfig): Promise<DevRt> {
    let dev: Device
    try {
      dev = await openDevice(d.path)
    } catch (e) {
      return { dev: null, io: null, bitmap: null, label: null, missing: `cannot open ${d.path}: ${errMsg(e)}` }
    }
    const io = this.wrap(d.name, dev)
    let label: Label | null = null
    let missing: string | undefined
    try {
      label = (await readLabel(io)).label
      if (!label) missing = 'no valid vsm label'
      else if (label.poolId !== cfg.poolId) missing = `label belongs to another pool (${label.poolId})`
      else if (label.deviceId !== d.id) missing = `label is for device ${label.deviceName} (${label.deviceId}) of this pool`
    } catch (e) {
      missing = `cannot read label: ${errMsg(e)}`
    }
    if (missing) {
      await dev.close().catch(() => {})
      return { dev: null, io: null, bitmap: null, label: null, missing }
    }
    return { dev, io, bitmap: null, label }
  }

  private wrap(name: string, dev: BlockDev): BlockDev {
    return this.opts.wrapDevice ? this.opts.wrapDevice(name, dev) : dev
  }

  /** Run mutations one at a time, in call order. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(() => {
      if (this.closed) throw new VsmError('EIO', 'pool is closed')
      return fn()
    })
    this.lock = run.catch(() => {})
    return run
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
    return this.serial(async () => {
      checkName('device', name)
      if (typeof devPath !== 'string' || devPath === '') throw new VsmError('EINVAL', 'device path not given')
      if (size !== undefined) checkSize('device size', size)
      const abs = path.resolve(devPath)
      if (this.cfg.devices.some((d) => d.name === name)) throw new VsmError('EEXIST', `device ${name} already exists`)
      const dup = this.cfg.devices.find((d) => d.path === abs)
      if (dup) throw new VsmError('EEXIST', `${abs} is already in the pool as device ${dup.name}`)
      await this.refuseProtected(abs)
      const minSize = RESERVED_BYTES + MiB
      const existed = await exists(abs)
      if (!existed) {
        if (size === undefined) throw new VsmError('ENOENT', `${abs} does not exist (give a size to create a sparse file)`)
        if (size < minSize) throw new VsmError('EINVAL', `device size ${size} is too small: at least ${minSize} bytes`)
        if (!(await exists(path.dirname(abs)))) throw new VsmError('ENOENT', `directory ${path.dirname(abs)} does not exist`)
      }
      const dev = await openDevice(abs, existed ? undefined : { create: size })
      let ok = false
      let wrote = false
      try {
        if (existed && size !== undefined && size !== dev.size) {
          throw new VsmError('EINVAL', `${abs} exists with size ${dev.size}, not ${size}`)
        }
        if (dev.size < minSize) throw new VsmError('EINVAL', `${abs} is too small (${dev.size} bytes): at least ${minSize} bytes`)
        const io = this.wrap(name, dev)
        const { label } = await readLabel(io)
        if (label && label.poolId !== this.cfg.poolId) throw new VsmError('EBUSY', `${abs} belongs to another vsm pool (${label.poolId}); remove it there first`)
        // a label of this pool for a device it does not list is what an add killed after its first label write leaves
        if (label && this.cfg.devices.some((d) => d.id === label.deviceId)) throw new VsmError('EEXIST', `${abs} already carries a label of this pool (device ${label.deviceName})`)
        const holds = existed && !force && !label ? await probeContents(io) : null
        if (holds) throw new VsmError('EEXIST', `${abs} holds ${holds}; add it with --force to overwrite it`)
        const d: DeviceConfig = {
          id: randomUUID(), name, path: abs, size: dev.size, dataOffset: RESERVED_BYTES,
          dataSize: Math.floor((dev.size - RESERVED_BYTES) / MiB) * MiB,
          blockDevice: dev.isBlockDevice, state: spare ? 'spare' : 'online', extents: [],
        }
        wrote = true
        const bitmap = await DeviceBitmap.init(io, d.dataSize)
        this.rt.set(d.id, { dev, io, bitmap, label: null })
        try {
          await this.store.change((next) => {
            next.devices.push(d)
            if (spare) next.spares.push(d.id)
            return `device ${name} added${spare ? ' as a spare' : ''} (${abs}, ${dev.size} bytes)`
          })
        } catch (e) {
          this.rt.delete(d.id)
          throw e
        }
        ok = true
        return this.deviceInfo(d)
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
    if (!this.opts.protectedPaths?.length) return
    // the file may not exist yet: resolve its directory, which must
    const real = await fsp.realpath(abs).catch(() => fsp.realpath(path.dirname(abs)).then((dir) => path.join(dir, path.basename(abs)), () => abs))
    for (const p of this.opts.protectedPaths) {
      const root = await fsp.realpath(p).catch(() => path.resolve(p))
      if (real === root || real.startsWith(root.endsWith(path.sep) ? root : root + path.sep)) {
        throw new VsmError('EINVAL', `${abs} is inside ${p}, the vsm view: a device there would store the pool inside itself`)
      }
    }
  }

  private deviceInfo(d: DeviceConfig): DeviceInfo {
    const r = this.rt.get(d.id)
    const info: DeviceInfo = {
      name: d.name, id: d.id, path: d.path, size: d.size, free: freeBytes(d), used: usedBytes(d),
      state: r?.missing || !r ? 'missing' : d.state,
      blockDevice: d.blockDevice,
    }
    if (r?.missing ?? r?.behind) info.reason = r?.missing ?? r?.behind
    return info
  }

  listDevices(): DeviceInfo[] {
    return this.cfg.devices.map((d) => this.deviceInfo(d))
  }

  removeDevice(name: string): Promise<void> {
    return this.serial(async () => {
      const d = this.cfg.devices.find((x) => x.name === name)
      if (!d) throw new VsmError('ENOENT', `no device named ${JSON.stringify(name)}`)
      // members, and the extents of a reshape under way (its new layout, its log)
      const users = [...new Set(d.extents.map((e) => e.volume))]
      if (users.length) throw new VsmError('EBUSY', `device ${name} is used by volume${users.length > 1 ? 's' : ''} ${users.join(', ')}`)
      const r = this.rt.get(d.id)
      this.rt.delete(d.id)
      try {
        await this.store.change((next) => {
          next.devices = next.devices.filter((x) => x.id !== d.id)
          next.spares = next.spares.filter((x) => x !== d.id)
          return `device ${name} removed`
        })
      } catch (e) {
        if (r) this.rt.set(d.id, r)
        throw e
      }
      if (r?.io) await wipeLabel(r.io).catch(() => {})
      await r?.dev?.close().catch(() => {})
    })
  }

  // ---- volumes ----

  createVolume(name: string, spec: VolumeSpec): Promise<VolumeInfo> {
    return this.serial(async () => {
      const { volume, extents } = planVolume(this.cfg, name, spec, randomUUID())
      for (const id of extents.keys()) {
        const r = this.rt.get(id)
        if (r?.missing || !r?.io) {
          throw new VsmError('EINVAL', `device ${this.cfg.devices.find((d) => d.id === id)?.name} is missing: ${r?.missing ?? 'not open'}`)
        }
      }
      await this.store.change((next) => {
        next.volumes.push(volume)
        for (const d of next.devices) d.extents.push(...(extents.get(d.id) ?? []))
        return `volume ${name} created: ${volume.layout}, ${volume.size} bytes on ${spec.devices.join(',')}`
      })
      return this.volumeInfo(name)
    })
  }

  private memberInfo(m: MemberConfig): MemberInfo {
    const d = this.cfg.devices.find((x) => x.id === m.device)
    const r = this.rt.get(m.device)
    const info: MemberInfo = {
      device: d?.name ?? m.device, deviceId: m.device, offset: m.offset, length: m.length,
      state: m.state === 'ok' && (!r || r.missing) ? 'missing' : m.state,
    }
    if (m.reason) info.reason = m.reason
    else if (r?.missing) info.reason = r.missing
    return info
  }

  private info(v: VolumeConfig): VolumeInfo {
    const members = v.members.map((m) => this.memberInfo(m))
    const state = volumeState(v, members.map((m) => m.state === 'ok'))
    const devices: string[] = []
    for (const m of members) if (!devices.includes(m.device)) devices.push(m.device)
    const out: VolumeInfo = { name: v.name, layout: v.layout, size: v.size, devices, state, members, open: this.volumes.has(v.name) }
    if (v.stripeUnit !== undefined) out.stripeUnit = v.stripeUnit
    if (v.copies !== undefined) out.copies = v.copies
    if (this.resynced.has(v.id)) out.resyncedBytes = this.resynced.get(v.id)
    if (this.replayed.has(v.id)) out.replayedRecords = this.replayed.get(v.id)
    const rb = this.rebuilds.get(v.name)
    if (rb) out.rebuild = { ...rb }
    if (v.reshape) {
      out.reshape = { kind: v.reshape.kind, layout: v.reshape.target.layout, size: v.reshape.target.size, job: this.reshaping.get(v.name)?.job ?? null }
      if (v.reshape.copied !== undefined) out.reshape.copied = v.reshape.copied
    }
    return out
  }

  listVolumes(): VolumeInfo[] {
    return this.cfg.volumes.map((v) => this.info(v))
  }

  volumeInfo(name: string): VolumeInfo {
    const v = this.cfg.volumes.find((x) => x.name === name)
    if (!v) throw new VsmError('ENOENT', `no volume named ${JSON.stringify(name)}`)
    return this.info(v)
  }

  openVolume(name: string): Promise<BlockDev> {
    const have = this.volumes.get(name)
    if (have) return Promise.resolve(have)
    const pending = this.opening.get(name)
    if (pending) return pending
    const p = this.build(name).finally(() => this.opening.delete(name))
    this.opening.set(name, p)
    return p
  }

  /** The data window of member m and, on a checksummed volume, its checksum table. */
  private async memberIo(v: VolumeConfig, m: MemberConfig): Promise<{ data: SliceDev; sums: ChecksumTable | null }> {
    const io = this.rt.get(m.device)!.io!
    const d = this.cfg.devices.find((x) => x.id === m.device)!
    const base = d.dataOffset + m.offset, len = m.length - (v.checksums ?? 0)
    const generation = v.checksumSalt ? tableGeneration(v.checksumSalt, m.device, m.offset) : undefined
    const sums = v.checksums ? await ChecksumTable.load(new SliceDev(io, base + len, v.checksums), len, { generation }) : null
    return { data: new SliceDev(io, base, len), sums }
  }

  /** Where member m of v keeps its write-intent bits: its device's bitmap, at its row 0. */
  private logMember(v: VolumeConfig, m: MemberConfig): LogMember | null {
    const bitmap = this.rt.get(m.device)?.bitmap
    return bitmap ? { bitmap, base: m.offset + (v.journal ?? 0) } : null
  }

  /**
   * Put stale member i back into raid5 volume v to be rebuilt: the rows it missed
   * (delta) or all rows (full), from its checkpoint on, and the rows the last replay
   * rewrote without it (a crash after the checkpoint may have lost them on it).
   */
  private attachRaid5(r5: Raid5Dev, v: VolumeConfig, i: number, io: { data: SliceDev; sums: ChecksumTable | null }): void {
    const m = v.members[i]
    const from = Math.floor((m.rebuilt ?? 0) / v.stripeUnit!)
    const need = m.resync === 'delta' ? r5.missedRows() : [[0, r5.rows] as [number, number]]
    const rows = mergeRanges([
      ...need.map(([lo, hi]) => [Math.max(lo, from), hi] as [number, number]).filter(([lo, hi]) => lo < hi),
      ...r5.replayedRows.map((r) => [r, r + 1] as [number, number]),
    ])
    r5.attach(i, io.data, rows, io.sums, this.logMember(v, m))
  }

  /** The layout objects of volume config v (the volume itself, or a reshape target), resynced or replayed. */
  private async assembleLayout(v: VolumeConfig): Promise<{ dev: BlockDev; live: Live }> {
    const ios = await Promise.all(v.members.map((m) => {
      const r = this.rt.get(m.device)
      return m.state !== 'ok' || !r?.io || r.missing ? null : this.memberIo(v, m)
    }))
    const slices = ios.map((io) => io?.data ?? null)
    const onMemberFailed = (i: number, err: unknown) => this.memberFailed(v.id, i, err)
    let dev: BlockDev
    let live: Live = { mirrors: [] }
    if (v.layout === 'mirror' || v.layout === 'raid10') {
      const groups = v.layout === 'mirror' ? [v.members.map((_, i) => i)] : groupsOf(v)
      const mirrors: MirrorDev[] = []
      let resynced = 0
      for (const idx of groups) {
        const log = idx.map((i) => (slices[i] ? this.logMember(v, v.members[i]) : null))
        const mirror = new MirrorDev(idx.map((i) => slices[i]), {
          size: v.layout === 'mirror' ? v.size : undefined, log,
          onMemberFailed: (k, err) => onMemberFailed(idx[k], err),
          sums: v.checksums ? idx.map((i) => ios[i]?.sums ?? null) : undefined,
        })
        resynced += await mirror.resync()
        mirrors.push(mirror)
      }
      this.resynced.set(v.id, resynced)
      dev = v.layout === 'mirror' ? mirrors[0] : new StripeDev(mirrors, v.stripeUnit, { size: v.size })
      live = { mirrors: mirrors.map((mirror, g) => ({ mirror, idx: groups[g] })) }
    } else if (v.layout === 'raid5') {
      const r5 = new Raid5Dev(slices, {
        stripeUnit: v.stripeUnit!, journal: v.journal!, tag: v.id, size: v.size, onMemberFailed,
        sums: v.checksums ? ios.map((io) => io?.sums ?? null) : undefined,
        log: v.members.map((m, i) => (slices[i] ? this.logMember(v, m) : null)),
      })
      this.replayed.set(v.id, await r5.replay())
      // a stale member (a crash mid-rebuild) goes back in before any write can miss it
      for (const [i, m] of v.members.entries()) {
          if (this.rebuildable(m)) this.attachRaid5(r5, v, i, await this.memberIo(v, m))
      }
      dev = r5
      live = { mirrors: [], raid5: r5 }
    } else {
      const missing = v.members.findIndex((_, i) => !slices[i])
      if (missing >= 0) {
        const m = v.members[missing]
        const d = this.cfg.devices.find((x) => x.id === m.device)
        throw new VsmError('ENODEV', `volume ${v.name} (${v.layout}) cannot run without device ${d?.name ?? m.device}`)
      }
      dev = v.layout === 'concat' ? new ConcatDev(slices as SliceDev[], { size: v.size }) : new StripeDev(slices as SliceDev[], v.stripeUnit, { size: v.size })
    }
    if (dev.size !== v.size) throw new VsmError('EIO', `volume ${v.name} assembles to ${dev.size} bytes, config says ${v.size}`)
    return { dev, live }
  }

  private async build(name: string): Promise<BlockDev> {
    if (this.closed) throw new VsmError('EIO', 'pool is closed')
    const v = this.cfg.volumes.find((x) => x.name === name)
    if (!v) throw new VsmError('ENOENT', `no volume named ${JSON.stringify(name)}`)
    const { dev, live } = await this.assembleLayout(v)
    const handle = new VolumeHandle(dev, () => {
      this.volumes.delete(name)
      this.live.delete(name)
      this.reshaping.delete(name)
    })
    if (this.closed) { await dev.close().catch(() => {}); throw new VsmError('EIO', 'pool is closed') }
    this.volumes.set(name, handle)
    this.live.set(name, live)
    // a member left stale by a restart (or a crash mid-rebuild) picks up where it was
    v.members.forEach((m, i) => { if (this.rebuildable(m)) this.startRebuild(name, i) })
    // so does a reshape, from its checkpoint, writes meanwhile going to both layouts
    if (v.reshape) {
      try {
        await this.beginReshape(name, handle, v.reshape)
      } catch (e) {
        // the old layout serves alone until the reshape is aborted: writes now miss the target
        await this.dropCheckpoint(name, v.reshape.target.id, e)
      }
    }
    return handle
  }

  /** The layout under an open volume's handle (tests, diagnostics). */
  layoutOf(name: string): BlockDev | undefined {
    return this.volumes.get(name)?.inner
  }

  /** A redundant volume's member failed at runtime: record it so no later assembly trusts that copy. */
  private memberFailed(volumeId: string, index: number, err: unknown): Promise<void> {
    return this.serial(async () => {
      const out: { v?: VolumeConfig; m?: MemberConfig; d?: DeviceConfig; inService?: boolean } = {}
      await this.store.change((next) => {
        // a reshape's new layout too, so the switch to it does not put a stale copy in service
        const inService = next.volumes.find((x) => x.id === volumeId)
        const v = inService ?? next.volumes.find((x) => x.reshape?.target.id === volumeId)?.reshape!.target
        const m = v?.members[index]
        if (!v || !m || m.state === 'failed') return null
        m.state = 'failed'
        m.reason = `I/O error: ${errMsg(err)}`
        delete m.resync
        delete m.rebuilt
        const d = next.devices.find((x) => x.id === m.device)
        if (d && d.state === 'online') d.state = 'failed'
        Object.assign(out, { v, m, d, inService: !!inService })
        return `member ${index} of volume ${v.name}${inService ? '' : ` (its new layout)`} on device ${d?.name ?? m.device} failed: ${m.reason}`
      })
      const { v, m, d, inService } = out
      if (!v || !m) return
      // an offline under way is the operator's plan, not a fault
      this.event('volume.member-failed', { volume: v.name, device: d?.name, reason: m.reason, state: this.info(v).state }, this.claims.has(v.name) ? 'warn' : 'error')
      // policy: a hot spare takes over at once (in a volume in service); started after this mutation, not inside it
      const spare = inService && pickSpare(this.cfg, m.length)
      if (spare && d) {
        this.event('volume.spare-takeover', { volume: v.name, from: d.name, spare: spare.name, reason: m.reason }, 'warn')
        setImmediate(() => this.replaceMember(v.name, d.name, spare.name, { takeover: true }).catch((e) =>
          this.event('volume.spare-failed', { volume: v.name, spare: spare.name, reason: errMsg(e) }, 'error')))
      }
    })
  }

  /**
   * Before a planned degradation: two flushes let the dirty-region log clear every
   * idle region, so what the absent copy is later owed is only what is written after.
   */
  private async settle(name: string): Promise<void> {
    const dev = this.volumes.get(name)
    if (!dev) return
    await dev.flush()
    await dev.flush()
  }

  /** The live layout object holding member i of an open volume, with the index it knows it by. */
  private liveMember(name: string, i: number): { mirror?: MirrorDev; raid5?: Raid5Dev; k: number } | null {
    const l = this.live.get(name)
    if (!l) return null
    if (l.raid5) return { raid5: l.raid5, k: i }
    for (const g of l.mirrors) {
      const k = g.idx.indexOf(i)
      if (k >= 0) return { mirror: g.mirror, k }
    }
    return null
  }

  /**
   * Policy: a volume being grown, moved or relaid out takes no other change to its members
   * (replace, offline, online) until that ends or is aborted; the reshape copies from the
   * old layout while writes go to both, and a member swapped under it meanwhile is not
   * covered by either layout's resume state (the volume ztest lost raid5 bytes that way).
   * Nor does a volume an offline has claimed: that one checked and is failing members
   * outside the lock, and a change planned on the config before it lands would be stale.
   */
  private refuseWhileChanging(v: VolumeConfig, opts: { claims?: boolean } = {}): void {
    if (v.reshape) throw new VsmError('EBUSY', `volume ${v.name} is being changed (${v.reshape.kind}); wait for it or abort it first`)
    const claim = opts.claims !== false && this.claims.get(v.name)
    if (claim) throw new VsmError('EBUSY', `volume ${v.name} is being changed (${claim}); try again when that is done`)
  }

  /** Take a device out of service on purpose (as mdadm --fail); refused if a volume would stop. */
  async offlineDevice(name: string): Promise<DeviceInfo> {
    const why = new VsmError('EIO', 'taken offline by the operator')
    const claim = `device ${name} is being taken offline`
    // checked and claimed under the lock: a relayout, replace or other offline issued
    // meanwhile sees the claim and is refused, so none of them judges a stale config
    const { d, claimed } = await this.serial(async () => {
      const d = this.cfg.devices.find((x) => x.name === name)
      if (!d) throw new VsmError('ENOENT', `no device named ${JSON.stringify(name)}`)
      if (d.state === 'spare') throw new VsmError('EINVAL', `device ${name} is a spare, not in service`)
      volumesOn(this.cfg, d.id).forEach((v) => this.refuseWhileChanging(v))
      for (const v of this.cfg.volumes) {
        const ok = v.members.map((m) => m.state === 'ok' && m.device !== d.id)
        if (v.members.some((m) => m.device === d.id) && !canRun(v, ok)) {
          throw new VsmError('EBUSY', `volume ${v.name} (${v.layout}) cannot run without device ${name}`)
        }
      }
      const claimed = this.cfg.volumes.filter((v) => v.members.some((m) => m.device === d.id)).map((v) => v.name)
      for (const v of claimed) this.claims.set(v, claim)
      return { d, claimed }
    })
    const release = () => { for (const v of claimed) if (this.claims.get(v) === claim) this.claims.delete(v) }
    try {
      for (const v of claimed) await this.settle(v)
      for (const v of this.cfg.volumes) {
        for (let i = 0; i < v.members.length; i++) {
          if (v.members[i].device !== d.id) continue
          const lm = this.liveMember(v.name, i)
          await (lm?.mirror ?? lm?.raid5)?.failMember(lm!.k, why)
        }
      }
      return await this.serial(async () => {
        await this.store.change((next) => {
          next.devices.find((x) => x.id === d.id)!.state = 'offline'
          for (const v of next.volumes) for (const m of v.members) {
            if (m.device !== d.id || m.state === 'failed') continue
            m.state = 'failed'
            m.reason = why.message
          }
          return `device ${name} taken offline${claimed.length ? `: volumes ${claimed.join(', ')} degraded` : ''}`
        })
        release()
        this.event('device.offline', { device: name, reason: why.message, volumes: claimed }, 'warn')
        return this.deviceInfo(this.cfg.devices.find((x) => x.id === d.id)!)
      })
    } finally {
      release()
    }
  }

  /**
   * Bring a failed or offline device back: its members go stale and are resynced,
   * by delta (only regions written while it was away).
   * Returns the rebuild jobs started.
   */
  async onlineDevice(name: string): Promise<{ device: DeviceInfo; jobs: number[] }> {
    const touched = await this.serial(async () => {
      const d = this.cfg.devices.find((x) => x.name === name)
      if (!d) throw new VsmError('ENOENT', `no device named ${JSON.stringify(name)}`)
      const hasFailed = this.cfg.volumes.some((v) => v.members.some((m) => m.device === d.id && m.state === 'failed'))
      if (d.state !== 'offline' && d.state !== 'failed' && !this.rt.get(d.id)?.missing && !hasFailed) {
        throw new VsmError('EINVAL', `device ${name} is ${d.state}, not offline or failed`)
      }
      volumesOn(this.cfg, d.id).forEach((v) => this.refuseWhileChanging(v))
      let r = this.rt.get(d.id)
      if (!r?.io || r.missing) {
        r = await this.openMember(this.cfg, d)
        if (r.missing) throw new VsmError('ENODEV', `device ${name} (${d.path}) is still unusable: ${r.missing}`)
        r.bitmap = await DeviceBitmap.load(r.io!, d.dataSize)
        this.rt.set(d.id, r)
      }
      delete r.behind
      const out: [string, number][] = []
      await this.store.change((next) => {
        next.devices.find((x) => x.id === d.id)!.state = 'online'
        for (const v of next.volumes) v.members.forEach((m, i) => {
          if (m.device !== d.id || m.state !== 'failed') return
          m.state = 'stale'
          // raid5 volumes made before raid5 kept write-intent bits (they have no checksums
          // either) cannot tell what a member missed while away: those get everything back
          m.resync = v.layout === 'raid5' && !v.checksums ? 'full' : 'delta'
          delete m.reason
          out.push([v.name, i])
        })
        return `device ${name} online${out.length ? `: resync of ${out.map(([v]) => v).join(', ')}` : ''}`
      })
      this.event('device.online', { device: name, resync: out.map(([v]) => v) })
      return { d, out }
    })
    const jobs: number[] = []
    for (const [v, i] of touched.out) {
      // an open volume is rebuilt now; a closed one when it is opened
      if (this.volumes.has(v)) jobs.push(this.startRebuild(v, i))
    }
    return { device: this.deviceInfo(this.cfg.devices.find((x) => x.id === touched.d.id)!), jobs }
  }

  /** Move volume's member on device `from` onto device `to` (a spare or any device with room), rebuilding it there. */
  async replaceMember(volume: string, from: string, to: string, opts: { rate?: number; takeover?: boolean } = {}): Promise<{ job: number | null; volume: VolumeInfo }> {
    if (opts.rate !== undefined) checkSize('rate', opts.rate)
    await this.settle(volume)
    const index = await this.serial(async () => {
      const v = this.cfg.volumes.find((x) => x.name === volume)
      if (!v) throw new VsmError('ENOENT', `no volume named ${JSON.stringify(volume)}`)
      if (v.layout === 'concat' || v.layout === 'stripe') throw new VsmError('EINVAL', `volume ${volume} is ${v.layout}: only redundant volumes can rebuild a member`)
      // a spare taking over from a copy an offline is failing completes that offline's intent
      this.refuseWhileChanging(v, { claims: !opts.takeover })
      const od = this.cfg.devices.find((x) => x.name === from)
      const nd = this.cfg.devices.find((x) => x.name === to)
      if (!od) throw new VsmError('ENOENT', `no device named ${JSON.stringify(from)}`)
      if (!nd) throw new VsmError('ENOENT', `no device named ${JSON.stringify(to)}`)
      const i = v.members.findIndex((m) => m.device === od.id)
      if (i < 0) throw new VsmError('EINVAL', `device ${from} holds no member of volume ${volume}`)
      if (v.members.some((m) => m.device === nd.id)) throw new VsmError('EINVAL', `device ${to} already holds a member of volume ${volume}`)
      if (nd.state !== 'online' && nd.state !== 'spare') throw new VsmError('EINVAL', `device ${to} is ${nd.state}`)
      const r = this.rt.get(nd.id)
      if (!r?.io || r.missing) throw new VsmError('ENODEV', `device ${to} is missing: ${r?.missing ?? 'not open'}`)
      if (!canRun(v, v.members.map((m, j) => j !== i && m.state === 'ok'))) {
        throw new VsmError('EBUSY', `volume ${volume} (${v.layout}) cannot run without its member on ${from} while it is rebuilt`)
      }
      const m = v.members[i]
      const off = fitOne(nd, m.length)
      if (off === null) throw new VsmError('ENOSPC', `device ${to} has no free extent of ${m.length} bytes`)
      // the old copy leaves service before the config says so, so it is never read again
      const lm = this.liveMember(volume, i)
      if (lm?.mirror && !lm.mirror.failed[lm.k]) lm.mirror.failed[lm.k] = true
      lm?.raid5?.takeOut(lm.k)
      await this.store.change((next) => {
        const nv = next.volumes.find((x) => x.id === v.id)!
        nv.members[i] = { device: nd.id, offset: off, length: m.length, state: 'stale', resync: 'full', rebuilt: 0 }
        if (m.group !== undefined) nv.members[i].group = m.group
        freeExtent(next, od.id, volume, m.offset)
        const nnd = next.devices.find((x) => x.id === nd.id)!
        nnd.extents.push({ volume, offset: off, length: m.length })
        if (nnd.state === 'spare') {
          nnd.state = 'online'
          next.spares = next.spares.filter((x) => x !== nd.id)
        }
        return `volume ${volume}: member ${i} moved from device ${from} to ${to}${opts.takeover ? ' (spare takeover)' : ''}, to be rebuilt`
      })
      this.event('volume.replace', { volume, from, to, takeover: !!opts.takeover })
      return i
    })
    // a rebuild onto the copy just replaced stops (it copies to an extent given back), then the new one starts
    const onto = this.rebuilds.get(volume)
    if (onto?.device === from) {
      this.jobs.cancel(onto.job, `its copy on ${from} was replaced by one on ${to}`)
      await this.jobs.wait(onto.job)
    }
    const job = this.volumes.has(volume) ? this.startRebuild(volume, index, opts.rate) : null
    return { job, volume: this.volumeInfo(volume) }
  }

  /** A stale member whose device is here: it can be brought up to date. */
  private rebuildable(m: MemberConfig): boolean {
    const r = this.rt.get(m.device)
    return m.state === 'stale' && !!r?.io && !r.missing
  }

  /** Start (or find running) the job that brings stale member i of an open volume up to date. */
  private startRebuild(name: string, i: number, rate = 0): number {
    const running = this.rebuilds.get(name)
    if (running) return running.job
    const v = this.cfg.volumes.find((x) => x.name === name)!
    const m = v.members[i]
    const d = this.cfg.devices.find((x) => x.id === m.device)!
    const kind = m.resync ?? 'full'
    const info: RebuildInfo = { job: 0, device: d.name, kind, done: 0, total: 0, rate, bytesPerSecond: 0, etaSeconds: null }
    info.job = this.jobs.start('volume.rebuild', async (_signal, progress) => {
      let result: Awaited<ReturnType<Pool['rebuild']>>
      try {
        result = await this.rebuild(name, v.id, i, info, progress)
      } finally {
        this.rebuilds.delete(name)
      }
      // one rebuild runs per volume: the next stale member (a raid10 or 3-copy mirror can have two) goes now
      const next = this.cfg.volumes.find((x) => x.name === name)?.members.findIndex((m) => this.rebuildable(m)) ?? -1
      if (next >= 0 && this.volumes.has(name) && !this.closed) this.startRebuild(name, next)
      return result
    }, { description: `${kind === 'delta' ? 'resync' : 'rebuild'} ${name} onto ${d.name}`, pausable: true })
    this.rebuilds.set(name, info)
    this.event('volume.rebuild-started', { volume: name, device: d.name, kind: kind === 'delta' ? 'resync' : 'rebuild', job: info.job, resumedAt: m.rebuilt ?? 0 })
    return info.job
  }

  private async rebuild(name: string, volumeId: string, i: number, info: RebuildInfo,
      progress: import('../control/jobs').Progress): Promise<{ volume: string; device: string; copied: number }> {
    await this.openVolume(name)
    const v = this.cfg.volumes.find((x) => x.id === volumeId)
    const m = v?.members[i]
    if (!v || !m || m.state !== 'stale') throw new VsmError('ECANCELED', `volume ${name} changed before its rebuild started`)
    const d = this.cfg.devices.find((x) => x.id === m.device)!
    const io = await this.memberIo(v, m)
    const lm = this.liveMember(name, i)!
    const start = Date.now()
    let lastSave = start
    const resumeAt = m.resync === 'full' ? m.rebuilt ?? 0 : 0
    const onChunk = async (done: number, pos: number) => {
      info.done = done
      progress(done, info.total)
      await progress.checkpoint()
      await holdTo(info.rate, start, done)
      // measured after the rate limit's pause, so the figure is what the copy is held to
      const secs = (Date.now() - start) / 1000
      info.bytesPerSecond = secs > 0 ? Math.round(done / secs) : 0
      info.etaSeconds = info.bytesPerSecond > 0 ? Math.ceil((info.total - done) / info.bytesPerSecond) : null
      if ((lm.raid5 || m.resync === 'full') && Date.now() - lastSave >= CHECKPOINT_MS) {
        lastSave = Date.now()
        if (lm.raid5) {
          // every row it needs below pos is written: durable before the config says so
          await lm.raid5.flush()
          await this.saveRebuilt(volumeId, i, m.device, pos)
        } else {
          // ranges are copied in address order, so everything below pos is on the new copy
          await this.saveRebuilt(volumeId, i, m.device, Math.max(resumeAt, pos))
        }
      }
    }
    let copied: number
    if (lm.raid5) {
      if (!lm.raid5.rebuilding) this.attachRaid5(lm.raid5, v, i, io)
      info.total = lm.raid5.rebuildLeft
      copied = await lm.raid5.rebuild(i, { onChunk })
    } else {
      const mirror = lm.mirror!
      if (!mirror.writeOnly[lm.k]) mirror.attach(lm.k, io.data, this.logMember(v, m), io.sums)
      // a full rebuild resumed after a crash: the rest, plus whatever was written meanwhile
      const ranges = m.resync === 'delta' ? mirror.missedRanges() : mergeRanges([...(resumeAt > 0 ? mirror.missedRanges() : []), [resumeAt, mirror.size]])
      info.total = ranges.reduce((s, [lo, hi]) => s + Math.min(hi, mirror.size) - lo, 0)
      copied = await mirror.copyRanges(lm.k, ranges, { onChunk })
    }
    await this.serial(() => this.store.change((next) => {
      const nm = next.volumes.find((x) => x.id === volumeId)?.members[i]
      if (!nm || nm.device !== m.device) return null
      nm.state = 'ok'
      delete nm.resync
      delete nm.rebuilt
      return `volume ${name}: member ${i} on device ${d.name} ${m.resync === 'delta' ? 'resynced' : 'rebuilt'}`
    }))
    this.event('volume.rebuilt', { volume: name, device: d.name, kind: m.resync === 'delta' ? 'resync' : 'rebuild', copied })
    return { volume: name, device: d.name, copied }
  }

  /**
   * Run jobs in another registry from now on. Jobs already resumed at open (before the
   * daemon's registry existed) stop at a chunk boundary and start again there,
   * from the state the config and the layouts keep.
   */
  async useJobs(jobs: Jobs): Promise<void> {
    const old = this.jobs
    if (old === jobs) return
    this.jobs = jobs
    const rebuilds = [...this.rebuilds].map(([name, r]) => [name, r] as const)
    const reshapes = [...this.reshaping].map(([name, st]) => [name, st] as const)
    for (const [, r] of rebuilds) stopJob(old, r.job, 'moved to the daemon\'s job registry')
    for (const [, st] of reshapes) {
      st.stopping = true
      stopJob(old, st.job, 'moved to the daemon\'s job registry')
    }
    await Promise.all([...rebuilds.map(([, r]) => old.wait(r.job)), ...reshapes.map(([, st]) => old.wait(st.job))])
    if (this.closed) return
    for (const [name, r] of rebuilds) {
      const v = this.cfg.volumes.find((x) => x.name === name)
      const i = v?.members.findIndex((m) => m.state === 'stale' && this.cfg.devices.find((d) => d.id === m.device)?.name === r.device) ?? -1
      if (i >= 0) this.startRebuild(name, i, r.rate)
    }
    for (const [name, st] of reshapes) {
      const rs = this.cfg.volumes.find((x) => x.name === name)?.reshape
      if (rs && this.reshaping.get(name) === st) {
        st.stopping = false
        st.job = this.runReshape(name, st, rs)
      }
    }
  }

  /** Verify every copy of a redundant volume and repair what is wrong, as a job; its result is the report. */
  /** Verify and repair a redundant volume as a job; `rate` holds it to that many bytes per second (0: unlimited). */
  async scrubVolume(name: string, opts: { rate?: number } = {}): Promise<{ job: number }> {
    if (opts.rate !== undefined) checkSize('rate', opts.rate)
    const v = this.cfg.volumes.find((x) => x.name === name)
    if (!v) throw new VsmError('ENOENT', `no volume named ${JSON.stringify(name)}`)
    if (v.layout === 'concat' || v.layout === 'stripe') throw new VsmError('EINVAL', `volume ${name} is ${v.layout}: there is no redundancy to scrub`)
    await this.openVolume(name)
    const job = this.jobs.start('volume.scrub', async (_signal, progress) => {
      const lm = this.live.get(name)
      if (!lm) throw new VsmError('ECANCELED', `volume ${name} was closed`)
      const devName = (i: number) => this.cfg.devices.find((d) => d.id === v.members[i].device)?.name ?? '?'
      const start = Date.now()
      const onChunk = async (done: number) => { progress(done, v.size); await holdTo(opts.rate ?? 0, start, done); await progress.checkpoint() }
      const report = { volume: name, checkedBytes: 0, repaired: [] as { device: string; offset: number }[], unrecoverable: [] as { offset: number; device?: string }[], parityRowsFixed: 0 }
      if (lm.raid5) {
        const r = await lm.raid5.scrub({ onChunk })
        report.parityRowsFixed = r.parityRows.length
        report.checkedBytes = v.size
        for (const x of r.repaired) report.repaired.push({ device: devName(x.member), offset: x.offset })
        for (const x of r.unrecoverable) report.unrecoverable.push({ device: devName(x.member), offset: x.offset })
      }
      let base = 0
      for (const g of lm.mirrors) {
        const r = await g.mirror.scrub({ onChunk: (done) => onChunk(base + done) })
        base += g.mirror.size
        report.checkedBytes += r.checkedBytes
        for (const x of r.repaired) report.repaired.push({ device: devName(g.idx[x.copy]), offset: x.offset })
        for (const off of r.unrecoverable) report.unrecoverable.push({ offset: off })
      }
      this.event('volume.scrubbed', {
        volume: name, checkedBytes: report.checkedBytes, repaired: report.repaired.length + report.parityRowsFixed, unrecoverable: report.unrecoverable.length,
        repairs: report.repaired, parityRowsFixed: report.parityRowsFixed, unrecoverableAt: report.unrecoverable,
      }, report.unrecoverable.length ? 'error' : report.repaired.length + report.parityRowsFixed ? 'warn' : 'info')
      return report
    }, { description: `scrub ${name}`, total: v.size, pausable: true })
    return { job }
  }

  /**
   * Grow, move or relayout a volume online: plan the new layout in free space (the old
   * one stays allocated until the end), record it in the config, then copy onto it as
   * a job while every write goes to both; at the end the config switches to the new
   * layout and the old extents are freed. The copy saves a checkpoint about once a
   * second and, after a crash, resumes from it (reshape.ts says why that is sound).
   */
  async reshapeVolume(name: string, kind: 'grow' | 'move' | 'relayout', change: ReshapeChange): Promise<{ job: number; volume: VolumeInfo }> {
    if (change.rate !== undefined) checkSize('rate', change.rate)
    await this.serial(async () => {
      const v = this.cfg.volumes.find((x) => x.name === name)
      if (!v) throw new VsmError('ENOENT', `no volume named ${JSON.stringify(name)}`)
      this.refuseWhileChanging(v)
      if (v.members.some((m) => m.state !== 'ok')) throw new VsmError('EBUSY', `volume ${name} is ${this.info(v).state}: bring it back to healthy first`)
      const devs: string[] = []
      for (const m of v.members) {
        const n = this.cfg.devices.find((d) => d.id === m.device)!.name
        if (!devs.includes(n)) devs.push(n)
      }
      const spec: VolumeSpec = { layout: v.layout, devices: devs, size: v.size, stripeUnit: v.stripeUnit, copies: v.copies }
      if (kind === 'grow') {
        checkSize('size', change.size)
        if (change.size! <= v.size) throw new VsmError('EINVAL', `volume ${name} is already ${v.size} bytes; grow needs a larger size`)
        spec.size = roundUp(change.size!, SUM_BLOCK)
      } else if (kind === 'move') {
        if (!change.from || !devs.includes(change.from)) throw new VsmError('EINVAL', `device ${JSON.stringify(change.from)} holds no part of volume ${name}`)
        if (!change.to || devs.includes(change.to)) throw new VsmError('EINVAL', `device ${JSON.stringify(change.to)} is not a new device for volume ${name}`)
        spec.devices = devs.map((d) => (d === change.from ? change.to! : d))
      } else {
        spec.layout = change.layout as LayoutKind
        spec.devices = change.devices ?? devs
        const striped = spec.layout === 'stripe' || spec.layout === 'raid10' || spec.layout === 'raid5'
        spec.stripeUnit = striped ? change.stripeUnit ?? v.stripeUnit : undefined
        spec.copies = spec.layout === 'mirror' || spec.layout === 'raid10' ? change.copies : undefined
      }
      // planned as if this volume were not there by name; its extents stay taken
      const others = { ...this.cfg, volumes: this.cfg.volumes.filter((x) => x.id !== v.id) }
      let plan: ReturnType<typeof planExactly>
      try {
        plan = planExactly(others, name, spec, randomUUID())
      } catch (e) {
        if ((e as VsmError).code !== 'ENOSPC') throw e
        throw new VsmError('ENOSPC', `cannot ${kind} volume ${name} (${spec.size} bytes) as ${spec.layout} on ${spec.devices.join(',')}: ${errMsg(e)}`)
      }
      plan.volume.created = v.created
      await this.store.change((next) => {
        for (const d of next.devices) d.extents.push(...(plan.extents.get(d.id) ?? []))
        const rs: ReshapeConfig = { target: plan.volume, kind }
        if (change.rate) rs.rate = change.rate
        const log = placeReshapeLog(next, plan.volume)
        if (log) {
          rs.log = log
          next.devices.find((d) => d.id === log.device)!.extents.push({ volume: name, offset: log.offset, length: RESHAPE_LOG_BYTES })
        }
        next.volumes.find((x) => x.id === v.id)!.reshape = rs
        return `volume ${name}: ${kind} to ${spec.layout}, ${spec.size} bytes on ${spec.devices.join(',')} started`
      })
    })
    const handle = this.volumes.get(name)
    if (handle) return { job: await this.beginReshape(name, handle, this.cfg.volumes.find((x) => x.name === name)!.reshape!), volume: this.volumeInfo(name) }
    await this.openVolume(name)
    const st = this.reshaping.get(name)
    if (!st) throw new VsmError('EIO', `volume ${name}: the new layout could not be assembled; 'vsm volume relayout ${name} --abort' gives its extents back`)
    return { job: st.job, volume: this.volumeInfo(name) }
  }

  /**
   * The reshape's write-intent bitmap, in its extent laid out as a device's reserved
   * area lays out its bitmap (a window puts BITMAP_OFFSET at the extent's start).
   * Without a checkpoint the whole volume is copied anyway, so the log starts clean;
   * with one, the bits are what the resumed copy must take again. Null: no log.
   */
  private async reshapeLog(size: number, rs: ReshapeConfig): Promise<DeviceBitmap | null> {
    const d = this.cfg.devices.find((x) => x.id === rs.log?.device)
    const io = d && this.rt.get(d.id)?.io
    if (!rs.log || !d || !io) return null
    const window = new SliceDev(io, d.dataOffset + rs.log.offset - BITMAP_OFFSET, RESERVED_BYTES)
    return rs.copied === undefined ? DeviceBitmap.init(window, size) : DeviceBitmap.load(window, size)
  }

  private async beginReshape(name: string, handle: VolumeHandle, rs: ReshapeConfig): Promise<number> {
    const { dev: target, live: targetLive } = await this.assembleLayout(rs.target)
    const size = handle.inner.size
    const bitmap = await this.reshapeLog(size, rs).catch(() => null)
    // a checkpoint without its log could skip regions written from now on
    if (!bitmap && rs.copied !== undefined) await this.dropCheckpoint(name, rs.target.id, new VsmError('EIO', 'the reshape log cannot be read'))
    const dev = new ReshapeDev(handle.inner, target, bitmap && { bitmap, base: 0 }, (err) => this.dropCheckpoint(name, rs.target.id, err))
    // a copy must not read a range that a write sent to the old layout alone is still changing
    await handle.swap(dev)
    const st: Reshape = { job: 0, dev, id: rs.target.id, targetLive, handle }
    this.reshaping.set(name, st)
    st.job = this.runReshape(name, st, this.cfg.volumes.find((x) => x.name === name)!.reshape!)
    return st.job
  }

  private runReshape(name: string, st: Reshape, rs: ReshapeConfig): number {
    const { dev, targetLive, handle } = st
    const size = dev.size
    // resumed: the regions the log marks below the checkpoint, and everything from it on
    const at = dev.logged ? Math.min(rs.copied ?? 0, size) : 0
    const below = dev.pendingRanges().filter(([lo]) => lo < at).map(([lo, hi]): [number, number] => [lo, Math.min(hi, at)])
    const ranges = mergeRanges(at < size ? [...below, [at, size]] : below)
    const total = ranges.reduce((s, [lo, hi]) => s + hi - lo, 0)
    const layout = rs.target.layout
    const from = this.cfg.volumes.find((x) => x.name === name)!.layout
    const job = this.jobs.start(`volume.${rs.kind}`, async (signal, progress) => {
      const start = Date.now()
      let lastSave = start
      let copied: number
      try {
        await progress.checkpoint()
        copied = await dev.copy(ranges, {
          onChunk: async (done, pos) => {
            progress(done, total)
            await progress.checkpoint()
            await holdTo(rs.rate ?? 0, start, done)
            if (dev.targetFailed) throw new VsmError('EIO', `the new layout of ${name} failed: ${dev.mirror.errors[1]}`)
            if (pos > at && Date.now() - lastSave >= CHECKPOINT_MS) {
              lastSave = Date.now()
              await this.saveCheckpoint(name, st, pos)
            }
          },
        })
        await dev.flush()
      } catch (e) {
        // stopped by the pool: it resumes from its checkpoint; cancelled or failed: the
        // volume goes back to its old layout, so nothing is left half-changed and locked
        if (st.stopping || this.closing) throw e
        const what = `${rs.kind} of ${name} to ${layout}`
        await this.undoReshape(name, st, signal.aborted ? `${what} cancelled` : `${what} failed: ${errMsg(e)}`)
        if (signal.aborted) throw new VsmError('ECANCELED', `${what} cancelled: ${name} stays ${from} and the new extents are freed`)
        throw new VsmError((e as VsmError).code ?? 'EIO', `${what} failed (${errMsg(e)}): ${name} stays ${from} and the new extents are freed`)
      }
      st.switching = true
      let drained = Promise.resolve()
      await this.serial(async () => {
        await this.store.change((next) => {
          const i = next.volumes.findIndex((x) => x.name === name)
          const v = next.volumes[i]
          for (const m of v.members) freeExtent(next, m.device, name, m.offset)
          if (v.reshape!.log) freeExtent(next, v.reshape!.log.device, name, v.reshape!.log.offset)
          next.volumes[i] = v.reshape!.target
          return `volume ${name}: ${rs.kind} done, now ${layout}, ${dev.target.size} bytes`
        })
        // switched in the same step as the commit: only writes already in flight still reach the freed log
        drained = handle.swap(dev.target)
        this.live.set(name, targetLive)
        this.reshaping.delete(name)
      })
      await drained
      await dev.settled()
      await dev.old.close()
      this.event('volume.reshaped', { volume: name, kind: rs.kind, layout, size: dev.target.size, copied, resumedAt: at })
      return { volume: name, copied, resumedAt: at, layout, size: dev.target.size }
    }, {
      description: `${rs.kind} ${name} to ${layout} on ${rs.target.members.length} extents${at ? `, resumed at byte ${at}` : ''}`,
      total, pausable: true, unwinds: true,
      refuseCancel: () => (st.switching ? `the copy is complete and ${name} is switching to its new layout` : null),
    })
    this.event('volume.reshape-started', { volume: name, kind: rs.kind, from, layout, job, resumedAt: at })
    return job
  }

  /** Everything the copy has done up to pos is on the target: flush it there, then record pos as the resume point. */
  private async saveCheckpoint(name: string, st: Reshape, pos: number): Promise<void> {
    if (!st.dev.logged) return
    await st.dev.flushTarget()
    await this.serial(async () => {
      const rs = this.cfg.volumes.find((x) => x.name === name)?.reshape
      // a log lost meanwhile has dropped the checkpoint for good
      if (!st.dev.logged || rs?.target.id !== st.id) return
      await this.store.change((next) => {
        next.volumes.find((x) => x.name === name)!.reshape!.copied = pos
        return `volume ${name}: ${rs.kind} checkpoint at byte ${pos}`
      }, { progress: true })
    })
  }

  /** The reshape's log failed or is unusable: forget its checkpoint durably, so a crash from now on means a full copy. */
  private dropCheckpoint(name: string, targetId: string, err: unknown): Promise<void> {
    this.event('volume.reshape-log-lost', { volume: name, reason: errMsg(err) }, 'warn')
    return this.serial(async () => {
      await this.store.change((next) => {
        const rs = next.volumes.find((x) => x.name === name)?.reshape
        if (rs?.target.id !== targetId || rs.copied === undefined) return null
        delete rs.copied
        return `volume ${name}: ${rs.kind} checkpoint dropped (${errMsg(err)}); a crash now means copying again from the start`
      })
    })
  }

  /**
   * Reverse an unfinished grow/move/relayout: the volume stays on its old layout and the
   * new extents are freed. A running copy is cancelled and unwinds itself (runReshape);
   * one not running (its volume closed, or it could not start) is undone here.
   */
  async abortReshape(name: string): Promise<VolumeInfo> {
    const st = this.reshaping.get(name)
    if (st && this.jobs.get(st.job).state !== 'concluded') {
      this.jobs.cancel(st.job)
      await this.jobs.wait(st.job)
    }
    const v = this.cfg.volumes.find((x) => x.name === name)
    if (!v) throw new VsmError('ENOENT', `no volume named ${JSON.stringify(name)}`)
    if (v.reshape) await this.undoReshape(name, this.reshaping.get(name), 'aborted by the operator')
    else if (!st) throw new VsmError('EINVAL', `volume ${name} is not being changed`)
    return this.volumeInfo(name)
  }

  /** Drop the reshape from the config (its extents and log freed) and put the old layout back under the handle. */
  private async undoReshape(name: string, st: Reshape | undefined, reason: string): Promise<void> {
    await this.serial(() => this.store.change((next) => {
      const nv = next.volumes.find((x) => x.name === name)
      if (!nv?.reshape) return null
      for (const m of nv.reshape.target.members) freeExtent(next, m.device, name, m.offset)
      if (nv.reshape.log) freeExtent(next, nv.reshape.log.device, name, nv.reshape.log.offset)
      const kind = nv.reshape.kind
      delete nv.reshape
      return `volume ${name}: ${kind} undone (${reason}), its new extents freed`
    }))
    const handle = this.volumes.get(name)
    if (st && this.reshaping.get(name) === st) this.reshaping.delete(name)
    if (st && handle && handle.inner === st.dev) {
      await handle.swap(st.dev.old)
      await st.dev.settled()
      await st.dev.target.close()
    }
    this.event('volume.reshape-aborted', { volume: name, reason }, 'warn')
  }

  /** Record how far the rebuild of member i onto device has come; not if the member has been replaced meanwhile. */
  private saveRebuilt(volumeId: string, i: number, device: string, pos: number): Promise<void> {
    return this.serial(async () => {
      await this.store.change((next) => {
        const v = next.volumes.find((x) => x.id === volumeId)
        const nm = v?.members[i]
        if (!nm || nm.state !== 'stale' || nm.device !== device) return null
        nm.rebuilt = pos
        return `volume ${v!.name}: rebuild of member ${i} checkpoint at byte ${pos}`
      }, { progress: true })
    })
  }

  /** Flush and close every open volume (mirrors mark their dirty regions clean), then the devices. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closing = true
    // a rebuild stops at a chunk boundary and resumes from its checkpoint at the next open
    // again while any is left: a rebuild that ends as it is cancelled starts the next stale member's
    for (;;) {
      const running = [...this.rebuilds.values(), ...this.reshaping.values()].map((r) => r.job).filter((id) => this.jobs.get(id).state !== 'concluded')
      if (!running.length) break
      for (const id of running) stopJob(this.jobs, id, 'stopped as the pool closed; it resumes at the next open')
      await Promise.all(running.map((id) => this.jobs.wait(id)))
    }
    await this.lock
    const errors: string[] = []
    for (const [name, v] of [...this.volumes]) {
      try { await v.close() } catch (e) { errors.push(`${name}: ${errMsg(e)}`) }
    }
    await this.lock
    this.closed = true
    for (const [id, r] of this.rt) {
      // a device already recorded as failed is expected to refuse I/O; nothing to report
      const failed = this.cfg.devices.find((d) => d.id === id)?.state === 'failed'
      if (r.bitmap) await r.bitmap.persist(true).catch((e) => { if (!failed) errors.push(errMsg(e)) })
      await r.dev?.close().catch(() => {})
    }
    this.volumes.clear()
    if (errors.length) throw new VsmError('EIO', `pool closed with errors: ${errors.join('; ')}`)
  }

  /**
   * Drop every device handle without flushing or marking anything clean: what a
   * crash leaves behind. For crash tests and for a daemon that must let go fast.
   */
  async abandon(): Promise<void> {
    this.closed = true
    this.volumes.clear()
    for (const r of this.rt.values()) await r.dev?.close().catch(() => {})
  }
}


/** Stop a job the pool will resume (close, a new registry); one already switching ends by itself. */
function stopJob(jobs: Jobs, id: number, reason: string): void {
  try { jobs.cancel(id, reason) } catch { /* refused: it is finishing */ }
}

/** Volumes with a member (of their layout or of the one being built) on device id. */
function volumesOn(cfg: PoolConfig, id: string): VolumeConfig[] {
  return cfg.volumes.filter((v) => [...v.members, ...(v.reshape?.target.members ?? [])].some((m) => m.device === id))
}

/** raid10: member indexes of each mirror group, in stripe column order. */
function groupsOf(v: VolumeConfig): number[][] {
  const out: number[][] = []
  v.members.forEach((m, i) => { (out[m.group ?? 0] ??= []).push(i) })
  return out
}

/** Hold a copy that started at `start` and has done `done` bytes to `rate` bytes per second (0: unlimited). */
async function holdTo(rate: number, start: number, done: number): Promise<void> {
  if (rate <= 0) return
  const due = (done / rate) * 1000 - (Date.now() - start)
  if (due > 0) await sleep(due)
}

/** Give back volume's extent at offset on device deviceId. */
function freeExtent(cfg: PoolConfig, deviceId: string, volume: string, offset: number): void {
  const d = cfg.devices.find((x) => x.id === deviceId)
  if (d) d.extents = d.extents.filter((e) => !(e.volume === volume && e.offset === offset))
}

function mergeRanges(rs: [number, number][]): [number, number][] {
  const out: [number, number][] = []
  for (const r of [...rs].sort((a, b) => a[0] - b[0])) {
    const prev = out[out.length - 1]
    if (prev && r[0] <= prev[1]) prev[1] = Math.max(prev[1], r[1]); else out.push([r[0], r[1]])
  }
  return out
}
