// fs commands and the raw `ctl` escape hatch.
import { Command } from 'commander'
import { call, print, withClient } from '../call'
import { formatSize, parseSize } from '../units'
import { table } from '../table'

export function registerFs(program: Command) {
  const fsCmd = program.command('fs').description('the file system on the volumes')
  fsCmd.command('check').description('consistency check of the mounted fs').action((_o, cmd) =>
    call(cmd, 'fs.check', undefined, (r) => (r.ok ? `fs: clean (${formatSize(r.leakedBytes)} leaked)` : `fs: ${r.errors.length} error(s)\n${r.errors.join('\n')}`)))
  fsCmd.command('stat').description('blocks and inodes of the fs').action((_o, cmd) =>
    call(cmd, 'fs.stat', undefined, (s) => `${formatSize((s.blocks - s.bfree) * s.bsize)} used of ${formatSize(s.blocks * s.bsize)}; ${s.files - s.ffree} inodes; volumes ${s.volumes.join(', ')}`))
  fsCmd.command('add-volume <volume>').description('add a pool volume to the running fs (files can then be placed on it)')
    .action((volume, _o, cmd) => call(cmd, 'fs.volume.add', { volume }, (r) => `added volume ${r.name} (${formatSize(r.size)}) to the fs`))
  fsCmd.command('remove-volume <volume>').description('move every file off a volume while in use (a job), then drop it from the fs')
    .option('--to <volume>', 'the fs volume its files move to (default: the first, which holds the metadata)')
    .action((volume, o, cmd) => call(cmd, 'fs.volume.remove', { volume, to: o.to },
      (r) => `removing volume ${r.volume} from the fs onto ${r.to}: job ${r.job} (vsm job wait ${r.job})`))
  const policy = fsCmd.command('policy').description('where new files go: by directory (inherited down the tree) and name pattern')
  policy.command('set <dir>').description('new files under DIR (matching --match, if given) are placed on a volume')
    .requiredOption('--volume <name>', 'volume for them').option('--match <glob>', "only names matching this pattern, e.g. '*.iso'")
    .action((dir, o, cmd) => call(cmd, 'fs.policy.set', { dir, volume: o.volume, match: o.match },
      (r) => `${r.dir}: ${r.rules.map((x: any) => `${x.match ?? '*'} -> ${x.volume}`).join(', ')}`))
  policy.command('list').description('every placement rule, top down')
    .action((_o, cmd) => call(cmd, 'fs.policy.list', undefined, (rs: any[]) => rs.length ? table(['DIR', 'MATCH', 'VOLUME'], rs.map((r) => [r.dir, r.match ?? '(default)', r.volume])) : 'no placement policies: new files go on the first volume'))
  fsCmd.command('move <path>').description("move a file's extents to another volume while it is in use (a job)")
    .requiredOption('--volume <name>', 'volume to move it to').option('--rate <size>', 'at most this many bytes per second (K, M, G)')
    .action((path, o, cmd) => call(cmd, 'fs.move', { path, volume: o.volume, rate: o.rate === undefined ? undefined : parseSize(o.rate) },
      (r) => `moving ${r.path} to ${r.volume}: job ${r.job} (vsm job wait ${r.job})`))

  program.command('ctl <code> [json]').description('send a raw IOCTL-style command (name or number)')
    .action(async (code: string, json: string | undefined, _o, cmd: Command) => {
      let args: unknown
      try { args = json === undefined ? undefined : JSON.parse(json) } catch { throw new Error(`argument is not JSON: ${json}`) }
      const r = await withClient(cmd, (c) => c.call(/^(0x[0-9a-f]+|\d+)$/i.test(code) ? Number(code) : code, args as object))
      print(JSON.stringify(r, null, 2))
    })
}
