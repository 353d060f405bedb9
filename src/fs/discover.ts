// Finding the file system among a pool's volumes: the superblock names the volumes
// the fs spans and each other member carries a label (fs uuid + slot), so the fs is
// found from the volumes alone, whatever any side file says.
import { BlockDev, VsmError } from '../block/blockdev'
import { FileSystem } from './filesystem'
import { Probe, probeVolume } from './layout'

/** The volumes a pool offers, by name. */
export interface VolumeSource {
  names(): string[]
  open(name: string): Promise<BlockDev>
}

/**
 * Mount the one fs whose superblock lies on a volume of `src`, on the volumes its
 * superblock lists. Returns null only when no volume holds any trace of an fs and
 * every volume could be read: the caller may then make one. Anything ambiguous (two
 * file systems, a member whose metadata volume is gone, a damaged superblock, a volume
 * that cannot be opened) is refused with one line rather than guessed at.
 */
export async function mountFromVolumes(src: VolumeSource): Promise<FileSystem | null> {
  const probes = new Map<string, Probe>()
  const unreadable: string[] = []
  for (const name of src.names()) {
    try {
      probes.set(name, await probeVolume(await src.open(name)))
    } catch (e) {
      unreadable.push(`${name} (${(e as Error).message})`)
    }
  }
  const supers = [...probes].filter(([, p]) => p.kind === 'fs') as [string, Extract<Probe, { kind: 'fs' }>][]
  if (supers.length > 1) {
    throw new VsmError('EEXIST', `volumes ${supers.map(([n]) => n).join(' and ')} each hold a vsm file system superblock: refusing to guess which to mount`)
  }
  if (supers.length === 1) {
    const [metaName, { sb }] = supers[0]
    const names = sb.volumes.filter((v) => !v.removed).map((v) => v.name)
    if (names[0] !== metaName) throw new VsmError('EIO', `fs superblock on volume ${metaName} names ${names[0]} as its metadata volume`)
    const missing = names.filter((n) => !probes.has(n))
    if (missing.length) throw new VsmError('ENOENT', `the file system spans volume(s) ${missing.join(', ')}, which the pool cannot open`)
    return FileSystem.mount(await Promise.all(names.map((n) => src.open(n))), { volumeNames: names })
  }
  if (unreadable.length) throw new VsmError('EIO', `cannot look for the file system on volume(s) ${unreadable.join(', ')}`)
  const member = [...probes].find(([, p]) => p.kind === 'member')
  if (member) throw new VsmError('ENOENT', `volume ${member[0]} belongs to vsm file system ${(member[1] as { uuid: string }).uuid}, whose metadata volume is missing`)
  const damaged = [...probes].find(([, p]) => p.kind === 'damaged')
  if (damaged) throw new VsmError('EIO', `volume ${damaged[0]} holds a damaged vsm file system superblock; refusing to start (nothing was changed)`)
  return null
}
