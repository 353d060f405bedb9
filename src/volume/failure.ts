// Failure handling, the pool's policy for losing and regaining members: a member that
// failed at runtime is recorded (and a hot spare takes over), an operator takes a
// device offline or brings it back (its copies resynced by what they missed), or moves
// a member onto another device. Refusals that protect a change under way (a reshape, an
// offline's claim) are decided here, under the pool lock. The layouts act through the
// Redundancy interface; copying is rebuild.ts.
import { VsmError } from '../block/blockdev'
import { DeviceConfig, MemberConfig, PoolConfig, VolumeConfig, checkSize, fitOne, pickSpare } from './config'
import { DeviceBitmap } from './bitmap'
import { LAYOUTS } from './layouts'
import { openMember } from './assembly'
import { startRebuild } from './rebuild'
import { DeviceInfo, PoolCore, VolumeInfo, errMsg, freeExtent } from './core'

/** Volumes with a member (of their layout or of the one being built) on device id. */
function volumesOn(cfg: PoolConfig, id: string): VolumeConfig[] {
  return cfg.volumes.filter((v) => [...v.members, ...(v.reshape?.target.members ?? [])].some((m) => m.device === id))
}

/** A redundant volume's member failed at runtime: record it so no later assembly trusts that copy. */
export function memberFailed(core: PoolCore, volumeId: string, index: number, err: unknown): Promise<void> {
  return core.serial(async () => {
    const out: { v?: VolumeConfig; m?: MemberConfig; d?: DeviceConfig; inService?: boolean } = {}
    await core.store.change((next) => {
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
    core.event('volume.member-failed', { volume: v.name, device: d?.name, reason: m.reason, state: core.info(v).state }, core.claims.has(v.name) ? 'warn' : 'error')
    // policy: a hot spare takes over at once (in a volume in service); started after this mutation, not inside it
    const spare = inService && pickSpare(core.cfg, m.length)
    if (spare && d) {
      core.event('volume.spare-takeover', { volume: v.name, from: d.name, spare: spare.name, reason: m.reason }, 'warn')
      setImmediate(() => replaceMember(core, v.name, d.name, spare.name, { takeover: true }).catch((e) =>
        core.event('volume.spare-failed', { volume: v.name, spare: spare.name, reason: errMsg(e) }, 'error')))
    }
  })
}

/**
 * Before a planned degradation: two flushes let the dirty-region log clear every
 * idle region, so what the absent copy is later owed is only what is written after.
 */
export async function settle(core: PoolCore, name: string): Promise<void> {
  const dev = core.volumes.get(name)
  if (!dev) return
  await dev.flush()
  await dev.flush()
}

/**
 * Policy: a volume being grown, moved or relaid out takes no other change to its members
 * (replace, offline, online) until that ends or is aborted; the reshape copies from the
 * old layout while writes go to both, and a member swapped under it meanwhile is not
 * covered by either layout's resume state (the volume ztest lost raid5 bytes that way).
 * Nor does a volume an offline has claimed: that one checked and is failing members
 * outside the lock, and a change planned on the config before it lands would be stale.
 */
export function refuseWhileChanging(core: PoolCore, v: VolumeConfig, opts: { claims?: boolean } = {}): void {
  if (v.reshape) throw new VsmError('EBUSY', `volume ${v.name} is being changed (${v.reshape.kind}); wait for it or abort it first`)
  const claim = opts.claims !== false && core.claims.get(v.name)
  if (claim) throw new VsmError('EBUSY', `volume ${v.name} is being changed (${claim}); try again when that is done`)
}

/** How long an offline waits for the device's volumes to settle before abandoning the device's I/O. */
const OFFLINE_GRACE_MS = 5000

/** Take a device out of service on purpose (as mdadm --fail); refused if a volume would stop. */
export async function offlineDevice(core: PoolCore, name: string): Promise<DeviceInfo> {
  const why = new VsmError('EIO', 'taken offline by the operator')
  const claim = `device ${name} is being taken offline`
  // checked and claimed under the lock: a relayout, replace or other offline issued
  // meanwhile sees the claim and is refused, so none of them judges a stale config
  const { d, claimed } = await core.serial(async () => {
    const d = core.cfg.devices.find((x) => x.name === name)
    if (!d) throw new VsmError('ENOENT', `no device named ${JSON.stringify(name)}`)
    if (d.state === 'spare') throw new VsmError('EINVAL', `device ${name} is a spare, not in service`)
    volumesOn(core.cfg, d.id).forEach((v) => refuseWhileChanging(core, v))
    for (const v of core.cfg.volumes) {
      const ok = v.members.map((m) => m.state === 'ok' && m.device !== d.id)
      if (v.members.some((m) => m.device === d.id) && !LAYOUTS[v.layout].canRun(v, ok)) {
        throw new VsmError('EBUSY', `volume ${v.name} (${v.layout}) cannot run without device ${name}`)
      }
    }
    const claimed = core.cfg.volumes.filter((v) => v.members.some((m) => m.device === d.id)).map((v) => v.name)
    for (const v of claimed) core.claims.set(v, claim)
    return { d, claimed }
  })
  const release = () => { for (const v of claimed) if (core.claims.get(v) === claim) core.claims.delete(v) }
  // a device that does not answer cannot settle: after a grace its I/O is abandoned, so
  // what is in flight completes on the other copies (and the DRL keeps what it missed)
  const dev = core.rt.get(d.id)?.dev
  const grace = setTimeout(() => dev?.abandon(why.message), OFFLINE_GRACE_MS)
  try {
    try {
      for (const v of claimed) await settle(core, v)
    } finally {
      clearTimeout(grace)
    }
    for (const v of core.cfg.volumes) {
      for (let i = 0; i < v.members.length; i++) {
        if (v.members[i].device !== d.id) continue
        await core.redundancy.get(v.name)?.failMember(i, why)
      }
    }
    return await core.serial(async () => {
      await core.store.change((next) => {
        next.devices.find((x) => x.id === d.id)!.state = 'offline'
        for (const v of next.volumes) for (const m of v.members) {
          if (m.device !== d.id || m.state === 'failed') continue
          m.state = 'failed'
          m.reason = why.message
        }
        return `device ${name} taken offline${claimed.length ? `: volumes ${claimed.join(', ')} degraded` : ''}`
      })
      release()
      core.event('device.offline', { device: name, reason: why.message, volumes: claimed }, 'warn')
      return core.deviceInfo(core.cfg.devices.find((x) => x.id === d.id)!)
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
export async function onlineDevice(core: PoolCore, name: string): Promise<{ device: DeviceInfo; jobs: number[] }> {
  const touched = await core.serial(async () => {
    const d = core.cfg.devices.find((x) => x.name === name)
    if (!d) throw new VsmError('ENOENT', `no device named ${JSON.stringify(name)}`)
    const hasFailed = core.cfg.volumes.some((v) => v.members.some((m) => m.device === d.id && m.state === 'failed'))
    if (d.state !== 'offline' && d.state !== 'failed' && !core.rt.get(d.id)?.missing && !hasFailed) {
      throw new VsmError('EINVAL', `device ${name} is ${d.state}, not offline or failed`)
    }
    volumesOn(core.cfg, d.id).forEach((v) => refuseWhileChanging(core, v))
    let r = core.rt.get(d.id)
    if (!r?.io || r.missing || r.dev?.abandoned) {
      // an abandoned device is reopened: its old descriptors may still be stuck in the kernel
      await r?.dev?.close()
      r = await openMember(core, core.cfg, d)
      if (r.missing) throw new VsmError('ENODEV', `device ${name} (${d.path}) is still unusable: ${r.missing}`)
      r.bitmap = await DeviceBitmap.load(r.io!, d.dataSize)
      core.rt.set(d.id, r)
    }
    delete r.behind
    const out: [string, number][] = []
    await core.store.change((next) => {
      next.devices.find((x) => x.id === d.id)!.state = 'online'
      for (const v of next.volumes) v.members.forEach((m, i) => {
        if (m.device !== d.id || m.state !== 'failed') return
        m.state = 'stale'
        m.resync = LAYOUTS[v.layout].catchUp?.(v) ?? 'delta'
        delete m.reason
        out.push([v.name, i])
      })
      return `device ${name} online${out.length ? `: resync of ${out.map(([v]) => v).join(', ')}` : ''}`
    })
    core.event('device.online', { device: name, resync: out.map(([v]) => v) })
    return { d, out }
  })
  const jobs: number[] = []
  for (const [v, i] of touched.out) {
    // an open volume is rebuilt now; a closed one when it is opened
    if (core.volumes.has(v)) jobs.push(startRebuild(core, v, i))
  }
  return { device: core.deviceInfo(core.cfg.devices.find((x) => x.id === touched.d.id)!), jobs }
}

/** Move volume's member on device `from` onto device `to` (a spare or any device with room), rebuilding it there. */
export async function replaceMember(core: PoolCore, volume: string, from: string, to: string, opts: { rate?: number; takeover?: boolean } = {}): Promise<{ job: number | null; volume: VolumeInfo }> {
  if (opts.rate !== undefined) checkSize('rate', opts.rate)
  await settle(core, volume)
  const index = await core.serial(async () => {
    const v = core.volume(volume)
    if (!LAYOUTS[v.layout].redundant) throw new VsmError('EINVAL', `volume ${volume} is ${v.layout}: only redundant volumes can rebuild a member`)
    // a spare taking over from a copy an offline is failing completes that offline's intent
    refuseWhileChanging(core, v, { claims: !opts.takeover })
    const od = core.cfg.devices.find((x) => x.name === from)
    const nd = core.cfg.devices.find((x) => x.name === to)
    if (!od) throw new VsmError('ENOENT', `no device named ${JSON.stringify(from)}`)
    if (!nd) throw new VsmError('ENOENT', `no device named ${JSON.stringify(to)}`)
    const i = v.members.findIndex((m) => m.device === od.id)
    if (i < 0) throw new VsmError('EINVAL', `device ${from} holds no member of volume ${volume}`)
    if (v.members.some((m) => m.device === nd.id)) throw new VsmError('EINVAL', `device ${to} already holds a member of volume ${volume}`)
    if (nd.state !== 'online' && nd.state !== 'spare') throw new VsmError('EINVAL', `device ${to} is ${nd.state}`)
    const r = core.rt.get(nd.id)
    if (!r?.io || r.missing) throw new VsmError('ENODEV', `device ${to} is missing: ${r?.missing ?? 'not open'}`)
    if (!LAYOUTS[v.layout].canRun(v, v.members.map((m, j) => j !== i && m.state === 'ok'))) {
      throw new VsmError('EBUSY', `volume ${volume} (${v.layout}) cannot run without its member on ${from} while it is rebuilt`)
    }
    const m = v.members[i]
    const off = fitOne(nd, m.length)
    if (off === null) throw new VsmError('ENOSPC', `device ${to} has no free extent of ${m.length} bytes`)
    // the old copy leaves service before the config says so, so it is never read again
    core.redundancy.get(volume)?.takeOut(i)
    await core.store.change((next) => {
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
    core.event('volume.replace', { volume, from, to, takeover: !!opts.takeover })
    return i
  })
  // a rebuild onto the copy just replaced stops (it copies to an extent given back), then the new one starts
  const onto = core.rebuilds.get(volume)
  if (onto?.device === from) {
    core.jobs.cancel(onto.job, `its copy on ${from} was replaced by one on ${to}`)
    await core.jobs.wait(onto.job)
  }
  const job = core.volumes.has(volume) ? startRebuild(core, volume, index, opts.rate) : null
  return { job, volume: core.volumeInfo(volume) }
}
