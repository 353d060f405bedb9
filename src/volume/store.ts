// The pool configuration store: the one way the pool's config changes. A change is
// applied to a copy of the current config, gets the next seq and a one-line record of
// what it was, is written to the label of every present device (one at a time) and to
// <home>/pool.json, and only then becomes the current config. Every version is also
// kept in <home>/archive (the newest ARCHIVE_KEEP), as LVM keeps /etc/lvm/archive, so
// `vsm pool history` can say what changed when. Progress checkpoints of a running copy
// (rebuild, relayout) are versions like any other but are not archived: one a second
// would push every real change out.
import { promises as fsp } from 'fs'
import * as path from 'path'
import { BlockDev, VsmError } from '../block/blockdev'
import { readOwnFile, writeFileAtomic } from '../block/files'
import type { DeviceConfig, PoolConfig } from './config'
import { writeLabel } from './label'
import { errMsg } from './core'

export const POOL_FILE = 'pool.json'
export const ARCHIVE_DIR = 'archive'
export const ARCHIVE_KEEP = 20

/** One version of the config, as `vsm pool history` lists it. */
export interface ConfigVersion {
  seq: number
  /** When it was committed (ISO time). */
  at: string
  /** What the change was, one line. */
  change: string
}

const ARCHIVED = /^pool-(\d+)\.json$/
const archiveName = (seq: number) => `pool-${String(seq).padStart(10, '0')}.json`

export class ConfigStore {
  private cfg: PoolConfig

  /**
   * labelIo: the open device a label of device id goes to (null: absent, it catches up
   * at the next assembly). onRecordError: the archive is a record, not the config, and
   * pool.json lags harmlessly behind a version a label holds; a failure to write either
   * is reported there and never fails a change already committed.
   */
  constructor(readonly home: string, cfg: PoolConfig, private readonly labelIo: (id: string) => BlockDev | null,
      private readonly onRecordError: (what: 'archive' | 'pool.json', err: unknown) => void = () => {}) {
    this.cfg = cfg
  }

  /** The current config. Read it, never change it: changes go through change(). */
  get current(): PoolConfig { return this.cfg }

  /** Write the first version of a new pool (no device yet: pool.json and the archive). */
  async init(): Promise<void> {
    await this.writeFile(this.cfg)
    await this.archive(this.cfg)
  }

  /** The config in <home>/pool.json; null if there is none. */
  static async readFile(home: string): Promise<PoolConfig | null> {
    const file = path.join(home, POOL_FILE)
    try {
      return JSON.parse(await readOwnFile(file))
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw new VsmError('EINVAL', `cannot read ${file}: ${errMsg(e)}`)
    }
  }

  static async fileExists(home: string): Promise<boolean> {
    return fsp.stat(path.join(home, POOL_FILE)).then(() => true, () => false)
  }

  /**
   * Apply a change to a copy of the current config and commit it. apply returns the
   * one-line description of what it changed, or null when there is nothing to change
   * (then nothing is written). Resolves true if a new version was committed.
   * progress: a copy's checkpoint, kept out of the archive.
   */
  async change(apply: (next: PoolConfig) => string | null | Promise<string | null>, opts: { progress?: boolean } = {}): Promise<boolean> {
    const next = structuredClone(this.cfg)
    const what = await apply(next)
    if (what === null) return false
    await this.commit(next, what, !opts.progress)
    return true
  }

  private async commit(next: PoolConfig, what: string, archive: boolean): Promise<void> {
    next.seq = this.cfg.seq + 1
    next.updated = new Date().toISOString()
    next.change = what
    // a device that cannot take its label now will lose to the newer ones at the next assembly;
    // one at a time, devices new to the config first, so a crash tears at most one label and
    // never leaves a config naming a device whose label was not yet written
    const known = (d: DeviceConfig) => Number(this.cfg.devices.some((x) => x.id === d.id))
    const present = next.devices.filter((d) => this.labelIo(d.id)).sort((a, b) => known(a) - known(b))
    let written = 0
    let firstErr: unknown
    for (const d of present) {
      try {
        await this.writeDeviceLabel(next, d)
        written++
      } catch (e) {
        firstErr ??= e
      }
    }
    if (present.length > 0 && written === 0) {
      throw new VsmError('EIO', `could not write the pool configuration to any device: ${errMsg(firstErr)}`)
    }
    try {
      await this.writeFile(next)
    } catch (e) {
      // written to a label, the version stands (assembly takes the newest of the labels and
      // pool.json) and must become current: the next change would otherwise reuse its seq
      // for another config. pool.json catches up at the next change or start.
      if (written === 0) throw e
      this.onRecordError('pool.json', e)
    }
    this.cfg = next
    if (archive) await this.archive(next).catch((e) => this.onRecordError('archive', e))
  }

  /** Assembly settled on cfg (the newest of pool.json and the labels): current from now on, written nowhere yet. */
  assembled(cfg: PoolConfig): void {
    this.cfg = cfg
  }

  /**
   * Bring what lags behind the current config up to it: the labels of the devices in
   * `behind`, pool.json if it held fileSeq (null: there was none), and the archive if a
   * crash before its archiving left the version out.
   */
  async catchUp(fileSeq: number | null, behind: DeviceConfig[]): Promise<void> {
    const cfg = this.cfg
    await Promise.all(behind.map((d) => this.writeDeviceLabel(cfg, d).catch(() => {})))
    if (fileSeq !== cfg.seq) await this.writeFile(cfg)
    if (!(await this.archivedSeqs()).includes(cfg.seq)) await this.archive(cfg).catch((e) => this.onRecordError('archive', e))
  }

  /** The archived versions, oldest first. */
  async history(): Promise<ConfigVersion[]> {
    const out: ConfigVersion[] = []
    for (const seq of await this.archivedSeqs()) {
      const cfg = await this.archived(seq).catch(() => null)
      if (cfg) out.push({ seq: cfg.seq, at: cfg.updated, change: cfg.change ?? '(not recorded)' })
    }
    return out
  }

  /** One archived version in full. */
  async archived(seq: number): Promise<PoolConfig> {
    return JSON.parse(await readOwnFile(path.join(this.home, ARCHIVE_DIR, archiveName(seq))))
  }

  private writeDeviceLabel(cfg: PoolConfig, d: DeviceConfig): Promise<void> {
    const io = this.labelIo(d.id)
    if (!io) return Promise.resolve()
    return writeLabel(io, { poolId: cfg.poolId, deviceId: d.id, deviceName: d.name, seq: cfg.seq, config: cfg })
  }

  private writeFile(cfg: PoolConfig): Promise<void> {
    return writeFileAtomic(path.join(this.home, POOL_FILE), JSON.stringify(cfg, null, 2) + '\n')
  }

  private async archivedSeqs(): Promise<number[]> {
    const names = await fsp.readdir(path.join(this.home, ARCHIVE_DIR)).catch(() => [] as string[])
    return names.map((n) => ARCHIVED.exec(n)).filter((m) => m !== null).map((m) => Number(m![1])).sort((a, b) => a - b)
  }

  /** Keep cfg in the archive and drop all but the newest ARCHIVE_KEEP versions. */
  private async archive(cfg: PoolConfig): Promise<void> {
    const dir = path.join(this.home, ARCHIVE_DIR)
    await fsp.mkdir(dir, { mode: 0o700 }).catch((e) => { if (e.code !== 'EEXIST') throw e })
    await writeFileAtomic(path.join(dir, archiveName(cfg.seq)), JSON.stringify(cfg, null, 2) + '\n')
    for (const seq of (await this.archivedSeqs()).slice(0, -ARCHIVE_KEEP)) {
      await fsp.rm(path.join(dir, archiveName(seq)), { force: true })
    }
  }
}
