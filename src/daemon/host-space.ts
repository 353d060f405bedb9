// Room for thin backing files, for `vsm status`. A device file is sparse: it takes host
// space as it is written, up to its size. When the file system holding it fills first,
// its writes fail with ENOSPC, a mirror copy goes out, and a volume whose copies share
// that file system fails writes on every copy. Like LVM's warning that a thin pool is
// overcommitted, status says so before it happens: per host file system, how much the
// device files on it may still grow against what it has free.
import { promises as fsp } from 'fs'
import { dirname } from 'path'
import type { DeviceInfo } from '../volume/core'

export interface HostSpace {
  /** A directory on that file system (the first device's). */
  dir: string
  devices: string[]
  /** Bytes the device files on it may still take (size less what they hold). */
  growth: number
  /** Bytes it has free (bfree: the daemon writes as root). */
  free: number
}

/** How long a look at one device file may take: a hung network mount must not hold status up. */
const LOOK_MS = 1000

const within = <T>(p: Promise<T>, ms: number): Promise<T | null> =>
  Promise.race([p.catch(() => null), new Promise<null>((r) => setTimeout(() => r(null), ms).unref())])

export async function hostSpace(devices: DeviceInfo[]): Promise<HostSpace[]> {
  const byFs = new Map<number, HostSpace>()
  await Promise.all(devices.filter((d) => !d.blockDevice && d.state !== 'missing').map(async (d) => {
    const look = await within(Promise.all([fsp.stat(d.path), fsp.statfs(dirname(d.path))]), LOOK_MS)
    if (!look) return
    const [st, fs] = look
    const h = byFs.get(st.dev) ?? { dir: dirname(d.path), devices: [], growth: 0, free: fs.bfree * fs.bsize }
    h.devices.push(d.name)
    h.growth += Math.max(0, st.size - st.blocks * 512)
    byFs.set(st.dev, h)
  }))
  return [...byFs.values()]
}
