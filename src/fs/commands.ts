// The file system's extended commands (type byte 'F').
import type { CommandTable } from '../control/dispatch'
import type { FileSystem } from './filesystem'

export function fsCommands(fs: FileSystem): CommandTable {
  return {
    'fs.stat': () => ({ ...fs.statfs(), volumes: fs.volumeNames(), journal: fs.journalStats() }),
    'fs.check': () => fs.check(),
  }
}
