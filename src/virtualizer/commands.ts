// The virtualizer's commands: extended ones (type byte 'V': disks, snapshots, clones,
// freeze/thaw, check/map/compare) and the standard ones a disk already understands (read, write, flush,
// discard, size), served on the fs file directly, without the FUSE view.
import type { CommandTable } from '../control/dispatch'
import type { StandardHandler } from '../control/server'
import type { FileSystem } from '../fs'
import type { DiskManager } from './disks'
import type { WriteGate } from './gate'
import { diskPath } from './paths'
import { DISCARD, FLUSH, IoMeters, READ, WRITE, counted, now } from '../metrics/io'

export function diskCommands(disks: DiskManager): CommandTable {
  return {
    'disk.create': (x) => disks.create(x.path, x.size, x.volume, { owner: x.owner, mode: x.mode }),
    'disk.list': () => disks.list(),
    'disk.show': (x) => disks.show(x.path),
    'disk.resize': (x) => disks.resize(x.path, x.size, { shrink: x.shrink, force: x.force }),
    'disk.delete': async (x) => ({ deleted: x.path, ...(await disks.delete(x.path, { force: x.force, recursive: x.recursive })) }),
    'disk.freeze': (x) => disks.freeze(x.path, x.timeoutMs),
    'disk.thaw': (x) => disks.thaw(x.path),
    'disk.clone': (x) => disks.clone(x.source, x.path, { owner: x.owner }),
    'disk.flatten': (x) => disks.flatten(x.path),
    'disk.check': (x) => disks.check(x.path),
    'disk.map': (x) => disks.map(x.path, x.from, x.limit),
    'disk.compare': (x) => disks.compare(x.a, x.b),
    'snapshot.create': (x) => disks.snapshotCreate(x.path, x.name),
    'snapshot.list': (x) => disks.snapshotList(x.path),
    'snapshot.revert': (x) => disks.snapshotRevert(x.path, x.name, x.force),
    'snapshot.delete': (x) => disks.snapshotDelete(x.path, x.name),
  }
}

const METERED: Record<string, number | undefined> = { 'disk.read': READ, 'disk.write': WRITE, 'disk.flush': FLUSH, 'disk.discard': DISCARD }

/** Disk I/O over the socket is counted per disk (when meters are on) like I/O through the FUSE view. */
export function standardDiskHandler(fs: FileSystem, gate: WriteGate, meters: IoMeters | null): StandardHandler {
  const serve = diskRequest(fs, gate)
  return async (req, ctx) => {
    const op = METERED[req.name]
    if (!meters || op === undefined) return serve(req, ctx)
    const t0 = now()
    return counted(meters.disk(diskPath(req.path).slice(1)), op, t0, serve(req, ctx), op === WRITE ? req.data.length : op === DISCARD ? req.length : 0)
  }
}

function diskRequest(fs: FileSystem, gate: WriteGate): StandardHandler {
  return async ({ name, path, offset, length, data }) => {
    const p = diskPath(path)
    const dev = fs.openFile(p)
    switch (name) {
      case 'disk.size': return dev.size
      case 'disk.flush': return dev.flush()
      case 'disk.write': {
        const ino = fs.lookup(p)
        const held = gate.enter(ino)
        if (held) await held
        try { return await dev.write(data, offset) } finally { gate.leave(ino) }
      }
      case 'disk.discard': return dev.discard?.(offset, length)
      case 'disk.read': { const b = Buffer.alloc(length); return b.subarray(0, await dev.read(b, offset)) }
    }
  }
}
