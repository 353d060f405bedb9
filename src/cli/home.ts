// Where a daemon lives: --home, else $VSM_HOME, else /var/lib/vsm; its socket and mount.
import { join, resolve } from 'path'

export const homeDir = (opt?: string) => resolve(opt ?? process.env.VSM_HOME ?? '/var/lib/vsm')
export const socketPath = (home: string) => join(home, 'vsm.sock')
export const defaultMount = (home: string) => join(home, 'mnt')
