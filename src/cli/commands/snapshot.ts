// snapshot commands: instant snapshots of a disk, kept inside the fs and shown
// read-only at <mount>/.snapshots/DISK/NAME.
import { Command } from 'commander'
import { call } from '../call'
import { table } from '../table'
import { formatDate, formatSize } from '../units'

const snapTable = (ss: any[]) => table(['SNAPSHOT', 'SIZE', 'UNIQUE', 'CREATED', 'STAMP'],
  ss.map((s) => [s.name, formatSize(s.size), formatSize(s.uniqueBytes), formatDate(s.created), s.stamp]))

export function registerSnapshot(program: Command) {
  const snap = program.command('snapshot').description('instant snapshots of a disk: create, list, revert, delete')
  snap.command('create <disk> <name>').description('snapshot a disk (constant time, crash-consistent, also while a guest writes)')
    .action((path, name, _o, cmd) => call(cmd, 'snapshot.create', { path, name }, (s) => `created snapshot ${s.disk}@${s.name} (stamp ${s.stamp})`))
  snap.command('list <disk>').description('the snapshots of a disk, oldest first').action((path, _o, cmd) => call(cmd, 'snapshot.list', { path }, snapTable))
  snap.command('revert <disk> <name>').description("make the disk's contents the snapshot's")
    .option('--force', 'revert even while the disk is open for writing')
    .action((path, name, o, cmd) => call(cmd, 'snapshot.revert', { path, name, force: o.force }, (d) => `reverted ${d.path} to ${name}`))
  snap.command('delete <disk> <name>').description('delete a snapshot, freeing the blocks only it held')
    .action((path, name, _o, cmd) => call(cmd, 'snapshot.delete', { path, name }, (r) => `deleted snapshot ${r.disk}@${r.deleted} (${formatSize(r.freedBytes)} freed)`))
}
