// The state of an open pool that its parts share: the config store, the open devices,
// the open volumes with their layouts and redundancy, the rebuilds and reshapes
// running, the one lock that serializes changes, and the one sink every event goes
// through. Also opening a volume: its layout through the driver table (layouts.ts),
// then resuming what a restart left (a stale member's rebuild, a reshape). The
// operations live in their own modules (assembly, failure, rebuild, relayout, scrub)
// and work on this; pool.ts is the facade.
import { BlockDev, VsmError } from '../block/blockdev'
import type { Device, OpenDeviceOptions } from './device'
import { WritePlug } from './write-queue'
import type { Label } from './label'
import type { DeviceBitmap } from './bitmap'
import type { LogMember } from './drl'
import { DeviceConfig, MemberConfig, PoolConfig, VolumeConfig, LayoutKind, freeBytes, usedBytes } from './config'
import { Jobs } from '../control/jobs'
import type { EventLevel, EventSink } from '../control/events'
import { SliceDev } from './slice'
import { ChecksumTable, tableGeneration } from './checksum'
import { VolumeHandle } from './handle'
import { ConfigStore } from './store'
import { LAYOUTS, Opened, volumeState } from './layouts'
import type { MemberIo, Redundancy } from './redundancy'
import type { Reshape } from './relayout'
import { startRebuild } from './rebuild'
import { beginReshape, dropCheckpoint } from './relayout'
import { memberFailed } from './failure'

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

export interface RebuildInfo {
  job: number
  device: string
  kind: 'delta' | 'full'
  done: number
  total: number
  /** Bytes it would have copied that no table says were ever written: not copied. */
  skipped: number
  /** Bytes per second the copy is held to (0: unlimited). */
  rate: number
  bytesPerSecond: number
  etaSeconds: number | null
}

export interface PoolOptions {
  /** Interpose on each device's I/O (fault injection in tests): name → wrapper. */
  wrapDevice?: (name: string, dev: BlockDev) => BlockDev
  /** Directories no device may be added under (the daemon's FUSE view). */
  protectedPaths?: string[]
  /** A device operation not answered in this many ms abandons the device (default IO_TIMEOUT_MS; 0: wait forever). */
  ioTimeoutMs?: number
}

/**
 * Policy: how long a device may leave an operation unanswered before the pool gives up
 * on it and its redundant copies carry on (VSM_IO_TIMEOUT, in seconds). Long, because an
 * fdatasync of a device with much dirty data on a loaded machine is slow but not dead.
 */
export const IO_TIMEOUT_MS = Number(process.env.VSM_IO_TIMEOUT ?? 120) * 1000

/** An open device of the pool, or why it is not there. */
export interface DevRt {
  dev: Device | null
  io: BlockDev | null
  bitmap: DeviceBitmap | null
  label: Label | null
  /** Set when the device cannot be used; the reason, for messages. */
  missing?: string
  /** Its label is older than the pool: it missed changes, so its copies stay out until resynced. */
  behind?: string
}

export function errMsg(e: unknown): string { return (e as Error)?.message ?? String(e) }

/** How often a copy (rebuild, reshape) records how far it has come. */
export const CHECKPOINT_MS = 1000

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Hold a copy that started at `start` and has done `done` bytes to `rate` bytes per second (0: unlimited). */
export async function holdTo(rate: number, start: number, done: number): Promise<void> {
  if (rate <= 0) return
  const due = (done / rate) * 1000 - (Date.now() - start)
  if (due > 0) await sleep(due)
}

/** Stop a job the pool will resume (close, a new registry); one already switching ends by itself. */
export function stopJob(jobs: Jobs, id: number, reason: string): void {
  try { jobs.cancel(id, reason) } catch { /* refused: it is finishing */ }
}

/** Give back volume's extent at offset on device deviceId. */
export function freeExtent(cfg: PoolConfig, deviceId: string, volume: string, offset: number): void {
  const d = cfg.devices.find((x) => x.id === deviceId)
  if (d) d.extents = d.extents.filter((e) => !(e.volume === volume && e.offset === offset))
}

export class PoolCore {
  /** Where rebuilds and reshapes run; the daemon hands over its registry (useJobs) so `vsm job` sees them. */
  jobs = new Jobs()
  readonly rt = new Map<string, DevRt>()
  /** Open redundant volumes: what failures, rebuilds and scrubs go through. */
  readonly redundancy = new Map<string, Redundancy>()
  readonly rebuilds = new Map<string, RebuildInfo>()
  readonly volumes = new Map<string, VolumeHandle>()
  readonly reshaping = new Map<string, Reshape>()
  private readonly opening = new Map<string, Promise<BlockDev>>()
  /** By layout id, not name: a reshape's new layout is assembled under the volume's name. */
  private readonly resynced = new Map<string, number>()
  private readonly replayed = new Map<string, number>()
  lock: Promise<unknown> = Promise.resolve()
  /** close() has begun: jobs stopped now resume at the next open, they are not cancelled. */
  closing = false
  closed = false
  /** Volumes a change holds between its checks (under the lock) and its commit: name → what. */
  readonly claims = new Map<string, string>()
  /** The devices' writes of one turn of the event loop go to the write threads together (write-queue.ts). */
  readonly plug = new WritePlug()
  /** Every config change goes through it (store.ts). */
  readonly store: ConfigStore
  private sink: EventSink | null = null
  /** Events published before a sink was given (assembly at open), oldest first, bounded. */
  private early: [string, object, EventLevel][] = []

  constructor(readonly home: string, cfg: PoolConfig, readonly opts: PoolOptions) {
    this.store = new ConfigStore(home, cfg, (id) => this.rt.get(id)?.io ?? null,
      (what, e) => this.event(what === 'archive' ? 'pool.archive-failed' : 'pool.file-failed', { reason: errMsg(e) }, 'warn'))
  }

  get cfg(): PoolConfig { return this.store.current }

  /** Publish the pool's events into sink from now on, starting with those held since open. */
  useEvents(sink: EventSink): void {
    this.sink = sink
    for (const [name, data, level] of this.early.splice(0)) sink.publish(name, data, level)
  }

  /** The one place the pool reports a state change: losing redundancy is an error, a planned degradation or an undone change a warning. */
  event(name: string, data: object, level: EventLevel = 'info'): void {
    if (this.sink) this.sink.publish(name, data, level)
    else if (this.early.push([name, data, level]) > 256) this.early.shift()
  }

  /** Run mutations one at a time, in call order. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(() => {
      if (this.closed) throw new VsmError('EIO', 'pool is closed')
      return fn()
    })
    this.lock = run.catch(() => {})
    return run
  }

  get ioTimeoutMs(): number { return this.opts.ioTimeoutMs ?? IO_TIMEOUT_MS }

  /** How the pool's devices are opened: under its I/O timeout, their writes plugged together. */
  get deviceOptions(): OpenDeviceOptions { return { timeoutMs: this.ioTimeoutMs, plug: this.plug } }

  wrap(name: string, dev: BlockDev): BlockDev {
    return this.opts.wrapDevice ? this.opts.wrapDevice(name, dev) : dev
  }

  volume(name: string): VolumeConfig {
    const v = this.cfg.volumes.find((x) => x.name === name)
    if (!v) throw new VsmError('ENOENT', `no volume named ${JSON.stringify(name)}`)
    return v
  }

  /** The data window of member m and, on a checksummed volume, its checksum table. */
  async memberIo(v: VolumeConfig, m: MemberConfig): Promise<MemberIo> {
    const io = this.rt.get(m.device)!.io!
    const d = this.cfg.devices.find((x) => x.id === m.device)!
    const base = d.dataOffset + m.offset, len = m.length - (v.checksums ?? 0)
    const generation = v.checksumSalt ? tableGeneration(v.checksumSalt, m.device, m.offset) : undefined
    const sums = v.checksums ? await ChecksumTable.load(new SliceDev(io, base + len, v.checksums), len, { generation }) : null
    return { data: new SliceDev(io, base, len), sums }
  }

  /** Where member m of v keeps its write-intent bits: its device's bitmap, at its row 0. */
  logMember(v: VolumeConfig, m: MemberConfig): LogMember | null {
    const bitmap = this.rt.get(m.device)?.bitmap
    return bitmap ? { bitmap, base: m.offset + (v.journal ?? 0) } : null
  }

  /** A stale member whose device is here: it can be brought up to date. */
  rebuildable(m: MemberConfig): boolean {
    const r = this.rt.get(m.device)
    return m.state === 'stale' && !!r?.io && !r.missing
  }

  deviceInfo(d: DeviceConfig): DeviceInfo {
    const r = this.rt.get(d.id)
    const info: DeviceInfo = {
      name: d.name, id: d.id, path: d.path, size: d.size, free: freeBytes(d), used: usedBytes(d),
      state: r?.missing || !r ? 'missing' : d.state,
      blockDevice: d.blockDevice,
    }
    if (r?.missing ?? r?.behind) info.reason = r?.missing ?? r?.behind
    return info
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

  info(v: VolumeConfig): VolumeInfo {
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

  volumeInfo(name: string): VolumeInfo {
    return this.info(this.volume(name))
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

  /** The layout objects of volume config v (the volume itself, or a reshape target), resynced or replayed. */
  async openLayout(v: VolumeConfig): Promise<Opened> {
    const ios = await Promise.all(v.members.map((m) => {
      const r = this.rt.get(m.device)
      return m.state !== 'ok' || !r?.io || r.missing ? null : this.memberIo(v, m)
    }))
    const opened = await LAYOUTS[v.layout].open(v, {
      ios,
      log: (i) => this.logMember(v, v.members[i]),
      rebuildable: (i) => this.rebuildable(v.members[i]),
      memberIo: (i) => this.memberIo(v, v.members[i]),
      onMemberFailed: (i, err) => memberFailed(this, v.id, i, err),
      deviceName: (i) => this.cfg.devices.find((x) => x.id === v.members[i].device)?.name ?? v.members[i].device,
    })
    if (opened.resynced !== undefined) this.resynced.set(v.id, opened.resynced)
    if (opened.replayed !== undefined) this.replayed.set(v.id, opened.replayed)
    if (opened.dev.size !== v.size) throw new VsmError('EIO', `volume ${v.name} assembles to ${opened.dev.size} bytes, config says ${v.size}`)
    return opened
  }

  /** Record (or forget) the redundancy of open volume name. */
  setRedundancy(name: string, r: Redundancy | null): void {
    if (r) this.redundancy.set(name, r)
    else this.redundancy.delete(name)
  }

  private async build(name: string): Promise<BlockDev> {
    if (this.closed) throw new VsmError('EIO', 'pool is closed')
    const v = this.volume(name)
    const { dev, redundancy, resynced, replayed } = await this.openLayout(v)
    // published where it is done: what a crash left and what recovering from it took
    if (resynced || replayed) {
      this.event('volume.recovered', {
        volume: name, resyncedBytes: resynced ?? 0, replayedRecords: replayed ?? 0,
        reason: `unclean stop: ${resynced ? `${resynced} bytes of dirty regions resynced` : `${replayed} stripe journal records replayed`}`,
      }, 'warn')
    }
    const handle = new VolumeHandle(dev, () => {
      this.volumes.delete(name)
      this.redundancy.delete(name)
      this.reshaping.delete(name)
    })
    if (this.closed) { await dev.close().catch(() => {}); throw new VsmError('EIO', 'pool is closed') }
    this.volumes.set(name, handle)
    this.setRedundancy(name, redundancy)
    // a member left stale by a restart (or a crash mid-rebuild) picks up where it was
    v.members.forEach((m, i) => { if (this.rebuildable(m)) startRebuild(this, name, i) })
    // so does a reshape, from its checkpoint, writes meanwhile going to both layouts
    if (v.reshape) {
      try {
        await beginReshape(this, name, handle, v.reshape)
      } catch (e) {
        // the old layout serves alone until the reshape is aborted: writes now miss the target
        await dropCheckpoint(this, name, v.reshape.target.id, e)
      }
    }
    return handle
  }
}
