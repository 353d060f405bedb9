// Scrub: a job that reads every copy of a redundant volume, verifies it (checksums,
// parity) and repairs what is wrong from what is good, held to a rate; its result, and
// one event, report the repairs per device and what could not be repaired. The reading
// and repairing is the layout's, reached through its Redundancy.
import { VsmError } from '../block/blockdev'
import { checkSize } from './config'
import { LAYOUTS } from './layouts'
import { PoolCore, holdTo } from './core'

/** Verify and repair a redundant volume as a job; `rate` holds it to that many bytes per second (0: unlimited). */
export async function scrubVolume(core: PoolCore, name: string, opts: { rate?: number } = {}): Promise<{ job: number }> {
  if (opts.rate !== undefined) checkSize('rate', opts.rate)
  const v = core.volume(name)
  if (!LAYOUTS[v.layout].redundant) throw new VsmError('EINVAL', `volume ${name} is ${v.layout}: there is no redundancy to scrub`)
  await core.openVolume(name)
  const job = core.jobs.start('volume.scrub', async (_signal, progress) => {
    const redundancy = core.redundancy.get(name)
    if (!redundancy) throw new VsmError('ECANCELED', `volume ${name} was closed`)
    const devName = (i: number) => core.cfg.devices.find((d) => d.id === v.members[i].device)?.name ?? '?'
    const start = Date.now()
    // the rate holds what is read: ranges never written are passed over at once
    const found = await redundancy.scrub(async (pos, read) => { progress(pos, v.size); await holdTo(opts.rate ?? 0, start, read); await progress.checkpoint() })
    const report = {
      volume: name, checkedBytes: found.checkedBytes, skippedBytes: found.skippedBytes,
      repaired: found.repaired.map((x) => ({ device: devName(x.member), offset: x.offset })),
      unrecoverable: found.unrecoverable.map((x) => (x.member === undefined ? { offset: x.offset } : { device: devName(x.member), offset: x.offset })),
      parityRowsFixed: found.parityRowsFixed,
    }
    core.event('volume.scrubbed', {
      volume: name, checkedBytes: report.checkedBytes, skippedBytes: report.skippedBytes, repaired: report.repaired.length + report.parityRowsFixed, unrecoverable: report.unrecoverable.length,
      repairs: report.repaired, parityRowsFixed: report.parityRowsFixed, unrecoverableAt: report.unrecoverable,
    }, report.unrecoverable.length ? 'error' : report.repaired.length + report.parityRowsFixed ? 'warn' : 'info')
    return report
  }, { description: `scrub ${name}`, total: v.size, pausable: true })
  return { job }
}
