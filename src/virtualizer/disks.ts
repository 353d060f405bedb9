// Virtual disks: every regular file of the fs can serve as a raw disk; `disk create`
// makes a sparse one and records its policies (placement now, replication and
// tiering for the later components) in an xattr of the file, so they travel with it.
import { VsmError } from '../block/blockdev'
import type { FileSystem } from '../fs'
import type { WriteGate } from './gate'
import { diskPath } from './paths'

/** The xattr holding a disk's record; the FUSE view hides the 'vsm.' namespace. */
export const DISK_XATTR = 'vsm.disk'
const DEFAULT_FREEZE_MS = 60_000
const MAX_DISK = 2 ** 46 // 64 TiB: thin, but past this a typo is likelier than intent
const S_IFMT = 0o170000, S_IFREG = 0o100000, S_IFDIR = 0o040000

export interface DiskPolicies {
  volume: string
  replication: null | { group: string }
  tiering: null | { policy: string }
}

export interface DiskRecord {
  created: number
  policies: DiskPolicies
}

export interface DiskInfo {
  path: string
  size: number
  allocated: number
  managed: boolean
  policies: DiskPolicies | null
  created: number | null
  mtime: number
  open: number
  /** Epoch ms at which a frozen disk thaws itself; null when not frozen. */
  frozenUntil: number | null
}

/** What the disk manager needs from its surroundings, kept explicit for tests. */
export interface DiskEnv {
  fs: FileSystem
  /** Index of a volume in the fs (adding it to the fs if needed); throws ENOENT for an unknown volume. */
  volumeIndex(name: string): Promise<number>
  defaultVolume(): string
  /** How many handles the FUSE view holds open on a path. */
  openCount(path: string): number
  gate: WriteGate
}

export function checkSize(size: unknown, what = 'size'): number {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) throw new VsmError('EINVAL', `${what} must be a positive whole number of bytes`)
  if (size % 512) throw new VsmError('EINVAL', `${what} must be a multiple of 512 bytes (got ${size})`)
  if (size > MAX_DISK) throw new VsmError('EFBIG', `${what} ${size} exceeds the 64 TiB disk limit`)
  return size
}

export class DiskManager {
  constructor(private readonly env: DiskEnv) {}

  async create(name: unknown, size: unknown, volume?: unknown): Promise<DiskInfo> {
    const path = diskPath(name)
    const bytes = checkSize(size)
    const vol = volume === undefined ? this.env.defaultVolume() : volume
    if (typeof vol !== 'string') throw new VsmError('EINVAL', 'volume must be a name')
    const { fs } = this.env
    if (this.exists(path)) throw new VsmError('EEXIST', `disk already exists: ${name}`)
    const parent = path.slice(0, path.lastIndexOf('/')) || '/'
    if (!this.exists(parent) || (fs.getattr(parent).mode & S_IFMT) !== S_IFDIR) throw new VsmError('ENOENT', `parent directory does not exist: ${parent.slice(1) || '/'}`)
    const index = await this.env.volumeIndex(vol)
    const record: DiskRecord = { created: Date.now(), policies: { volume: vol, replication: null, tiering: null } }
    await fs.create(path, 0o644, 0, 0, { volume: index })
    try {
      await fs.truncate(path, bytes)
      await fs.setxattr(path, DISK_XATTR, Buffer.from(JSON.stringify(record)))
      await fs.sync()
    } catch (err) {
      await fs.unlink(path).catch(() => undefined)
      throw err
    }
    return this.show(name)
  }

  show(name: unknown): DiskInfo {
    const path = diskPath(name)
    const st = this.stat(path)
    if ((st.mode & S_IFMT) !== S_IFREG) throw new VsmError('EISDIR', `not a disk (a directory): ${name}`)
    const raw = this.env.fs.getxattr(path, DISK_XATTR)
    const rec: DiskRecord | null = raw ? JSON.parse(raw.toString()) : null
    return {
      path: path.slice(1), size: st.size, allocated: st.blocks * 512, managed: !!rec,
      policies: rec?.policies ?? null, created: rec?.created ?? null, mtime: st.mtime,
      open: this.env.openCount(path),
      frozenUntil: this.env.gate.isFrozen(st.ino)?.until ?? null,
    }
  }

  list(): DiskInfo[] {
    const out: DiskInfo[] = []
    const walk = (dir: string) => {
      for (const entry of this.env.fs.readdir(dir)) {
        const p = dir === '/' ? `/${entry}` : `${dir}/${entry}`
        const mode = this.env.fs.getattr(p).mode & S_IFMT
        if (mode === S_IFDIR) walk(p)
        else if (mode === S_IFREG) out.push(this.show(p.slice(1)))
      }
    }
    walk('/')
    return out
  }

  async resize(name: unknown, size: unknown, shrink = false): Promise<DiskInfo> {
    const path = diskPath(name)
    const bytes = checkSize(size)
    const cur = this.show(name)
    if (bytes < cur.size && !shrink) throw new VsmError('EINVAL', `shrinking ${name} from ${cur.size} to ${bytes} bytes discards data: pass --shrink to do it`)
    await this.env.fs.truncate(path, bytes)
    await this.env.fs.sync()
    return this.show(name)
  }

  async delete(name: unknown, force = false): Promise<void> {
    const path = diskPath(name)
    const info = this.show(name)
    if (info.open && !force) throw new VsmError('EBUSY', `disk is open (${info.open} handle(s)): ${name}; pass --force to delete anyway`)
    await this.env.fs.unlink(path)
    await this.env.fs.sync()
  }

  async freeze(name: unknown, timeoutMs: unknown = DEFAULT_FREEZE_MS): Promise<DiskInfo> {
    this.show(name) // refuses a missing disk or a directory with the usual message
    const ino = this.env.fs.lookup(diskPath(name))
    await this.env.gate.freeze(ino, timeoutMs as number, () => this.env.fs.fsync(ino))
    return this.show(name)
  }

  thaw(name: unknown): DiskInfo {
    const info = this.show(name)
    if (!this.env.gate.thaw(this.env.fs.lookup(diskPath(name)))) throw new VsmError('EINVAL', `disk is not frozen: ${name}`)
    return { ...info, frozenUntil: null }
  }

  private exists(path: string): boolean {
    try { this.env.fs.getattr(path); return true } catch (e) { if ((e as VsmError).code === 'ENOENT') return false; throw e }
  }

  private stat(path: string) {
    try { return this.env.fs.getattr(path) } catch (e) {
      if ((e as VsmError).code === 'ENOENT') throw new VsmError('ENOENT', `no such disk: ${path.slice(1)}`)
      throw e
    }
  }
}
