// hsm commands: tiers, migrate/recall, pin, policies, policy runs, residency.
import { Command } from 'commander'
import { resolve } from 'path'
import { call } from '../call'
import { formatSize, parseSize } from '../units'
import { table } from '../table'

const jobLine = (what: string) => (r: any) => `${what} ${r.path} to ${r.tier ?? r.volume}: job ${r.job} (vsm job wait ${r.job})`

/** 'A-B' with size suffixes on each end, sent as bytes. */
function parseRange(r: string): string {
  const m = /^([^-]+)-([^-]+)$/.exec(r)
  return m ? `${parseSize(m[1])}-${parseSize(m[2])}` : r
}

export function registerHsm(program: Command) {
  const hsm = program.command('hsm').description('hierarchical storage: tiers, migration of cold files, recall')
  const tier = hsm.command('tier').description('storage tiers: volumes of the fs, or archives outside the pool')
  tier.command('add <name>').description('make a volume the fs spans a tier, or an archive (a directory, or sftp://USER@HOST[:PORT]/PATH)')
    .option('--volume <name>', 'the volume (add it to the fs first with vsm fs add-volume)')
    .option('--archive <dir|url>', 'an existing directory outside the pool, or sftp://USER@HOST[:PORT]/PATH')
    .option('--identity <key>', 'sftp: the private key to log in with (default ~/.ssh/id_ed25519)')
    .option('--known-hosts <file>', 'sftp: the known_hosts file holding the server\'s host key (default ~/.ssh/known_hosts)')
    .option('--timeout <duration>', 'archive: how long a read or write may take before it fails with EIO (default 30s)')
    .action((name, o, cmd) => call(cmd, 'hsm.tier.add', {
      name, volume: o.volume, archive: o.archive, identity: o.identity && resolve(o.identity), knownHosts: o.knownHosts && resolve(o.knownHosts), timeout: o.timeout,
    }, (r) => r.archive ? `tier ${r.name} on archive ${r.archive}` : `tier ${r.name} on volume ${r.volume}`))
  tier.command('list').description('tiers with capacity and use')
    .action((_o, cmd) => call(cmd, 'hsm.tier.list', undefined, (ts: any[]) => ts.length
      ? table(['TIER', 'WHERE', 'SIZE', 'USED', 'FREE'], ts.map((t) => [t.name, t.archive ?? t.volume, t.size === null ? '-' : formatSize(t.size), formatSize(t.used), t.free === null ? '-' : formatSize(t.free)]))
      : 'no tiers: add one with vsm hsm tier add NAME --volume V | --archive DIR'))
  hsm.command('migrate <path>').description('move a file to a tier while it is in use (a job)').option('--tier <name>', 'the tier (default: its policy\'s)')
    .option('--rate <size>', 'at most this many bytes per second (K, M, G)')
    .option('--premigrate', 'to an archive: copy only, keep the pool blocks until a watermark run (or a migrate) releases them')
    .action((path, o, cmd) => call(cmd, 'hsm.migrate', { path, tier: o.tier, rate: o.rate === undefined ? undefined : parseSize(o.rate), premigrate: o.premigrate },
      jobLine(o.premigrate ? 'premigrating' : 'migrating')))
  hsm.command('recall <path>').description('move a file back to the volume it was on before migration (a job)')
    .option('--range <A-B>', 'only bytes A to B (sizes with K, M, G), rounded out to 4 KiB blocks')
    .option('--rate <size>', 'at most this many bytes per second (K, M, G)')
    .action((path, o, cmd) => call(cmd, 'hsm.recall', { path, range: o.range === undefined ? undefined : parseRange(o.range), rate: o.rate === undefined ? undefined : parseSize(o.rate) },
      jobLine('recalling')))
  hsm.command('pin <path>').description('policy runs never migrate this file')
    .action((path, _o, cmd) => call(cmd, 'hsm.pin', { path }, (r) => `${r.path}: pinned`))
  hsm.command('unpin <path>').description('policy runs may migrate this file again')
    .action((path, _o, cmd) => call(cmd, 'hsm.unpin', { path }, (r) => `${r.path}: not pinned`))
  const policy = hsm.command('policy').description('which files policy runs migrate (set on a file or a directory, inherited down the tree)')
  policy.command('set <path>').description('files under PATH not accessed for --cold-after go to --tier; with --high/--low, the coldest go when their volume fills')
    .requiredOption('--tier <name>', 'tier to migrate to').option('--cold-after <duration>', 'e.g. 7d, 12h, 30m, 45s', '7d').option('--min-size <size>', 'only files at least this large (K, M, G)')
    .option('--high <percent>', 'when a volume holding these files is fuller than this (e.g. 85%), migrate the coldest of them...')
    .option('--low <percent>', '...until it is down to this (e.g. 70%)')
    .option('--premigrate', 'an archive tier: cold files are only copied there, their pool blocks released when a watermark needs the space')
    .option('--regions [size]', 'judge heat per region of a file (default 1M): cold regions go to the tier, hot ones come back')
    .option('--snapshots-first', 'blocks only snapshots hold (not the disk) go to the tier at every run, before anything else')
    .action((path, o, cmd) => call(cmd, 'hsm.policy.set', {
      path, tier: o.tier, coldAfter: o.coldAfter, minSize: o.minSize === undefined ? undefined : parseSize(o.minSize), high: o.high, low: o.low, premigrate: o.premigrate,
      regions: o.regions === undefined || o.regions === true ? o.regions : parseSize(o.regions), snapshotsFirst: o.snapshotsFirst,
    },
      (r) => `${r.path}: files cold for ${r.policy.coldAfterMs / 1000}s, at least ${formatSize(r.policy.minSize)}, go to tier ${r.policy.tier}` +
        (r.policy.highPct === undefined ? '' : `; above ${r.policy.highPct}% full, the coldest go until ${r.policy.lowPct}%`) + (r.policy.premigrate ? ' (premigrated first)' : '') +
        (r.policy.regionBytes ? `, judged per ${formatSize(r.policy.regionBytes)} region (hot ones come back)` : '') +
        (r.policy.snapshotsFirst ? '; blocks only snapshots hold go first' : '')))
  hsm.command('run').description('run the policies now (a job; they also run every hour)')
    .action((_o, cmd) => call(cmd, 'hsm.run', undefined, (r) => `policy run: ${r.files} file(s) to migrate: job ${r.job} (vsm job wait ${r.job})`))
  hsm.command('check').description('remove archive objects nothing in the fs points into; report objects the fs needs that are gone')
    .option('--dry-run', 'only report')
    .action((o, cmd) => call(cmd, 'hsm.check', { dryRun: !!o.dryRun }, (r) => r.tiers.length
      ? r.tiers.map((t: any) => `tier ${t.tier}: ${t.objects} objects, ${t.orphans.length} orphaned${o.dryRun ? '' : ` (${t.removed} removed)`}` +
        (t.missing.length ? `; MISSING ${t.missing.length} the fs points into (their ranges read as EIO): ${t.missing.slice(0, 5).join(', ')}${t.missing.length > 5 ? ', ...' : ''}` : ', none missing')).join('\n')
      : 'no archive tiers'))
  hsm.command('status [path]').description('per file, the bytes on each tier; totals per tier')
    .action((path, _o, cmd) => call(cmd, 'hsm.status', { path }, (r) => {
      const cols = Object.keys(r.totals).sort()
      const rows = r.files.map((f: any) => [f.path + (f.pinned ? ' (pinned)' : '') + (f.moving ? ' (moving)' : ''), formatSize(f.size), ...cols.map((c) => formatSize(f.bytes[c] ?? 0))])
      return table(['FILE', 'SIZE', ...cols.map((c) => c.toUpperCase())], [...rows, ['total', '', ...cols.map((c) => formatSize(r.totals[c]))]])
    }))
}
