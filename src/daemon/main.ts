// The vsm daemon process: starts the stack, writes <home>/vsm.pid, logs JSON lines
// under <home>/log/ (and to stdout when run in the foreground, for journald), and on
// SIGTERM/SIGINT or a shutdown command flushes and unmounts. Owns the daemon's one
// event sink, handed to the stack. `vsm up` runs this detached; `vsm up --foreground`
// runs it in the terminal or under systemd.
// The home's lock comes first: a second daemon on the same home stops before it
// writes, opens or unmounts anything.
import { promises as fsp } from 'fs'
import { join } from 'path'
import pino from 'pino'
import { Events } from '../control/events'
import type { Listen } from '../metrics/http'
import { Stack } from './stack'
import type { FuseBindingName, LogLevel } from './options'
import { SecondarySite } from '../replicator/secondary'
import { acquireHomeLock } from './lock'
import { homeSubdir, openHomeToGroup, prepareHome } from './home'
import { resolveGroup } from '../virtualizer/owner'
import { openOwnAppend, writeFileAtomic } from '../block/files'
import { LogFile } from './logfile'

/** How long a stop may take before the daemon exits anyway (vsm down waits 120 s). */
const STOP_WATCHDOG_MS = 60_000


export interface DaemonArgs {
  home: string
  mount: string
  defaultDeviceSize: number
  logLevel: LogLevel
  /** Also log to stdout (the terminal, or journald under systemd). */
  logToStdout: boolean
  /** Mount with allow_other,default_permissions: other users reach the view, the kernel enforces each file's mode. */
  allowOther?: boolean
  /** Where to serve Prometheus metrics; off when absent. */
  metrics?: Listen
  /** A group whose members may use the control socket (name or gid). */
  socketGroup?: string
  fuse?: FuseBindingName
  /** A replication secondary: a pool and no fs, waiting for a primary. */
  secondary?: boolean
}

export async function runDaemon(args: DaemonArgs): Promise<void> {
  let logFd: number
  let socketGroup: number | undefined
  try {
    prepareHome(args.home)
    await acquireHomeLock(args.home)
    if (args.socketGroup !== undefined) {
      socketGroup = await resolveGroup(args.socketGroup)
      openHomeToGroup(args.home, socketGroup)
    }
    logFd = openOwnAppend(join(homeSubdir(args.home, 'log'), 'vsm.log'))
  } catch (err) {
    process.stderr.write(`vsm: ${(err as Error).message}\n`)
    process.exit(1)
  }
  const logPath = join(homeSubdir(args.home, 'log'), 'vsm.log')
  const dest = new LogFile(logFd, {
    failing: (err) => events.publish('daemon.log-failing', { path: logPath, reason: `${err.message}: the daemon goes on; its log lines wait in memory (up to 4 MiB, then are dropped) until the log takes writes again` }, 'error'),
    recovered: (lost, reason) => events.publish('daemon.log-recovered', { path: logPath, lost, reason: `writes to the log failed (${reason}); ${lost} line(s) were dropped meanwhile` }, lost ? 'warn' : 'info'),
  })
  const level = args.logLevel
  const streams: pino.StreamEntry[] = [{ stream: dest, level }]
  if (args.logToStdout) streams.push({ stream: pino.destination({ dest: 1, sync: true }), level })
  const log = pino({ base: { pid: process.pid }, level }, pino.multistream(streams))
  const events = new Events(log)
  const pidFile = join(args.home, 'vsm.pid')
  let stack: { stop(): Promise<void>; stopStep?: string } | undefined
  let stopping: Promise<void> | undefined
  const stop = (reason: string) => {
    stopping ??= (async () => {
      events.publish('daemon.stopping', { reason })
      // A stop that hangs (seen once in CI with the fuse-native binding, cause not yet found)
      // would hold the home's lock forever; exiting leaves what a crash leaves, which the
      // journals and the resync recover, and every flushed write is already durable.
      setTimeout(() => {
        log.error({ step: stack?.stopStep }, `stop did not finish within ${STOP_WATCHDOG_MS / 1000} s: exiting as after a crash`)
        dest.flushSync()
        process.exit(1)
      }, STOP_WATCHDOG_MS)
      try {
        await stack?.stop()
        await fsp.rm(pidFile, { force: true })
      } catch (err) {
        log.error({ err }, 'stop failed')
        process.exitCode = 1
      }
      // bounded: a log on a hung mount must not hold the exit
      await Promise.race([dest.drained(), new Promise((r) => setTimeout(r, 2000).unref())])
      dest.flushSync()
      process.exit()
    })()
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('uncaughtException', (err) => { log.fatal({ err }, 'uncaught exception'); dest.flushSync(); process.exit(70) })
  process.on('unhandledRejection', (err) => { log.fatal({ err }, 'unhandled rejection'); dest.flushSync(); process.exit(70) })
  // Before the socket answers: `vsm up` returns as soon as it does, and what it
  // started must already be findable by its pid file.
  await writeFileAtomic(pidFile, `${process.pid}\n`, 0o644)
  // a takeover, a step-down for a failback, a failback done: the same process, holding the home's lock
  // throughout, stops what serves the home and starts it in its new role
  const switchTo = async (start: () => Promise<typeof stack>) => {
    if (stopping) return
    try {
      await stack?.stop()
      stack = undefined
      stack = await start()
    } catch (err) {
      log.fatal({ err }, 'serving the home in its new replication role failed')
      dest.flushSync()
      process.exit(1)
    }
  }
  const startStack = (): Promise<Stack> => Stack.start({
    home: args.home, mount: args.mount, defaultDeviceSize: args.defaultDeviceSize, allowOther: args.allowOther, metrics: args.metrics, socketGroup, fuse: args.fuse, log, events,
    onShutdown: () => stop('shutdown command'), onStepDown: () => void switchTo(startSecondary), onRestart: () => void switchTo(startStack),
  })
  const startSecondary = (): Promise<SecondarySite> => SecondarySite.start({
    home: args.home, mount: args.mount, defaultDeviceSize: args.defaultDeviceSize, log, events, onShutdown: () => stop('shutdown command'), onPromote: () => void switchTo(startStack),
  })
  try {
    stack = args.secondary ? await startSecondary() : await startStack()
  } catch (err) {
    log.error({ err }, 'start failed')
    await fsp.rm(pidFile, { force: true })
    dest.flushSync()
    // The one line `vsm up` shows the user.
    process.stderr.write(`vsm: ${(err as Error).message}\n`)
    process.exit(1)
  }
}
