// up, down, status: the daemon's life and the one-screen view of the stack.
import { Command } from 'commander'
import { runDaemon } from '../../daemon/main'
import { defaultMount, homeDir } from '../home'
import { table } from '../table'
import { formatSize, parseSize } from '../units'
import { isRunning, startDetached, stopDaemon } from '../up'
import { call, globals, Opts, print } from '../call'
import { deviceTable, volumeTable } from './volume'

export function registerDaemon(program: Command, cliMain: string) {
  program.command('up')
    .description('start the stack; with no pool yet, create the embedded default')
    .option('--mount <dir>', 'where to mount the FUSE view (default <home>/mnt)')
    .option('--foreground', 'run in this process instead of detaching')
    .option('--device-size <size>', 'size of each backing file of a new default pool', process.env.VSM_DEFAULT_DEVICE_SIZE ?? '8G')
    .action(async (_o, cmd: Command) => {
      const o = cmd.optsWithGlobals() as Opts & { mount?: string; foreground?: boolean; deviceSize: string }
      const home = homeDir(o.home)
      const mount = o.mount ?? defaultMount(home)
      const defaultDeviceSize = parseSize(o.deviceSize)
      if (await isRunning(home)) { print(`vsm is already running (home ${home})`); return }
      if (o.foreground) { await runDaemon({ home, mount, defaultDeviceSize }); return }
      const pid = await startDetached(cliMain, ['--home', home, '--mount', mount, '--device-size', o.deviceSize], home)
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

  const job = program.command('job').description('long operations (rebuild, resync, flatten): list, wait, cancel')
  job.command('list').action((_o, cmd) => call(cmd, 'job.list', undefined, (js: any[]) =>
    table(['JOB', 'KIND', 'STATE', 'PROGRESS'], js.map((j) => [j.id, j.kind, j.state, j.progress?.total ? `${Math.floor((100 * j.progress.done) / j.progress.total)}%` : '-']))))
  job.command('wait <id>').action((id, _o, cmd) => call(cmd, 'job.wait', { id: Number(id) }, (j) => `job ${j.id}: ${j.state}${j.error ? ` (${j.error.message})` : ''}`))
  job.command('cancel <id>').action((id, _o, cmd) => call(cmd, 'job.cancel', { id: Number(id) }, () => `cancelled job ${id}`))
}
