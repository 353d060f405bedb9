// The vsm daemon process: starts the stack, writes <home>/vsm.pid, logs JSON lines
// under <home>/log/, and on SIGTERM/SIGINT or a shutdown command flushes and unmounts.
// `vsm up` runs this detached; `vsm up --foreground` runs it in the terminal.
import { mkdirSync, promises as fsp } from 'fs'
import { join } from 'path'
import pino from 'pino'
import { Stack } from './stack'

export interface DaemonArgs { home: string; mount: string; defaultDeviceSize: number }

export async function runDaemon(args: DaemonArgs): Promise<void> {
  mkdirSync(join(args.home, 'log'), { recursive: true, mode: 0o700 })
  const dest = pino.destination({ dest: join(args.home, 'log', 'vsm.log'), sync: false, mkdir: true })
  const log = pino({ base: { pid: process.pid } }, dest)
  const pidFile = join(args.home, 'vsm.pid')
  let stack: Stack | undefined
  let stopping: Promise<void> | undefined
  const stop = (why: string) => {
    stopping ??= (async () => {
      log.info({ why }, 'stopping')
      try {
        await stack?.stop()
        await fsp.rm(pidFile, { force: true })
      } catch (err) {
        log.error({ err }, 'stop failed')
        process.exitCode = 1
      }
      dest.flushSync()
      process.exit()
    })()
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('uncaughtException', (err) => { log.fatal({ err }, 'uncaught exception'); dest.flushSync(); process.exit(70) })
  process.on('unhandledRejection', (err) => { log.fatal({ err }, 'unhandled rejection'); dest.flushSync(); process.exit(70) })
  try {
    stack = await Stack.start({ ...args, log, onShutdown: () => stop('shutdown command') })
  } catch (err) {
    log.error({ err }, 'start failed')
    dest.flushSync()
    // The one line `vsm up` shows the user.
    process.stderr.write(`vsm: ${(err as Error).message}\n`)
    process.exit(1)
  }
  await fsp.writeFile(pidFile, `${process.pid}\n`)
}
