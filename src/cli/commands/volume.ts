// device and volume commands: the volume manager's part of the CLI.
import { Command } from 'commander'
import { call, showObject } from '../call'
import { table } from '../table'
import { formatSize, parseSize } from '../units'

export const deviceTable = (ds: any[]) => table(['DEVICE', 'SIZE', 'FREE', 'STATE', 'PATH'], ds.map((d) => [d.name, formatSize(d.size), formatSize(d.free), d.state, d.path]))
export const volumeTable = (vs: any[]) => table(['VOLUME', 'LAYOUT', 'SIZE', 'STATE', 'DEVICES'], vs.map((v) => [v.name, v.layout, formatSize(v.size), v.state, v.devices.join(',')]))

export function registerVolume(program: Command) {
  const device = program.command('device').description('backing files and block devices')
  device.command('add <name> <path>').option('--size <size>', 'create a sparse file of this size').description('add a device to the pool')
    .action((name, path, o, cmd) => call(cmd, 'device.add', { name, path, size: o.size && parseSize(o.size) }, (d) => `added device ${d.name} (${formatSize(d.size)}) at ${d.path}`))
  device.command('list').action((_o, cmd) => call(cmd, 'device.list', undefined, deviceTable))
  device.command('remove <name>').action((name, _o, cmd) => call(cmd, 'device.remove', { name }, () => `removed device ${name}`))

  const volume = program.command('volume').description('volumes and their layouts')
  volume.command('create <name>')
    .requiredOption('--layout <layout>', 'concat|stripe|mirror|raid10|raid5')
    .requiredOption('--devices <list>', 'comma-separated device names')
    .requiredOption('--size <size>', 'volume size')
    .option('--stripe-unit <size>', 'stripe unit (stripe, raid10, raid5)')
    .option('--copies <n>', 'copies of each block (mirror, raid10)')
    .action((name, o, cmd) => call(cmd, 'volume.create', {
      name, layout: o.layout, devices: String(o.devices).split(','), size: parseSize(o.size),
      stripeUnit: o.stripeUnit && parseSize(o.stripeUnit), copies: o.copies && Number(o.copies),
    }, (v) => `created volume ${v.name}: ${v.layout} ${formatSize(v.size)} on ${v.devices.join(',')}`))
  volume.command('list').action((_o, cmd) => call(cmd, 'volume.list', undefined, volumeTable))
  volume.command('show <name>').action((name, _o, cmd) => call(cmd, 'volume.show', { name }, showObject))
}
