// What every CLI command shares: the global options, one request to the daemon
// printed as JSON (--json) or through a human formatter.
import { Command } from 'commander'
import { ControlClient } from '../control/client'
import { homeDir, socketPath } from './home'

export type Opts = { home?: string; json?: boolean }

export const globals = (cmd: Command): Opts => cmd.optsWithGlobals() as Opts
export const print = (s: string) => process.stdout.write(s.endsWith('\n') ? s : s + '\n')

export async function withClient<T>(cmd: Command, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const client = await ControlClient.connect(socketPath(homeDir(globals(cmd).home)))
  try {
    return await fn(client)
  } finally {
    await client.close()
  }
}

/** Runs one request on the daemon and prints the reply as JSON or through `human`. */
export async function call(cmd: Command, name: string | number, args: object | undefined, human: (r: any) => string) {
  const r = await withClient(cmd, (c) => c.call(name, args))
  print(globals(cmd).json ? JSON.stringify(r, null, 2) : human(r))
}
