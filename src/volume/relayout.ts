// Relayout: grow, move or change the layout of a volume online. The new layout is
// planned in free space and recorded, a job copies onto it while every write goes to
// both (reshape.ts), a checkpoint about once a second lets a crash resume it, and at the
// end the config switches to the new layout and frees the old extents; a cancel, a
// failure or an abort gives the new extents back and keeps the old layout.
import { randomUUID } from 'crypto'
import { VsmError } from '../block/blockdev'
import { LayoutKind, ReshapeConfig, VolumeSpec, checkSize, roundUp, placeReshapeLog, RESHAPE_LOG_BYTES } from './config'
import { BITMAP_OFFSET, RESERVED_BYTES } from './label'
import { DeviceBitmap } from './bitmap'
import { SUM_BLOCK } from './checksum'
import { SliceDev } from './slice'
import { ReshapeDev } from './reshape'
import type { VolumeHandle } from './handle'
import { LAYOUTS, LayoutDriver, planExactly } from './layouts'
import { Redundancy, mergeRanges } from './redundancy'
import { intersectRanges, rangesBytes } from '../block/ranges'
import { refuseWhileChanging } from './failure'
import { CHECKPOINT_MS, PoolCore, VolumeInfo, errMsg, freeExtent, holdTo } from './core'

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

/** A volume being copied onto a new layout: writes go to both through a ReshapeDev until the switch. */
export interface Reshape {
  job: number
  dev: ReshapeDev
  /** The target's volume id: tells this reshape from a later one of the same volume. */
  id: string
  /** The new layout's, in service from the switch on. */
  targetRedundancy: Redundancy | null
  handle: VolumeHandle
  /** The pool stops the job to resume it (close, another job registry): not an abort. */
  stopping?: boolean
  /** The copy is complete and the config is switching: too late to abort. */
  switching?: boolean
}

/**
 * Grow, move or relayout a volume online: plan the new layout in free space (the old
 * one stays allocated until the end), record it in the config, then copy onto it as
 * a job while every write goes to both; at the end the config switches to the new
 * layout and the old extents are freed. The copy saves a checkpoint about once a
 * second and, after a crash, resumes from it (reshape.ts says why that is sound).
 */
export async function reshapeVolume(core: PoolCore, name: string, kind: 'grow' | 'move' | 'relayout', change: ReshapeChange): Promise<{ job: number; volume: VolumeInfo }> {
  if (change.rate !== undefined) checkSize('rate', change.rate)
  await core.serial(async () => {
    const v = core.volume(name)
    refuseWhileChanging(core, v)
    if (v.members.some((m) => m.state !== 'ok')) throw new VsmError('EBUSY', `volume ${name} is ${core.info(v).state}: bring it back to healthy first`)
    const devs: string[] = []
    for (const m of v.members) {
      const n = core.cfg.devices.find((d) => d.id === m.device)!.name
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
      // an unknown layout is refused by the plan, with the list of known ones
      const driver = LAYOUTS[spec.layout] as LayoutDriver | undefined
      spec.stripeUnit = driver?.striped ? change.stripeUnit ?? v.stripeUnit : undefined
      spec.copies = driver?.copies ? change.copies : undefined
    }
    // planned as if this volume were not there by name; its extents stay taken
    const others = { ...core.cfg, volumes: core.cfg.volumes.filter((x) => x.id !== v.id) }
    let plan: ReturnType<typeof planExactly>
    try {
      plan = planExactly(others, name, spec, randomUUID())
    } catch (e) {
      if ((e as VsmError).code !== 'ENOSPC') throw e
      throw new VsmError('ENOSPC', `cannot ${kind} volume ${name} (${spec.size} bytes) as ${spec.layout} on ${spec.devices.join(',')}: ${errMsg(e)}`)
    }
    plan.volume.created = v.created
    await core.store.change((next) => {
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
  const handle = core.volumes.get(name)
  if (handle) return { job: await beginReshape(core, name, handle, core.cfg.volumes.find((x) => x.name === name)!.reshape!), volume: core.volumeInfo(name) }
  await core.openVolume(name)
  const st = core.reshaping.get(name)
  if (!st) throw new VsmError('EIO', `volume ${name}: the new layout could not be assembled; 'vsm volume relayout ${name} --abort' gives its extents back`)
  return { job: st.job, volume: core.volumeInfo(name) }
}

/**
 * The reshape's write-intent bitmap, in its extent laid out as a device's reserved
 * area lays out its bitmap (a window puts BITMAP_OFFSET at the extent's start).
 * Without a checkpoint the whole volume is copied anyway, so the log starts clean;
 * with one, the bits are what the resumed copy must take again. Null: no log.
 */
async function reshapeLog(core: PoolCore, size: number, rs: ReshapeConfig): Promise<DeviceBitmap | null> {
  const d = core.cfg.devices.find((x) => x.id === rs.log?.device)
  const io = d && core.rt.get(d.id)?.io
  if (!rs.log || !d || !io) return null
  const window = new SliceDev(io, d.dataOffset + rs.log.offset - BITMAP_OFFSET, RESERVED_BYTES)
  return rs.copied === undefined ? DeviceBitmap.init(window, size) : DeviceBitmap.load(window, size)
}

export async function beginReshape(core: PoolCore, name: string, handle: VolumeHandle, rs: ReshapeConfig): Promise<number> {
  const { dev: target, redundancy: targetRedundancy } = await core.openLayout(rs.target)
  const size = handle.inner.size
  const bitmap = await reshapeLog(core, size, rs).catch(() => null)
  // a checkpoint without its log could skip regions written from now on
  if (!bitmap && rs.copied !== undefined) await dropCheckpoint(core, name, rs.target.id, new VsmError('EIO', 'the reshape log cannot be read'))
  const dev = new ReshapeDev(handle.inner, target, bitmap && { bitmap, base: 0 }, (err) => dropCheckpoint(core, name, rs.target.id, err))
  // a copy must not read a range that a write sent to the old layout alone is still changing
  await handle.swap(dev)
  const st: Reshape = { job: 0, dev, id: rs.target.id, targetRedundancy, handle }
  core.reshaping.set(name, st)
  st.job = runReshape(core, name, st, core.cfg.volumes.find((x) => x.name === name)!.reshape!)
  return st.job
}

export function runReshape(core: PoolCore, name: string, st: Reshape, rs: ReshapeConfig): number {
  const { dev, targetRedundancy, handle } = st
  const size = dev.size
  // resumed: the regions the log marks below the checkpoint, and everything from it on
  const at = dev.logged ? Math.min(rs.copied ?? 0, size) : 0
  const below = dev.pendingRanges().filter(([lo]) => lo < at).map(([lo, hi]): [number, number] => [lo, Math.min(hi, at)])
  const ranges = mergeRanges(at < size ? [...below, [at, size]] : below)
  const total = ranges.reduce((s, [lo, hi]) => s + hi - lo, 0)
  const layout = rs.target.layout
  const from = core.cfg.volumes.find((x) => x.name === name)!.layout
  const job = core.jobs.start(`volume.${rs.kind}`, async (signal, progress) => {
    const start = Date.now()
    let lastSave = start
    let copied: number, skipped = 0
    try {
      await progress.checkpoint()
      // asked once every write goes to both layouts: what the old one's tables do not mark
      // now was never written, and stays never written on the new one (no old layout's
      // tables: everything is copied)
      const used = await core.redundancy.get(name)?.usedRanges()
      const copying = used ? intersectRanges(ranges, used) : ranges
      const toCopy = rangesBytes(copying)
      skipped = total - toCopy
      progress(0, toCopy)
      copied = await dev.copy(copying, {
        onChunk: async (done, pos) => {
          progress(done, toCopy)
          await progress.checkpoint()
          await holdTo(rs.rate ?? 0, start, done)
          if (dev.targetFailed) throw new VsmError('EIO', `the new layout of ${name} failed: ${dev.mirror.errors[1]}`)
          if (pos > at && Date.now() - lastSave >= CHECKPOINT_MS) {
            lastSave = Date.now()
            await saveCheckpoint(core, name, st, pos)
          }
        },
      })
      await dev.flush()
    } catch (e) {
      // stopped by the pool: it resumes from its checkpoint; cancelled or failed: the
      // volume goes back to its old layout, so nothing is left half-changed and locked
      if (st.stopping || core.closing) throw e
      const what = `${rs.kind} of ${name} to ${layout}`
      await undoReshape(core, name, st, signal.aborted ? `${what} cancelled` : `${what} failed: ${errMsg(e)}`)
      if (signal.aborted) throw new VsmError('ECANCELED', `${what} cancelled: ${name} stays ${from} and the new extents are freed`)
      throw new VsmError((e as VsmError).code ?? 'EIO', `${what} failed (${errMsg(e)}): ${name} stays ${from} and the new extents are freed`)
    }
    st.switching = true
    let drained = Promise.resolve()
    await core.serial(async () => {
      await core.store.change((next) => {
        const i = next.volumes.findIndex((x) => x.name === name)
        const v = next.volumes[i]
        for (const m of v.members) freeExtent(next, m.device, name, m.offset)
        if (v.reshape!.log) freeExtent(next, v.reshape!.log.device, name, v.reshape!.log.offset)
        next.volumes[i] = v.reshape!.target
        return `volume ${name}: ${rs.kind} done, now ${layout}, ${dev.target.size} bytes`
      })
      // switched in the same step as the commit: only writes already in flight still reach the freed log
      drained = handle.swap(dev.target)
      core.setRedundancy(name, targetRedundancy)
      core.reshaping.delete(name)
    })
    await drained
    await dev.settled()
    await dev.old.close()
    core.event('volume.reshaped', { volume: name, kind: rs.kind, layout, size: dev.target.size, copied, skipped, resumedAt: at })
    return { volume: name, copied, skipped, resumedAt: at, layout, size: dev.target.size }
  }, {
    description: `${rs.kind} ${name} to ${layout} on ${rs.target.members.length} extents${at ? `, resumed at byte ${at}` : ''}`,
    total, pausable: true, unwinds: true,
    refuseCancel: () => (st.switching ? `the copy is complete and ${name} is switching to its new layout` : null),
  })
  core.event('volume.reshape-started', { volume: name, kind: rs.kind, from, layout, job, resumedAt: at })
  return job
}

/** Everything the copy has done up to pos is on the target: flush it there, then record pos as the resume point. */
async function saveCheckpoint(core: PoolCore, name: string, st: Reshape, pos: number): Promise<void> {
  if (!st.dev.logged) return
  await st.dev.flushTarget()
  await core.serial(async () => {
    const rs = core.cfg.volumes.find((x) => x.name === name)?.reshape
    // a log lost meanwhile has dropped the checkpoint for good
    if (!st.dev.logged || rs?.target.id !== st.id) return
    await core.store.change((next) => {
      next.volumes.find((x) => x.name === name)!.reshape!.copied = pos
      return `volume ${name}: ${rs.kind} checkpoint at byte ${pos}`
    }, { progress: true })
  })
}

/** The reshape's log failed or is unusable: forget its checkpoint durably, so a crash from now on means a full copy. */
export function dropCheckpoint(core: PoolCore, name: string, targetId: string, err: unknown): Promise<void> {
  core.event('volume.reshape-log-lost', { volume: name, reason: errMsg(err) }, 'warn')
  return core.serial(async () => {
    await core.store.change((next) => {
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
export async function abortReshape(core: PoolCore, name: string): Promise<VolumeInfo> {
  const st = core.reshaping.get(name)
  if (st && core.jobs.get(st.job).state !== 'concluded') {
    core.jobs.cancel(st.job)
    await core.jobs.wait(st.job)
  }
  const v = core.volume(name)
  if (v.reshape) await undoReshape(core, name, core.reshaping.get(name), 'aborted by the operator')
  else if (!st) throw new VsmError('EINVAL', `volume ${name} is not being changed`)
  return core.volumeInfo(name)
}

/** Drop the reshape from the config (its extents and log freed) and put the old layout back under the handle. */
async function undoReshape(core: PoolCore, name: string, st: Reshape | undefined, reason: string): Promise<void> {
  await core.serial(() => core.store.change((next) => {
    const nv = next.volumes.find((x) => x.name === name)
    if (!nv?.reshape) return null
    for (const m of nv.reshape.target.members) freeExtent(next, m.device, name, m.offset)
    if (nv.reshape.log) freeExtent(next, nv.reshape.log.device, name, nv.reshape.log.offset)
    const kind = nv.reshape.kind
    delete nv.reshape
    return `volume ${name}: ${kind} undone (${reason}), its new extents freed`
  }))
  const handle = core.volumes.get(name)
  if (st && core.reshaping.get(name) === st) core.reshaping.delete(name)
  if (st && handle && handle.inner === st.dev) {
    await handle.swap(st.dev.old)
    await st.dev.settled()
    await st.dev.target.close()
  }
  core.event('volume.reshape-aborted', { volume: name, reason }, 'warn')
}
