// Rebuild: the job that brings a stale member of an open redundant volume up to date
// (a returning device by the regions it missed, a replacement whole), one per volume at a
// time, held to a rate, with its resume point recorded about once a second so a crash
// resumes it. Which member and onto which device is failure.ts; how bytes are copied
// is the layout's, reached through its Redundancy.
import { VsmError } from '../block/blockdev'
import type { Progress } from '../control/jobs'
import { CHECKPOINT_MS, PoolCore, RebuildInfo, holdTo } from './core'

/** Start (or find running) the job that brings stale member i of an open volume up to date. */
export function startRebuild(core: PoolCore, name: string, i: number, rate = 0): number {
  const running = core.rebuilds.get(name)
  if (running) return running.job
  const v = core.cfg.volumes.find((x) => x.name === name)!
  const m = v.members[i]
  const d = core.cfg.devices.find((x) => x.id === m.device)!
  const kind = m.resync ?? 'full'
  const info: RebuildInfo = { job: 0, device: d.name, kind, done: 0, total: 0, skipped: 0, rate, bytesPerSecond: 0, etaSeconds: null }
  info.job = core.jobs.start('volume.rebuild', async (_signal, progress) => {
    let result: Awaited<ReturnType<typeof rebuild>>
    try {
      result = await rebuild(core, name, v.id, i, info, progress)
    } finally {
      core.rebuilds.delete(name)
    }
    // one rebuild runs per volume: the next stale member (a raid10 or 3-copy mirror can have two) goes now
    const next = core.cfg.volumes.find((x) => x.name === name)?.members.findIndex((m) => core.rebuildable(m)) ?? -1
    if (next >= 0 && core.volumes.has(name) && !core.closed) startRebuild(core, name, next)
    return result
  }, { description: `${kind === 'delta' ? 'resync' : 'rebuild'} ${name} onto ${d.name}`, pausable: true })
  core.rebuilds.set(name, info)
  core.event('volume.rebuild-started', { volume: name, device: d.name, kind: kind === 'delta' ? 'resync' : 'rebuild', job: info.job, resumedAt: m.rebuilt ?? 0 })
  return info.job
}

/** Bring stale member i of volume name up to date through its layout's Redundancy, checkpointing as it goes. */
async function rebuild(core: PoolCore, name: string, volumeId: string, i: number, info: RebuildInfo,
    progress: Progress): Promise<{ volume: string; device: string; copied: number; skipped: number }> {
  await core.openVolume(name)
  const v = core.cfg.volumes.find((x) => x.id === volumeId)
  const m = v?.members[i]
  if (!v || !m || m.state !== 'stale') throw new VsmError('ECANCELED', `volume ${name} changed before its rebuild started`)
  const d = core.cfg.devices.find((x) => x.id === m.device)!
  const run = await core.redundancy.get(name)!.rebuild(i, m, await core.memberIo(v, m), core.logMember(v, m))
  info.total = run.total
  info.skipped = run.skipped
  const start = Date.now()
  let lastSave = start
  const copied = await run.copy(async (done, pos) => {
    info.done = done
    progress(done, info.total)
    await progress.checkpoint()
    await holdTo(info.rate, start, done)
    // measured after the rate limit's pause, so the figure is what the copy is held to
    const secs = (Date.now() - start) / 1000
    info.bytesPerSecond = secs > 0 ? Math.round(done / secs) : 0
    info.etaSeconds = info.bytesPerSecond > 0 ? Math.ceil((info.total - done) / info.bytesPerSecond) : null
    if (Date.now() - lastSave >= CHECKPOINT_MS) {
      lastSave = Date.now()
      const at = await run.checkpoint(pos)
      if (at !== null) await saveRebuilt(core, volumeId, i, m.device, at)
    }
  })
  await core.serial(() => core.store.change((next) => {
    const nm = next.volumes.find((x) => x.id === volumeId)?.members[i]
    if (!nm || nm.device !== m.device) return null
    nm.state = 'ok'
    delete nm.resync
    delete nm.rebuilt
    return `volume ${name}: member ${i} on device ${d.name} ${m.resync === 'delta' ? 'resynced' : 'rebuilt'}`
  }))
  core.event('volume.rebuilt', { volume: name, device: d.name, kind: m.resync === 'delta' ? 'resync' : 'rebuild', copied, skipped: run.skipped })
  return { volume: name, device: d.name, copied, skipped: run.skipped }
}

/** Record how far the rebuild of member i onto device has come; not if the member has been replaced meanwhile. */
function saveRebuilt(core: PoolCore, volumeId: string, i: number, device: string, pos: number): Promise<void> {
  return core.serial(async () => {
    await core.store.change((next) => {
      const v = next.volumes.find((x) => x.id === volumeId)
      const nm = v?.members[i]
      if (!nm || nm.state !== 'stale' || nm.device !== device) return null
      nm.rebuilt = pos
      return `volume ${v!.name}: rebuild of member ${i} checkpoint at byte ${pos}`
    }, { progress: true })
  })
}
