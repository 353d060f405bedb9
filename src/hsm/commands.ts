// The HSM's commands (type byte 'H').
import type { CommandTable } from '../control/dispatch'
import type { Hsm } from './hsm'

export function hsmCommands(hsm: Hsm): CommandTable {
  return {
    'hsm.tier.add': (x) => hsm.addTier(x.name, { volume: x.volume, archive: x.archive, identity: x.identity, knownHosts: x.knownHosts, timeout: x.timeout }),
    'hsm.tier.list': () => hsm.listTiers(),
    'hsm.policy.set': (x) => hsm.setPolicy(x.path, { coldAfter: x.coldAfter, minSize: x.minSize, tier: x.tier, high: x.high, low: x.low, premigrate: x.premigrate, regions: x.regions, snapshotsFirst: x.snapshotsFirst }),
    'hsm.migrate': (x) => hsm.migrate(x.path, x.tier, x.rate, x.premigrate),
    'hsm.recall': (x) => hsm.recall(x.path, x.range, x.rate),
    'hsm.pin': (x) => hsm.pin(x.path, true),
    'hsm.unpin': (x) => hsm.pin(x.path, false),
    'hsm.status': (x) => hsm.status(x.path),
    'hsm.run': () => hsm.run(),
    'hsm.check': (x) => hsm.check(!!x.dryRun),
  }
}
