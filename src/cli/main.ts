// `vsm`: the command line. Every command but `up --foreground` talks to the daemon
// through the control socket; each prints human output, or JSON with --json, and
// reports an error as one line on stderr with a non-zero exit.
import { Command, CommanderError } from 'commander'
import { ControlClient } from '../control/client'
import { runDaemon } from '../daemon/main'
import { VERSION } from '../daemon/stack'
import { defaultMount, homeDir, socketPath } from './home'
import { table } from './table'
import { formatSize, parseSize } from './units'
import { isRunning, startDetached, stopDaemon } from './up'

type Opts = { home?: string; json?: boolean }

const program = new Command('vsm')
  .description('storage management beneath unmodified guests: virtual disks on a file system on volumes')
  .version(VERSION)
  .option('--home <dir>', 'daemon home (default $VSM_HOME or /var/lib/vsm)')
  .option('--json', 'machine-readable output')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) })

const globals = (cmd: Command): Opts => cmd.optsWithGlobals() as Opts
const print = (s: string) => process.stdout.write(s.endsWith('\n') ? s : s + '\n')
const size = (s: string) => parseSize(s)

/** Runs one request on the daemon and prints the reply as JSON or through `human`. */
async function call(cmd: Command, name: string, args: object | undefined, human: (r: any) => string) {
  const o = globals(cmd)
  const client = await ControlClient.connect(socketPath(homeDir(o.home)))
  try {
    const r = await client.call(name, args)
    print(o.json ? JSON.stringify(r, null, 2) : human(r))
  } finally {
    client.close()
  }
}

program.command('up')
  .description('start the stack; with no pool yet, create the embedded default')
  .option('--mount <dir>', 'where to mount the FUSE view (default <home>/mnt)')
  .option('--foreground', 'run in this process instead of detaching')
  .option('--device-size <size>', 'size of each backing file of a new default pool', process.env.VSM_DEFAULT_DEVICE_SIZE ?? '8G')
  .action(async (_o, cmd: Command) => {
    const o = cmd.optsWithGlobals() as Opts & { mount?: string; foreground?: boolean; deviceSize: string }
    const home = homeDir(o.home)
    const mount = o.mount ?? defaultMount(home)
    const defaultDeviceSize = size(o.deviceSize)
    if (await isRunning(home)) { print(`vsm is already running (home ${home})`); return }
    if (o.foreground) { await runDaemon({ home, mount, defaultDeviceSize }); return }
    const pid = await startDetached(__filename, ['--home', home, '--mount', mount, '--device-size', o.deviceSize], home)
    print(o.json ? JSON.stringify({ pid, home, mount }) : `vsm up: ${mount} (pid ${pid}, home ${home})`)
  })

program.command('down').description('flush, unmount and stop the daemon').action(async (_o, cmd: Command) => {
  const home = homeDir(globals(cmd).home)
  print((await stopDaemon(home)) ? 'vsm down: stopped' : `vsm is not running (home ${home})`)
})

program.command('status').description('pool, volumes, file system and disks').action((_o, cmd: Command) =>
  call(cmd, 'status', undefined, (s) => [
    `vsm ${s.version}  pid ${s.pid}  up ${s.uptimeSeconds}s`,
    `home   ${s.home}`,
    `mount  ${s.mount}`,
    `fs     ${formatSize(s.fs.size - s.fs.free)} used of ${formatSize(s.fs.size)} on ${s.fs.volumes.join(', ')}; ${s.disks} disk(s)`,
    '',
    deviceTable(s.devices),
    '',
    volumeTable(s.volumes),
  ].join('\n')))

const deviceTable = (ds: any[]) => table(['DEVICE', 'SIZE', 'FREE', 'STATE', 'PATH'], ds.map((d) => [d.name, formatSize(d.size), formatSize(d.free), d.state, d.path]))
const volumeTable = (vs: any[]) => table(['VOLUME', 'LAYOUT', 'SIZE', 'STATE', 'DEVICES'], vs.map((v) => [v.name, v.layout, formatSize(v.size), v.state, v.devices.join(',')]))
const diskTable = (ds: any[]) => table(['DISK', 'SIZE', 'ALLOCATED', 'VOLUME', 'OPEN'], ds.map((d) => [d.path, formatSize(d.size), formatSize(d.allocated), d.policies?.volume ?? '-', d.open]))
const showObject = (o: object) => Object.entries(o).map(([k, v]) => `${k.padEnd(12)} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`).join('\n')

const device = program.command('device').description('backing files and block devices')
device.command('add <name> <path>').option('--size <size>', 'create a sparse file of this size').description('add a device to the pool')
  .action((name, path, o, cmd) => call(cmd, 'device.add', { name, path, size: o.size && size(o.size) }, (d) => `added device ${d.name} (${formatSize(d.size)}) at ${d.path}`))
device.command('list').action((_o, cmd) => call(cmd, 'device.list', undefined, deviceTable))
device.command('remove <name>').action((name, _o, cmd) => call(cmd, 'device.remove', { name }, () => `removed device ${name}`))

const volume = program.command('volume').description('volumes and their layouts')
volume.command('create <name>')
  .requiredOption('--layout <layout>', 'concat|stripe|mirror')
  .requiredOption('--devices <list>', 'comma-separated device names')
  .requiredOption('--size <size>', 'volume size')
  .option('--stripe-unit <size>', 'stripe unit (stripe)')
  .option('--copies <n>', 'mirror copies')
  .action((name, o, cmd) => call(cmd, 'volume.create', {
    name, layout: o.layout, devices: String(o.devices).split(','), size: size(o.size),
    stripeUnit: o.stripeUnit && size(o.stripeUnit), copies: o.copies && Number(o.copies),
  }, (v) => `created volume ${v.name}: ${v.layout} ${formatSize(v.size)} on ${v.devices.join(',')}`))
volume.command('list').action((_o, cmd) => call(cmd, 'volume.list', undefined, volumeTable))
volume.command('show <name>').action((name, _o, cmd) => call(cmd, 'volume.show', { name }, showObject))

const disk = program.command('disk').description('virtual disks: files in the FUSE view')
disk.command('create <path>').requiredOption('--size <size>', 'disk size').option('--volume <name>', 'volume to place it on')
  .action((path, o, cmd) => call(cmd, 'disk.create', { path, size: size(o.size), volume: o.volume }, (d) => `created disk ${d.path} (${formatSize(d.size)}, on ${d.policies.volume})`))
disk.command('list').action((_o, cmd) => call(cmd, 'disk.list', undefined, diskTable))
disk.command('show <path>').action((path, _o, cmd) => call(cmd, 'disk.show', { path }, showObject))
disk.command('resize <path> <size>').option('--shrink', 'allow making the disk smaller')
  .action((path, s, o, cmd) => call(cmd, 'disk.resize', { path, size: size(s), shrink: !!o.shrink }, (d) => `${d.path} is now ${formatSize(d.size)}`))
disk.command('delete <path>').option('--force', 'delete even while open')
  .action((path, o, cmd) => call(cmd, 'disk.delete', { path, force: !!o.force }, () => `deleted disk ${path}`))

const fsCmd = program.command('fs').description('the file system on the volumes')
fsCmd.command('check').description('consistency check of the mounted fs').action(async (_o, cmd) => {
  await call(cmd, 'fs.check', undefined, (r) => (r.ok ? `fs: clean (${formatSize(r.leakedBytes)} leaked)` : `fs: ${r.errors.length} error(s)\n${r.errors.join('\n')}`))
})

const job = program.command('job').description('long operations')
job.command('list').action((_o, cmd) => call(cmd, 'job.list', undefined, (js: any[]) =>
  table(['JOB', 'KIND', 'STATE', 'PROGRESS'], js.map((j) => [j.id, j.kind, j.state, j.progress?.total ? `${Math.floor((100 * j.progress.done) / j.progress.total)}%` : '-']))))
job.command('wait <id>').action((id, _o, cmd) => call(cmd, 'job.wait', { id }, (j) => `job ${j.id}: ${j.state}${j.error ? ` (${j.error})` : ''}`))
job.command('cancel <id>').action((id, _o, cmd) => call(cmd, 'job.cancel', { id }, () => `cancelled job ${id}`))

program.command('ctl <code> [json]').description('send a raw IOCTL-style command (name or number)')
  .action(async (code: string, json: string | undefined, _o, cmd: Command) => {
    let args: unknown
    try { args = json === undefined ? undefined : JSON.parse(json) } catch { throw new Error(`argument is not JSON: ${json}`) }
    const o = globals(cmd)
    const client = await ControlClient.connect(socketPath(homeDir(o.home)))
    try {
      print(JSON.stringify(await client.call(/^(0x[0-9a-f]+|\d+)$/i.test(code) ? Number(code) : code, args), null, 2))
    } finally {
      client.close()
    }
  })

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2)
  process.stderr.write(`vsm: ${(err as Error).message}\n`)
  process.exit(1)
})
