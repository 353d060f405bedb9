// The replicator's IOCTL-style commands (`R` codes) on a primary: create a group,
// report, pause, resume and verify it. Arguments are checked here or in Replicator.create;
// a bad one is refused with one line and changes nothing.
import { VsmError } from '../block/blockdev'
import type { CommandTable } from '../control/dispatch'
import type { Mode } from './policy'
import type { Replicator } from './replicator'

const str = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || !v) throw new VsmError('EINVAL', `${what} must be a non-empty string`)
  return v
}
const optStr = (v: unknown, what: string): string | undefined => (v === undefined ? undefined : str(v, what))

export function replCommands(repl: Replicator, fsVolumes: () => string[]): CommandTable {
  return {
    'repl.create': (a) => {
      const volumes = a.volumes === undefined ? fsVolumes() : a.volumes
      if (!Array.isArray(volumes) || volumes.some((v) => typeof v !== 'string')) throw new VsmError('EINVAL', 'volumes must be a list of volume names')
      if (a.logSize !== undefined && !Number.isSafeInteger(a.logSize)) throw new VsmError('EINVAL', 'logSize must be a whole number of bytes')
      if (a.rate !== undefined) throw new VsmError('ENOTSUP', 'repl create --rate is not built yet')
      return repl.create({
        group: str(a.group, 'group'), volumes, target: str(a.target, 'target'), mode: a.mode as Mode | undefined,
        identity: optStr(a.identity, 'identity'), knownHosts: optStr(a.knownHosts, 'knownHosts'), remoteVsm: optStr(a.remoteVsm, 'remoteVsm'), logSize: a.logSize,
      }, fsVolumes())
    },
    'repl.status': (a) => (a.group === undefined ? repl.list() : [repl.get(str(a.group, 'group')).status()]),
    'repl.pause': async (a) => { const g = repl.get(str(a.group, 'group')); await g.setPaused(true); return g.status() },
    'repl.resume': async (a) => { const g = repl.get(str(a.group, 'group')); await g.setPaused(false); return g.status() },
    'repl.verify': (a) => repl.verify(str(a.group, 'group')),
  }
}
