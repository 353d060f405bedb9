// disk commands: the virtualizer's part of the CLI.
import { Command } from 'commander'
import { call, showObject } from '../call'
import { table } from '../table'
import { formatSize, parseDuration, parseSize } from '../units'

const diskTable = (ds: any[]) => table(['DISK', 'SIZE', 'ALLOCATED', 'VOLUME', 'OPEN'], ds.map((d) => [d.path, formatSize(d.size), formatSize(d.allocated), d.policies?.volume ?? '-', d.open]))

export function registerDisk(program: Command) {
  const disk = program.command('disk').description('virtual disks: files in the FUSE view')
  disk.command('create <path>').requiredOption('--size <size>', 'disk size').option('--volume <name>', 'volume to place it on')
    .action((path, o, cmd) => call(cmd, 'disk.create', { path, size: parseSize(o.size), volume: o.volume }, (d) => `created disk ${d.path} (${formatSize(d.size)}, on ${d.policies.volume})`))
  disk.command('list').action((_o, cmd) => call(cmd, 'disk.list', undefined, diskTable))
  disk.command('show <path>').action((path, _o, cmd) => call(cmd, 'disk.show', { path }, showObject))
  disk.command('resize <path> <size>').option('--shrink', 'allow making the disk smaller')
    .action((path, s, o, cmd) => call(cmd, 'disk.resize', { path, size: parseSize(s), shrink: !!o.shrink }, (d) => `${d.path} is now ${formatSize(d.size)}`))
  disk.command('delete <path>').option('--force', 'delete even while open')
    .action((path, o, cmd) => call(cmd, 'disk.delete', { path, force: !!o.force }, () => `deleted disk ${path}`))
  disk.command('freeze <path>').description('hold new writes and flush, for an application-consistent snapshot')
    .option('--timeout <duration>', 'thaw by itself after this long', '60s')
    .action((path, o, cmd) => call(cmd, 'disk.freeze', { path, timeoutMs: parseDuration(o.timeout) }, (d) => `${d.path} frozen until ${new Date(d.frozenUntil).toISOString()}`))
  disk.command('thaw <path>').description('release the writes held by freeze')
    .action((path, _o, cmd) => call(cmd, 'disk.thaw', { path }, (d) => `${d.path} thawed`))
}
