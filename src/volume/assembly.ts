// Assembly: finding a pool's config and devices when it opens. The config is pool.json
// or, when that is lost, the newest one the labels of the devices in the home carry;
// every device is opened and its label checked; a newer config on any label (a crash
// between label writes and pool.json) is followed; a member whose device is missing
// is failed if its volume can run without it, else the open is refused.
import { promises as fsp } from 'fs'
import * as path from 'path'
import { VsmError } from '../block/blockdev'
import { Device, openDevice } from './device'
import { Label, RESERVED_BYTES, readLabel } from './label'
import { DeviceBitmap } from './bitmap'
import type { DeviceConfig, PoolConfig } from './config'
import { LAYOUTS } from './layouts'
import { ConfigStore, POOL_FILE } from './store'
import { DevRt, PoolCore, errMsg } from './core'

/** A pool is here if its pool.json is, or if devices under the home carry its labels. */
export async function poolExists(home: string): Promise<boolean> {
  return (await ConfigStore.fileExists(home)) || (await scan(path.resolve(home))).found.length > 0
}

/**
 * The config to assemble from: pool.json, or the newest config any device in the home
 * carries, with devices found where they are now. fileSeq: pool.json's seq (null: none).
 * refused: devices seen but not used, and why (another pool's label).
 */
export async function findConfig(home: string): Promise<{ cfg: PoolConfig; fileSeq: number | null; refused: { path: string; reason: string }[] }> {
  let cfg = await ConfigStore.readFile(home)
  const fileSeq = cfg?.seq ?? null
  let refused: { path: string; reason: string }[] = []
  if (!cfg) {
    const found = await scan(home)
    if (!found.found.length) {
      throw new VsmError('ENOENT', `no pool in ${home} (${POOL_FILE} not found, and no device in ${home} or ${path.join(home, 'devices')} carries a vsm label${found.refused.length ? ' of a single pool' : ''})`)
    }
    cfg = found.found.reduce((a, b) => (b.label.seq > a.label.seq ? b : a)).label.config
    for (const f of found.found) {
      const d = cfg.devices.find((x) => x.id === f.label.deviceId)
      if (d) d.path = f.path
    }
    refused = found.refused
  }
  if (cfg?.format !== 'vsm-pool' || typeof cfg.poolId !== 'string') {
    throw new VsmError('EINVAL', `${path.join(home, POOL_FILE)} is not a vsm pool configuration`)
  }
  return { cfg, fileSeq, refused }
}

/**
 * Labels of the devices in <home>/devices and <home> itself: where a pool whose
 * pool.json is lost is assembled from. Only one pool can own a home; devices of any
 * other pool are refused, with the reason.
 */
async function scan(home: string): Promise<{ found: { path: string; label: Label }[]; refused: { path: string; reason: string }[] }> {
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

/** Open every device, adopt the newest config found in any label, check that every volume can run. */
export async function assemble(core: PoolCore, fileCfg: PoolConfig, fileSeq: number | null): Promise<void> {
  let best = fileCfg
  // a crash between label writes and pool.json leaves newer configs on devices; follow them
  for (let round = 0; round < 4; round++) {
    for (const d of best.devices) if (!core.rt.has(d.id)) core.rt.set(d.id, await openMember(core, best, d))
    let newest = best
    for (const r of core.rt.values()) {
      if (r.label && r.label.poolId === best.poolId && r.label.seq > newest.seq) newest = r.label.config
    }
    if (newest === best) break
    best = newest
  }
  core.store.assembled(best)
  for (const [id, r] of core.rt) {
    if (!best.devices.some((d) => d.id === id)) {
      core.rt.delete(id)
      await r.dev?.close().catch(() => {})
    }
  }
  // labels of a device listed in an older config may still identify it; recheck against the adopted one
  for (const d of best.devices) {
    const r = core.rt.get(d.id)!
    if (!r.missing && r.dev && r.dev.size < d.size) r.missing = `device is ${r.dev.size} bytes, config says ${d.size}`
    if (r.missing) {
      core.event('device.missing', { device: d.name, path: d.path, reason: r.missing }, 'warn')
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
  const changed = await core.store.change((next) => {
    for (const v of next.volumes) {
      for (const m of v.members) {
        const r = core.rt.get(m.device)
        const d = next.devices.find((x) => x.id === m.device)
        if (m.state !== 'ok' || !r?.missing) continue
        const why = `device ${d?.name ?? m.device} (${d?.path ?? '?'}) is missing: ${r.missing}`
        if (!LAYOUTS[v.layout].canRun(v, v.members.map((x) => x !== m && x.state === 'ok' && !core.rt.get(x.device)?.missing))) {
          throw new VsmError('ENODEV', `volume ${v.name} (${v.layout}) cannot run without device ${d?.name ?? m.device} (${d?.path ?? '?'}): ${r.missing}`)
        }
        m.state = 'failed'
        m.reason = why
        failedNow.push(`${v.name} on ${d?.name ?? m.device}`)
        core.event('volume.member-failed', { volume: v.name, device: d?.name ?? m.device, reason: why, at: 'open' }, 'error')
      }
      if (!LAYOUTS[v.layout].canRun(v, v.members.map((m) => m.state === 'ok'))) {
        throw new VsmError('ENODEV', `volume ${v.name} (${v.layout}) has too few members left: ${v.members.map((m) => m.reason ?? m.state).join('; ')}`)
      }
    }
    return failedNow.length ? `assembled with devices missing: member${failedNow.length > 1 ? 's' : ''} ${failedNow.join(', ')} failed` : null
  })
  if (!changed) {
    // bring lagging labels and pool.json up to the adopted generation
    await core.store.catchUp(fileSeq, best.devices.filter((d) => {
      const r = core.rt.get(d.id)!
      return !r.missing && (!r.label || r.label.seq < best.seq)
    }))
  }
}

/** Open device d of cfg and check its label is this pool's, for this device. */
export async function openMember(core: PoolCore, cfg: PoolConfig, d: DeviceConfig): Promise<DevRt> {
  let dev: Device
  try {
    dev = await openDevice(d.path, core.deviceOptions)
  } catch (e) {
    return { dev: null, io: null, bitmap: null, label: null, missing: `cannot open ${d.path}: ${errMsg(e)}` }
  }
  const io = core.wrap(d.name, dev)
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
