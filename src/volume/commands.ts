// The volume manager's extended commands (type byte 'L'), as routed by the control socket.
import type { CommandTable } from '../control/dispatch'
import type { Pool } from './pool'

export function volumeCommands(pool: Pool): CommandTable {
  return {
    'device.add': (x) => pool.addDevice(x.name, x.path, x.size),
    'device.list': () => pool.listDevices(),
    'device.remove': async (x) => { await pool.removeDevice(x.name); return { removed: x.name } },
    'volume.create': (x) => pool.createVolume(x.name, { layout: x.layout, devices: x.devices, size: x.size, stripeUnit: x.stripeUnit, copies: x.copies }),
    'volume.list': () => pool.listVolumes(),
    'volume.show': (x) => pool.volumeInfo(x.name),
  }
}
