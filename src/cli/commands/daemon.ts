// up, down, status: the daemon's life and the one-screen view of the stack.
import { Command, Option } from 'commander'
import { FUSE_BINDINGS, LOG_LEVELS, type FuseBindingName, type LogLevel } from '../../daemon/options'
import { lockHolder } from '../../daemon/lock'
import { parseListen } from '../../metrics/http'
import { defaultMount, homeDir } from '../home'
import { table } from '../table'
import { formatSize, parseSize } from '../units'
import { isRunning, startDetached, stopDaemon } from '../up'
import type { JobInfo } from '../../control/jobs'
import type { Attention } from '../../daemon/attention'
import { call, globals, Opts, print, withClient } from '../call'
import { waitWithProgress } from '../progress'
import { deviceTable, volumeTable } from './volume'

const percent = (j: JobInfo) => (j.progress?.total ? `${Math.floor((100 * j.progress.done) / j.progress.total)}%` : '-')

export function registerDaemon(program: Command, cliMain: string) {
  program.command('up')
    .description('start the stack; with no pool yet, create the embedded default')
    .option('--mount <dir>', 'where to mount the FUSE view (default <home>/mnt)')
    .option('--foreground', 'run in this process instead of detaching, logging to stdout too (for journald)')
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics, on a loopback address only (default: off)')
    .addOption(new Option('--log-level <level>', 'least severe log entry written').choices(LOG_LEVELS).default('info'))
    // the detached daemon (`vsm up` without --foreground) logs to its file only
    .addOption(new Option('--no-log-stdout').hideHelp())
    .option('--socket-group <group>', 'members of GROUP may use the control socket; each command is authorised by the caller\'s uid: a user commands only its own disks')
    .option('--secondary', 'a replication secondary: a pool and no fs, waiting for a primary (vsm repl create on the primary)')
    .option('--allow-other', 'let other users use the mount; the kernel enforces each disk\'s owner and mode (default_permissions)')
    .addOption(new Option('--fuse <binding>', 'FUSE binding: native (libfuse3 low-level addon; falls back to fuse-native with a warning when it cannot load) or fuse-native').choices(FUSE_BINDINGS).default('native'))
    .option('--device-size <size>', 'size of each backing file of a new default pool', process.env.VSM_DEFAULT_DEVICE_SIZE ?? '8G')
    .action(async (_o, cmd: Command) => {
      const o = cmd.optsWithGlobals() as Opts & { mount?: string; foreground?: boolean; deviceSize: string; logLevel: LogLevel; logStdout: boolean; allowOther?: boolean; metrics?: string; socketGroup?: string; fuse: FuseBindingName; secondary?: boolean }
      const home = homeDir(o.home)
      const mount = o.mount ?? defaultMount(home)
      const defaultDeviceSize = parseSize(o.deviceSize)
      const metrics = o.metrics === undefined ? undefined : parseListen(o.metrics)
      // The daemon refuses a held home itself (one line, exit 1), also in the foreground.
      // the daemon's modules are loaded by the daemon only: every other command is a client
      if (o.foreground) { const { runDaemon } = await import('../../daemon/main'); await runDaemon({ home, mount, defaultDeviceSize, logLevel: o.logLevel, logToStdout: o.logStdout, allowOther: !!o.allowOther, metrics, socketGroup: o.socketGroup, fuse: o.fuse, secondary: !!o.secondary }); return }
      // Only looks: a running daemon's socket, mount and files are not touched.
      const holder = lockHolder(home)
      if (holder !== null) {
        if (await isRunning(home)) { print(`vsm is already running (pid ${holder || 'unknown'}, home ${home})`); return }
        throw new Error(`another vsm (pid ${holder || 'unknown'}) holds home ${home} but its socket does not answer (starting, or hung); not starting a second one`)
      }
      const pid = await startDetached(cliMain, ['--home', home, '--mount', mount, '--device-size', o.deviceSize, '--log-level', o.logLevel, '--fuse', o.fuse, '--no-log-stdout', ...(o.allowOther ? ['--allow-other'] : []), ...(o.metrics ? ['--metrics', o.metrics] : []), ...(o.socketGroup !== undefined ? ['--socket-group', o.socketGroup] : []), ...(o.secondary ? ['--secondary'] : [])], home)
      print(o.json ? JSON.stringify({ pid, home, mount, secondary: !!o.secondary }) : o.secondary ? `vsm up: replication secondary (pid ${pid}, home ${home})` : `vsm up: ${mount} (pid ${pid}, home ${home})`)
      // what status would flag (device files that may outgrow their file system, a device
      // missing at start) is said at once, not left for the operator to go and look
      if (!o.json && !o.secondary) {
        const { attention } = await withClient(cmd, (c) => c.call('status')) as { attention: Attention[] }
        if (attention.length) print(attentionLines(attention).join('\n'))
      }
    })

  program.command('down').description('flush, unmount and stop the daemon; refused while disks are open')
    .option('--force', 'stop even with disks open (their users get ENOTCONN)')
    .action(async (o: { force?: boolean }, cmd: Command) => {
      const home = homeDir(globals(cmd).home)
      print((await stopDaemon(home, o.force === true)) ? 'vsm down: stopped' : `vsm is not running (home ${home})`)
    })

  program.command('status').description('pool, volumes, file system and disks').action((_o, cmd: Command) =>
    call(cmd, 'status', undefined, (s) => [
      `vsm ${s.version}  pid ${s.pid}  up ${s.uptimeSeconds}s`,
      `home   ${s.home}`,
      `mount  ${s.mount}`,
      ...(s.metrics ? [`metrics http://${s.metrics}/metrics`] : []),
      s.fs.unusable ? `fs     unusable: ${s.fs.unusable}` : `fs     ${formatSize(s.fs.size - s.fs.free)} used of ${formatSize(s.fs.size)} on ${s.fs.volumes.join(', ')}; ${s.disks} disk(s)`,
      '',
      deviceTable(s.devices),
      '',
      volumeTable(s.volumes),
      ...(s.jobs.length ? ['', table(['JOB', 'KIND', 'STATE', 'PROGRESS'], s.jobs.map((j: JobInfo) => [j.id, j.kind, j.state, percent(j)]))] : []),
      ...(s.attention.length ? ['', ...attentionLines(s.attention)] : []),
    ].join('\n')))

  const job = program.command('job').description('long operations (rebuild, resync, flatten, move): list, wait, pause, resume, cancel')
  job.command('list').description('jobs: running, paused and recent, with progress').action((_o, cmd) => call(cmd, 'job.list', undefined, (js: any[]) =>
    table(['JOB', 'KIND', 'STATE', 'PROGRESS'], js.map((j) => [j.id, j.kind, j.outcome ?? j.state, percent(j)]))))
  job.command('wait [id]').description('wait for a job (a progress bar on a terminal), or --all').option('--all', 'wait for every job')
    .action(async (id: string | undefined, o: { all?: boolean }, cmd: Command) => {
      if (!o.all && !/^\d+$/.test(id ?? '')) throw new Error('job wait needs a job id or --all')
      const json = globals(cmd).json
      const jobs: JobInfo[] = await withClient(cmd, async (c) => (o.all
        ? (await c.call('job.wait', { all: true })) as JobInfo[]
        : [await waitWithProgress(c, Number(id), !json && process.stdout.isTTY === true)]))
      print(json ? JSON.stringify(o.all ? jobs : jobs[0], null, 2) : jobs.map((j) => `job ${j.id} (${j.kind}): ${j.error ? `${j.outcome ?? 'failed'}: ${j.error.message}` : 'done'}`).join('\n'))
      const failed = jobs.find((j) => j.error)
      if (failed) throw new Error(`job ${failed.id} ${failed.outcome ?? 'failed'}: ${failed.error!.message}`)
    })
  for (const [verb, what] of [['pause', 'pause a running job where it is (a rebuild, resync, scrub, relayout, move, flatten, migrate); it holds its place until resumed'], ['resume', 'resume a paused job']] as const) {
    job.command(`${verb} <id>`).description(what).action((id: string, _o, cmd: Command) => {
      if (!/^\d+$/.test(id)) throw new Error(`job ${verb} needs a job id`)
      return call(cmd, `job.${verb}`, { id: Number(id) }, (j: JobInfo) => `job ${j.id} (${j.kind}): ${j.state}, ${percent(j)}`)
    })
  }
  job.command('cancel <id>').description('cancel a job; a grow, move or relayout is aborted (the volume keeps its old layout)')
    .action(async (id: string, _o, cmd: Command) => {
      if (!/^\d+$/.test(id)) throw new Error('job cancel needs a job id')
      // waits for the job to unwind, so the answer says how it ended
      const j = await withClient(cmd, async (c) => {
        const first = (await c.call('job.cancel', { id: Number(id) })) as JobInfo
        return first.state === 'concluded' ? { ...first, before: true } : { ...(await c.call('job.wait', { id: Number(id) }) as JobInfo), before: false }
      })
      const how = `${j.outcome}${j.error ? ` (${j.error.message})` : ''}`
      print(globals(cmd).json ? JSON.stringify(j, null, 2)
        : j.outcome === 'cancelled' ? `cancelled job ${id} (${j.kind}): ${j.error?.message ?? 'cancelled'}`
          : j.before ? `job ${id} (${j.kind}) had already finished: ${how}`
            : `job ${id} (${j.kind}) finished before the cancel took effect: ${how}`)
    })
}

function attentionLines(as: Attention[]): string[] {
  return ['needs attention:', ...as.map((a) => `  ${a.object}: ${a.problem}${a.fix ? `\n    fix: ${a.fix}` : ''}`)]
}
