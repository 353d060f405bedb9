// pool, device and volume commands: the volume manager's part of the CLI.
import { resolve } from 'path'
import { Command } from 'commander'
import { call, globals, print, withClient } from '../call'
import { waitWithProgress } from '../progress'
import { table } from '../table'
import { formatDate, formatSize, parseCount, parseSize } from '../units'

export const deviceTable = (ds: any[]) => table(['DEVICE', 'SIZE', 'FREE', 'STATE', 'PATH'], ds.map((d) => [d.name, formatSize(d.size), formatSize(d.free), d.state, d.path]))
export const volumeTable = (vs: any[]) => table(['VOLUME', 'LAYOUT', 'SIZE', 'STATE', 'DEVICES'], vs.map((v) => [v.name, v.layout, formatSize(v.size), v.state, v.devices.join(',')]))

/** One volume in words: sizes in units, lists joined, a reshape and the recovery at its last open in a sentence (no raw JSON). */
function showVolume(v: any): string {
  const rb = v.rebuild
  const rows: [string, string][] = [
    ['name', v.name], ['layout', v.layout], ['size', formatSize(v.size)], ['state', v.state], ['devices', v.devices.join(',')],
  ]
  if (v.stripeUnit !== undefined) rows.push(['stripe unit', formatSize(v.stripeUnit)])
  if (v.copies !== undefined) rows.push(['copies', String(v.copies)])
  rows.push(['open', v.open ? 'yes' : 'no'])
  if (v.resyncedBytes) rows.push(['recovered', `${formatSize(v.resyncedBytes)} of dirty regions resynced at open`])
  if (v.replayedRecords) rows.push(['recovered', `${v.replayedRecords} stripe journal records replayed at open`])
  if (v.reshape) {
    const r = v.reshape
    rows.push(['changing', `${r.kind} to ${r.layout}, ${formatSize(r.size)}${r.job !== null ? `, job ${r.job}` : ', not running'}` +
      `${r.copied !== undefined ? `, resumes at ${formatSize(r.copied)}` : ''}`])
  }
  const lines = [rows.map(([k, val]) => `${k.padEnd(12)} ${val}`).join('\n')]
  lines.push('', table(['MEMBER', 'DEVICE', 'LENGTH', 'STATE', 'REASON'], v.members.map((m: any, i: number) =>
    [i, m.device, formatSize(m.length), m.state, m.reason ?? ''])))
  if (rb) {
    const pct = rb.total ? Math.floor((100 * rb.done) / rb.total) : 0
    lines.push('', `${rb.kind === 'delta' ? 'resync' : 'rebuild'} onto ${rb.device}: ${pct}% (${formatSize(rb.done)} of ${formatSize(rb.total)}${rb.skipped ? `, ${formatSize(rb.skipped)} never written skipped` : ''}), ` +
      `${formatSize(rb.bytesPerSecond)}/s${rb.rate ? ` (limit ${formatSize(rb.rate)}/s)` : ''}, ETA ${rb.etaSeconds ?? '?'}s, job ${rb.job}`)
  }
  return lines.join('\n')
}

function scrubReport(r: any): string {
  const lines = [`scrubbed ${r.volume}: ${formatSize(r.checkedBytes)} checked` +
    `${r.skippedBytes ? `, ${formatSize(r.skippedBytes)} never written skipped` : ''}, ${r.repaired.length} block(s) repaired` +
    `${r.parityRowsFixed ? `, ${r.parityRowsFixed} parity row(s) rewritten` : ''}, ${r.unrecoverable.length} unrecoverable`]
  const perDevice = new Map<string, number>()
  for (const x of r.repaired) perDevice.set(x.device, (perDevice.get(x.device) ?? 0) + 1)
  if (perDevice.size) lines.push(`  repaired per device: ${[...perDevice].map(([d, n]) => `${d} ${n}`).join(', ')}`)
  for (const x of r.repaired) lines.push(`  repaired ${x.device} at ${x.offset}`)
  for (const x of r.unrecoverable) lines.push(`  UNRECOVERABLE ${x.device ? `${x.device} ` : ''}at ${x.offset}`)
  return lines.join('\n')
}

export function registerVolume(program: Command) {
  const pool = program.command('pool').description('the pool: the devices and volumes of this home')
  pool.command('history').description('recent versions of the pool configuration (kept in <home>/archive): seq, local time, what changed')
    .action((_o, cmd) => call(cmd, 'pool.history', undefined, (vs: any[]) =>
      table(['SEQ', 'TIME', 'CHANGE'], vs.map((v) => [v.seq, formatDate(Date.parse(v.at)), v.change]))))

  const device = program.command('device').description('backing files and block devices')
  device.command('add <name> <path>').option('--size <size>', 'create a sparse file of this size')
    .option('--spare', 'keep it as a hot spare: used at once when a member of a redundant volume fails')
    .option('--force', 'overwrite a path that already holds data (a file system, partition table, RAID or LVM member, non-zero bytes)')
    .description('add a device to the pool')
    // the daemon runs elsewhere: a relative path means the caller's directory
    .action((name, path, o, cmd) => call(cmd, 'device.add', { name, path: resolve(path), size: o.size && parseSize(o.size), spare: o.spare, force: o.force },
      (d) => `added ${d.state === 'spare' ? 'spare ' : ''}device ${d.name} (${formatSize(d.size)}) at ${d.path}`))
  device.command('list').description('devices with size, free space and state').action((_o, cmd) => call(cmd, 'device.list', undefined, deviceTable))
  device.command('remove <name>').description('take an unused device out of the pool').action((name, _o, cmd) => call(cmd, 'device.remove', { name }, () => `removed device ${name}`))
  device.command('offline <name>').description('take a device out of service (its volumes go degraded)')
    .action((name, _o, cmd) => call(cmd, 'device.offline', { name }, () => `device ${name} is offline`))
  device.command('online <name>').description('bring a device back; its copies are resynced by what they missed')
    .action((name, _o, cmd) => call(cmd, 'device.online', { name }, (r) =>
      `device ${name} is online${r.jobs.length ? `; resync job${r.jobs.length > 1 ? 's' : ''} ${r.jobs.join(', ')}` : ''}`))

  const volume = program.command('volume').description('volumes and their layouts')
  volume.command('create <name>').description('create a volume over devices with a layout')
    .requiredOption('--layout <layout>', 'concat|stripe|mirror|raid10|raid5')
    .requiredOption('--devices <list>', 'comma-separated device names')
    .requiredOption('--size <size>', 'volume size')
    .option('--stripe-unit <size>', 'stripe unit (stripe, raid10, raid5)')
    .option('--copies <n>', 'copies of each block (mirror, raid10)')
    .action((name, o, cmd) => call(cmd, 'volume.create', {
      name, layout: o.layout, devices: String(o.devices).split(','), size: parseSize(o.size),
      stripeUnit: o.stripeUnit && parseSize(o.stripeUnit), copies: o.copies && parseCount(o.copies, '--copies'),
    }, (v) => `created volume ${v.name}: ${v.layout} ${formatSize(v.size)} on ${v.devices.join(',')}`))
  volume.command('list').description('volumes with layout, size, state and devices').action((_o, cmd) => call(cmd, 'volume.list', undefined, volumeTable))
  volume.command('show <name>').description('one volume: members, their states, a rebuild under way').action((name, _o, cmd) => call(cmd, 'volume.show', { name }, showVolume))
  volume.command('scrub <name>').description('verify every block of every copy and repair bad ones from good ones (a progress bar on a terminal)')
    .option('--rate <size>', 'read at most this many bytes per second')
    .action(async (name, o, cmd) => {
      const job = await withClient(cmd, async (c) => {
        const { job } = await c.call('volume.scrub', { name, rate: o.rate && parseSize(o.rate) })
        return waitWithProgress(c, job, !globals(cmd).json && process.stdout.isTTY === true)
      })
      if (job.error) throw Object.assign(new Error(job.error.message), { code: job.error.code })
      print(globals(cmd).json ? JSON.stringify(job.result, null, 2) : scrubReport(job.result))
    })
  const started = (what: string) => (r: any) => `${what} as job ${r.job} (vsm job wait ${r.job})`
  const RATE = 'copy at most this many bytes per second'
  volume.command('grow <name> <size>').description('grow a volume online (copied onto a larger layout as a job)')
    .option('--rate <size>', RATE)
    .action((name, size, o, cmd) => call(cmd, 'volume.grow', { name, size: parseSize(size), rate: o.rate && parseSize(o.rate) }, started(`growing ${name} to ${size}`)))
  volume.command('move <name>').description('move the part of a volume on one device to another, online')
    .requiredOption('--from <device>', 'device to empty').requiredOption('--to <device>', 'device to move onto')
    .option('--rate <size>', RATE)
    .action((name, o, cmd) => call(cmd, 'volume.move', { name, from: o.from, to: o.to, rate: o.rate && parseSize(o.rate) }, started(`moving ${name} from ${o.from} to ${o.to}`)))
  volume.command('relayout <name>').description('change the layout of a volume online; --abort reverses one under way')
    .option('--layout <layout>', 'concat|stripe|mirror|raid10|raid5')
    .option('--devices <list>', 'comma-separated device names (default: the current ones)')
    .option('--stripe-unit <size>', 'stripe unit (stripe, raid10, raid5)')
    .option('--copies <n>', 'copies of each block (mirror, raid10)')
    .option('--rate <size>', RATE)
    .option('--abort', 'go back to the old layout and free the new extents')
    .action((name, o, cmd) => call(cmd, 'volume.relayout', o.abort ? { name, abort: true } : {
      name, layout: o.layout, devices: o.devices && String(o.devices).split(','),
      stripeUnit: o.stripeUnit && parseSize(o.stripeUnit), copies: o.copies && parseCount(o.copies, '--copies'), rate: o.rate && parseSize(o.rate),
    }, (r) => (o.abort ? `relayout of ${name} reversed: ${r.layout}` : started(`relaying out ${name} as ${o.layout}`)(r))))
  volume.command('replace <name> <old> <new>').description('rebuild the member on device OLD onto device NEW')
    .option('--rate <size>', RATE)
    .action((name, from, to, o, cmd) => call(cmd, 'volume.replace', { name, from, to, rate: o.rate && parseSize(o.rate) },
      (r) => `rebuilding ${name} from ${from} onto ${to}${r.job ? ` as job ${r.job} (vsm job wait ${r.job})` : ' when it is next opened'}`))
}
