// The replicator's IOCTL-style commands (`R` codes) on a primary: create a group,
// report, pause, resume and verify it, and report what a failback would discard (in
// volume ranges and, through the fs's extent maps, per disk). Arguments are checked
// here or in Replicator.create; a bad one is refused with one line and changes nothing.
import { VsmError } from '../block/blockdev'
import type { CommandTable } from '../control/dispatch'
import { mergeRanges } from './failback'
import type { DiscardReport } from './group'
import type { Mode } from './policy'
import { checkSchedule, type PointInfo } from './points'
import type { Replicator } from './replicator'

const str = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || !v) throw new VsmError('EINVAL', `${what} must be a non-empty string`)
  return v
}
const optStr = (v: unknown, what: string): string | undefined => (v === undefined ? undefined : str(v, what))

/** A disk's extents: `length` bytes at disk offset `offset` live at `physical` on `volume`. */
export interface DiskExtents { path: string; extents: Array<{ offset: number; length: number; volume: string; physical: number }> }

/** The discarded volume ranges as ranges of each disk they fall in (the rest is fs metadata or free space). */
export function discardByDisk(ranges: DiscardReport['ranges'], disks: DiskExtents[]) {
  return disks.map((d) => {
    const hits: Array<[number, number, number]> = []
    for (const e of d.extents) {
      for (const r of ranges) {
        if (r.volume !== e.volume) continue
        const a = Math.max(r.offset, e.physical), b = Math.min(r.offset + r.length, e.physical + e.length)
        if (a < b) hits.push([0, e.offset + a - e.physical, b - a])
      }
    }
    // mergeRanges merges within a volume; a disk's offsets are one space, given as volume 0
    const merged = mergeRanges(hits).map(([, offset, length]) => ({ offset, length }))
    return { path: d.path, discardBytes: merged.reduce((n, h) => n + h.length, 0), ranges: merged }
  }).filter((d) => d.ranges.length)
}

/** Points kept when vsm repl schedule names no --keep: a day of them at every 15 minutes. */
const DEFAULT_KEEP = 96

export function replCommands(repl: Replicator, fsVolumes: () => string[], diskExtents: () => DiskExtents[], points: (group: string) => PointInfo[]): CommandTable {
  return {
    'repl.create': (a) => {
      const volumes = a.volumes === undefined ? fsVolumes() : a.volumes
      if (!Array.isArray(volumes) || volumes.some((v) => typeof v !== 'string')) throw new VsmError('EINVAL', 'volumes must be a list of volume names')
      if (a.logSize !== undefined && !Number.isSafeInteger(a.logSize)) throw new VsmError('EINVAL', 'logSize must be a whole number of bytes')
      if (a.rate !== undefined && !Number.isSafeInteger(a.rate)) throw new VsmError('EINVAL', 'rate must be a whole number of bytes per second')
      return repl.create({
        group: str(a.group, 'group'), volumes, target: str(a.target, 'target'), mode: a.mode as Mode | undefined,
        identity: optStr(a.identity, 'identity'), knownHosts: optStr(a.knownHosts, 'knownHosts'), remoteVsm: optStr(a.remoteVsm, 'remoteVsm'), logSize: a.logSize, rate: a.rate, syncTimeoutMs: a.syncTimeoutMs,
      }, fsVolumes())
    },
    'repl.status': (a) => (a.group === undefined ? repl.list() : [repl.statusOf(str(a.group, 'group'))]),
    'repl.pause': async (a) => { const g = repl.get(str(a.group, 'group')); await g.setPaused(true); return g.status() },
    'repl.resume': async (a) => { const g = repl.get(str(a.group, 'group')); await g.setPaused(false); return g.status() },
    'repl.verify': (a) => repl.verify(str(a.group, 'group')),
    'repl.set': async (a) => {
      const g = repl.get(str(a.group, 'group'))
      if (a.mode === undefined && a.rate === undefined && a.syncTimeoutMs === undefined) throw new VsmError('EINVAL', 'nothing to change: give --mode, --rate or --sync-timeout')
      await g.set({ mode: a.mode as Mode | undefined, rate: a.rate as number | undefined, syncTimeoutMs: a.syncTimeoutMs as number | undefined })
      return g.status()
    },
    'repl.schedule': async (a) => {
      const g = repl.get(str(a.group, 'group'))
      const name = g.config.group, cur = g.config.schedule
      if (a.off === true) await g.setSchedule(null)
      else if (a.everyMs !== undefined || a.keep !== undefined) {
        if (g.config.takenOver) throw new VsmError('EINVAL', `group ${name} was taken over by its secondary: points are taken where it is served`)
        if (a.everyMs === undefined && !cur) throw new VsmError('EINVAL', `group ${name} has no schedule yet: give --every`)
        const missing = fsVolumes().filter((v) => !g.config.volumes.includes(v))
        if (missing.length) throw new VsmError('EINVAL', `group ${name} does not replicate every volume of the fs (not ${missing.join(', ')}): its points would not hold every disk`)
        await g.setSchedule(checkSchedule(a.everyMs ?? cur!.everyMs, a.keep ?? cur?.keep ?? DEFAULT_KEEP))
      }
      return { group: name, schedule: g.config.schedule ?? null, points: points(name) }
    },
    'repl.takeover': () => { throw new VsmError('EINVAL', 'this site is a primary: vsm repl takeover is run on the secondary site') },
    'repl.failback': (a) => {
      const g = repl.get(str(a.group, 'group'))
      if (!g.config.takenOver) throw new VsmError('EINVAL', `group ${g.config.group} was not taken over by its secondary: there is nothing to fail back`)
      if (a.dryRun !== true) return repl.failback(g.config.group, a.force === true)
      const d = g.discard()
      return { ...d, takenOver: g.config.takenOver, disks: discardByDisk(d.ranges, diskExtents()) }
    },
  }
}
