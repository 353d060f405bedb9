// The daemon's own small settings file, <home>/vsm.json: which volumes the fs spans
// (in fs order) and the default mount. Pool and fs metadata live on the devices.
import { promises as fsp } from 'fs'
import { join } from 'path'

export interface DaemonConfig {
  version: 1
  fsVolumes: string[]
  defaultVolume: string
}

export const configPath = (home: string) => join(home, 'vsm.json')

export async function readConfig(home: string): Promise<DaemonConfig | null> {
  try {
    return JSON.parse(await fsp.readFile(configPath(home), 'utf8')) as DaemonConfig
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw e
  }
}

/** Written to a temp file, fsync'd and renamed, so a crash leaves the old or the new file whole. */
export async function writeConfig(home: string, cfg: DaemonConfig): Promise<void> {
  const tmp = configPath(home) + '.tmp'
  const fh = await fsp.open(tmp, 'w', 0o600)
  try {
    await fh.writeFile(JSON.stringify(cfg, null, 2) + '\n')
    await fh.sync()
  } finally {
    await fh.close()
  }
  await fsp.rename(tmp, configPath(home))
}
