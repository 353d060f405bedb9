// Intents: a job that must survive kill -9 records what it is doing as a JSON xattr
// (journaled with the fs metadata, hidden from the FUSE view by the 'vsm.' prefix)
// before it starts and removes it when it ends, so the next mount finds what to resume.
// fs move, remove-volume (move.ts) and the HSM's migrate/recall keep their state this way.
import type { FileSystem } from './filesystem'
import { S_IFDIR, S_IFMT, S_IFREG } from './inode'

/** The xattr `name` of `path` as JSON; `fallback` when absent or unreadable. */
export function readJsonXattr<T>(fs: FileSystem, path: string, name: string, fallback: T): T {
  const raw = fs.getxattr(path, name)
  if (!raw) return fallback
  try { return JSON.parse(raw.toString()) as T } catch { return fallback }
}

/** Records `value` (null: removes the record) and makes it durable before returning. */
export async function writeJsonXattr(fs: FileSystem, path: string, name: string, value: object | null): Promise<void> {
  if (value) await fs.setxattr(path, name, Buffer.from(JSON.stringify(value)))
  else if (fs.getxattr(path, name)) await fs.removexattr(path, name)
  await fs.sync()
}

/** Every regular file under `root` (or root itself), in name order. */
export function regularFiles(fs: FileSystem, root: string): string[] {
  const out: string[] = []
  const walk = (p: string) => {
    const t = fs.getattr(p).mode & S_IFMT
    if (t === S_IFREG) out.push(p)
    else if (t === S_IFDIR) for (const n of fs.readdir(p).sort()) walk(p === '/' ? `/${n}` : `${p}/${n}`)
  }
  walk(root)
  return out
}
