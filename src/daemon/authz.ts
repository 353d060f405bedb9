// Who may send which command, by the peer's credentials (SO_PEERCRED): root and the
// daemon's own user may do anything; any other user (let in by `vsm up --socket-group`)
// commands only the disks it owns — creates them under its own ownership, snapshots,
// clones, freezes and thaws them, shows and lists them, reads and writes them — and
// never pools, devices, volumes, the fs, jobs or the daemon (EPERM, one line).
import { VsmError } from '../block/blockdev'
import type { Authorize, Peer } from '../control/server'
import { splitSnapshotRef } from '../virtualizer/paths'

/** Read-only and about nothing in particular: anyone let in may ask. */
const ANYONE = new Set(['hello', 'status', 'job.list', 'job.wait'])

/** Commands on one existing disk, named by args.path, that its owner may send. */
const ON_OWN_DISK = new Set([
  'disk.show', 'disk.freeze', 'disk.thaw', 'snapshot.create', 'snapshot.list',
  'disk.read', 'disk.write', 'disk.flush', 'disk.discard', 'disk.size',
])

export function authorizer(opts: { ownerOf(path: string): { uid: number } }): Authorize {
  const self = process.geteuid?.() ?? 0
  const denied = (peer: Peer, name: string, why = 'only root may change pools, devices, volumes, the fs, jobs or the daemon; a user commands only its own disks') =>
    new VsmError('EPERM', `${name}: not permitted for uid ${peer.uid} (${why})`)
  const mustOwn = (peer: Peer, name: string, path: unknown) => {
    if (typeof path !== 'string') throw new VsmError('EINVAL', `${name}: a disk path is required`)
    if (opts.ownerOf(path).uid !== peer.uid) throw denied(peer, name, `${path} is not its disk`)
  }
  return (peer, name, args) => {
    if (peer.uid === 0 || peer.uid === self || ANYONE.has(name)) return { args }
    const a = args ?? {}
    if (ON_OWN_DISK.has(name)) { mustOwn(peer, name, a.path); return { args } }
    const mine = `${peer.uid}:${peer.gid}`
    switch (name) {
      case 'disk.list':
        return { args, filter: (disks: Array<{ uid: number }>) => disks.filter((d) => d.uid === peer.uid) }
      case 'disk.create':
        // the owner is the caller; naming anyone else is refused rather than ignored
        if (a.owner !== undefined && a.owner !== mine && a.owner !== String(peer.uid)) throw denied(peer, name, 'a user creates disks only under its own ownership')
        return { args: { ...a, owner: mine } }
      case 'disk.clone':
        mustOwn(peer, name, splitSnapshotRef(a.source).disk)
        return { args: { ...a, owner: mine } }
    }
    throw denied(peer, name)
  }
}
