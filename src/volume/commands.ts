// The volume manager's extended commands (type byte 'L'), as routed by the control socket.
import type { CommandTable } from '../control/dispatch'
import type { Pool } from './pool'

export function volumeCommands(pool: Pool): CommandTable {
  return {
    'pool.history': () => pool.history(),
    'device.add': (x) => pool.addDevice(x.name, x.path, x.size, x.spare === true, x.force === true),
    'device.list': () => pool.listDevices(),
    'device.remove': async (x) => { await pool.removeDevice(x.name); return { removed: x.name } },
    'device.offline': (x) => pool.offlineDevice(x.name),
    'device.online': (x) => pool.onlineDevice(x.name),
    'volume.create': (x) => pool.createVolume(x.name, { layout: x.layout, devices: x.devices, size: x.size, stripeUnit: x.stripeUnit, copies: x.copies }),
    'volume.list': () => pool.listVolumes(),
    'volume.show': (x) => pool.volumeInfo(x.name),
    'volume.replace': (x) => pool.replaceMember(x.name, x.from, x.to, { rate: x.rate }),
    'volume.scrub': (x) => pool.scrubVolume(x.name, { rate: x.rate }),
    'volume.grow': (x) => pool.reshapeVolume(x.name, 'grow', { size: x.size, rate: x.rate }),
    'volume.move': (x) => pool.reshapeVolume(x.name, 'move', { from: x.from, to: x.to, rate: x.rate }),
    'volume.relayout': (x) => x.abort ? pool.abortReshape(x.name)
      : pool.reshapeVolume(x.name, 'relayout', { layout: x.layout, devices: x.devices, stripeUnit: x.stripeUnit, copies: x.copies, rate: x.rate }),
  }
}
