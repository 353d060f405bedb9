// `vsm`: the command line. Every command but `up --foreground` talks to the daemon
// through the control socket; each prints human output, or JSON with --json, and
// reports an error as one line on stderr with a non-zero exit.
import { Command, CommanderError } from 'commander'
import { VERSION } from '../daemon/options'
import { registerDaemon } from './commands/daemon'
import { registerDisk } from './commands/disk'
import { registerEvents } from './commands/events'
import { registerFs } from './commands/fs'
import { registerHsm } from './commands/hsm'
import { registerRepl } from './commands/repl'
import { registerSnapshot } from './commands/snapshot'
import { registerVolume } from './commands/volume'

// `vsm ... | head`: a reader that stops early is no error of ours (Node's default is a
// stack trace for the unhandled EPIPE)
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0)
  throw err
})

const program = new Command('vsm')
  .description('storage management beneath unmodified guests: virtual disks on a file system on volumes')
  .version(VERSION)
  .option('--home <dir>', 'daemon home (default $VSM_HOME or /var/lib/vsm)')
  .option('--json', 'machine-readable output')
  .exitOverride()
  .addHelpText('after', `
Sizes (--size, --rate, disk resize, volume grow) are bytes, or a number with a suffix
K, M, G or T in powers of 1024 (64K = 65536, 1.5G = 1610612736); human output shows
sizes the same way (B, K, M, G, T) and dates in local time. --json prints bytes and
epoch milliseconds for scripts.`)

registerDaemon(program, __filename)
registerVolume(program)
registerDisk(program)
registerSnapshot(program)
registerFs(program)
registerHsm(program)
registerRepl(program)
registerEvents(program)

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2)
  process.stderr.write(`vsm: ${(err as Error).message}\n`)
  process.exit(1)
})
