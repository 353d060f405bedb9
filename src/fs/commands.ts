// The file system's extended commands (type byte 'F').
import type { CommandTable } from '../control/dispatch'
import type { VolumeSource } from './discover'
import type { FileSystem } from './filesystem'
import type { Jobs } from '../control/jobs'
import { startMove, startRemoveVolume } from './move'
import { listPolicies, setPolicy } from './placement'

/** `pool` opens the pool's volumes by name (ENOENT for one the pool does not have). */
export function fsCommands(fs: FileSystem, pool: VolumeSource, jobs: Jobs): CommandTable {
  return {
    'fs.stat': () => ({ ...fs.statfs(), volumes: fs.volumeNames(), journal: fs.journalStats() }),
    'fs.check': () => fs.check(),
    'fs.volume.add': async (x) => fs.addVolume(await pool.open(x.volume), x.volume),
    'fs.volume.remove': (x) => startRemoveVolume(fs, jobs, x.volume, x.to),
    'fs.policy.set': (x) => setPolicy(fs, x.dir, x.volume, x.match),
    'fs.policy.list': () => listPolicies(fs),
    'fs.move': (x) => startMove(fs, jobs, { path: x.path, volume: x.volume, rate: x.rate }),
  }
}
