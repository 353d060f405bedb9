// disk commands: the virtualizer's part of the CLI. check and compare exit with their
// verdict (check: 0 consistent, 2 corrupted, 3 leaked space, as qemu-img check;
// compare: 0 identical, 1 different) so scripts can branch on them.
import { Command } from 'commander'
import { call, globals, print, withClient } from '../call'
import { table } from '../table'
import { formatDate, formatSize, parseDuration, parseSize } from '../units'

const CHECK_EXIT: Record<string, number> = { consistent: 0, corrupted: 2, leaked: 3 }

/** Like call(), then exits with code(reply) whether the output is human or --json. */
async function verdict(cmd: Command, name: string, args: object, human: (r: any) => string, code: (r: any) => number) {
  const r = await withClient(cmd, (c) => c.call(name, args))
  print(globals(cmd).json ? JSON.stringify(r, null, 2) : human(r))
  process.exitCode = code(r)
}

function showDisk(d: any): string {
  const rows: Array<[string, string]> = [
    ['disk', d.path],
    ['size', `${formatSize(d.size)} (${formatSize(d.allocated)} allocated)`],
    ['volume', d.policies?.volume ?? '-'],
    ['owner', `${d.uid}:${d.gid}, mode ${d.mode.toString(8).padStart(4, '0')}`],
    ['created', d.created === null ? '-' : formatDate(d.created)],
    ['modified', formatDate(d.mtime)],
    ['open', d.open ? `${d.open} handle(s)` : 'no'],
    ['frozen', d.frozenUntil === null ? 'no' : `until ${formatDate(d.frozenUntil)}`],
    ['snapshots', String(d.snapshots)],
  ]
  if (d.origin) rows.push(['clone of', d.origin])
  return rows.map(([k, v]) => `${k.padEnd(10)} ${v}`).join('\n')
}

const diskTable = (ds: any[]) => table(['DISK', 'SIZE', 'ALLOCATED', 'VOLUME', 'OPEN'], ds.map((d) => [d.path, formatSize(d.size), formatSize(d.allocated), d.policies?.volume ?? '-', d.open]))

export function registerDisk(program: Command) {
  const disk = program.command('disk').description('virtual disks: files in the FUSE view')
  disk.command('create <path>').description('create a sparse disk (PATH relative to the mount)')
    .requiredOption('--size <size>', 'disk size in bytes, or with a K, M, G or T suffix (powers of 1024)').option('--volume <name>', 'volume to place it on')
    .option('--owner <user[:group]>', 'owner of the disk file (names or ids; default root:root)')
    .option('--mode <octal>', 'permission bits of the disk file (default 644)')
    .action((path, o, cmd) => call(cmd, 'disk.create', { path, size: parseSize(o.size), volume: o.volume, owner: o.owner, mode: o.mode },
      (d) => `created disk ${d.path} (${formatSize(d.size)}, on ${d.policies.volume}, ${d.uid}:${d.gid} ${d.mode.toString(8).padStart(4, '0')})`))
  disk.command('list').description('every disk in the mount, with size, allocation, volume and open handles').action((_o, cmd) => call(cmd, 'disk.list', undefined, diskTable))
  disk.command('show <path>').description('one disk: size, placement, owner, dates, open handles, snapshots').action((path, _o, cmd) => call(cmd, 'disk.show', { path }, showDisk))
  disk.command('resize <path> <size>').description('grow a disk (also while in use), or shrink it with --shrink')
    .option('--shrink', 'allow making the disk smaller (discards its tail)')
    .option('--force', 'shrink even while the disk is open')
    .action((path, s, o, cmd) => call(cmd, 'disk.resize', { path, size: parseSize(s), shrink: o.shrink, force: o.force }, (d) => `${d.path} is now ${formatSize(d.size)}`))
  disk.command('delete <path>').description('delete a disk; refused while it is open or has snapshots')
    .option('--force', 'delete even while open')
    .option('--recursive', 'delete its snapshots with it')
    .action((path, o, cmd) => call(cmd, 'disk.delete', { path, force: o.force, recursive: o.recursive }, (r) =>
      `deleted disk ${path}${r.snapshots.length ? ` and its snapshot(s) ${r.snapshots.join(', ')}` : ''}`))
  disk.command('freeze <path>').description('hold new writes and flush, for an application-consistent snapshot')
    .option('--timeout <duration>', 'thaw by itself after this long', '60s')
    .action((path, o, cmd) => call(cmd, 'disk.freeze', { path, timeoutMs: parseDuration(o.timeout) }, (d) => `${d.path} frozen until ${formatDate(d.frozenUntil)}`))
  disk.command('thaw <path>').description('release the writes held by freeze')
    .action((path, _o, cmd) => call(cmd, 'disk.thaw', { path }, (d) => `${d.path} thawed`))
  disk.command('clone <source> <path>').description('a new writable disk from DISK@SNAP; copies no data')
    .action((source, path, _o, cmd) => call(cmd, 'disk.clone', { source, path }, (d) => `cloned ${source} to ${d.path}`))
  disk.command('flatten <path>').description('a job giving a clone its own copy of every shared block, while in use')
    .action((path, _o, cmd) => call(cmd, 'disk.flatten', { path }, (r) => `flattening ${r.path}: job ${r.job} (vsm job wait ${r.job})`))
  disk.command('check <path>').description('check for corruption (exit 2) and leaked space (exit 3)')
    .action((path, _o, cmd) => verdict(cmd, 'disk.check', { path }, (r) =>
      [`${r.path}: ${r.status}${r.leakedBytes ? ` (${formatSize(r.leakedBytes)} leaked)` : ''}`, ...r.errors.map((e: string) => `  ${e}`)].join('\n'),
    (r) => CHECK_EXIT[r.status]))
  disk.command('map <path>').description('allocated extents and the layer holding each (DISK, DISK@SNAP or .snapshots/DISK/SNAP)')
    .action(async (path, _o, cmd) => {
      // the daemon answers a page at a time; the CLI gathers every page into one answer
      const m = await withClient(cmd, async (c) => {
        const first = await c.call('disk.map', { path })
        for (let r = first; r.next !== null;) {
          r = await c.call('disk.map', { path, from: r.next })
          first.extents.push(...r.extents)
        }
        return { ...first, next: null }
      })
      print(globals(cmd).json ? JSON.stringify(m, null, 2) : table(['OFFSET', 'LENGTH', 'LAYER', 'VOLUME'],
        m.extents.map((e: any) => [e.offset, formatSize(e.length), e.layer, e.volume])))
    })
  disk.command('compare <a> <b>').description('compare contents (exit 0 identical, 1 different); either may be a snapshot')
    .action((a, b, _o, cmd) => verdict(cmd, 'disk.compare', { a, b },
      (r) => (r.identical ? `${a} and ${b} are identical` : `${a} and ${b} differ at byte ${r.firstDifference}`), (r) => (r.identical ? 0 : 1)))
}
