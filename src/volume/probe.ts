// What a path about to become a pool device already holds: known on-disk signatures
// (file systems, volume managers, partition tables, another vsm pool) and, failing
// those, any non-zero byte at either end. `device add` refuses such a path unless
// forced; the check only reads.
import type { BlockDev } from '../block/blockdev'
import { MiB } from './label'

interface Signature { what: string; at: (size: number) => number[]; magic: Buffer }

const le32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n >>> 0); return b }
const fixed = (...offs: number[]) => () => offs

// offsets as blkid's probes (libblkid/src/superblocks) place them
const SIGNATURES: Signature[] = [
  { what: 'an ext2/3/4 file system', at: fixed(1080), magic: Buffer.from([0x53, 0xef]) },
  { what: 'an xfs file system', at: fixed(0), magic: Buffer.from('XFSB') },
  { what: 'a btrfs file system', at: fixed(65600), magic: Buffer.from('_BHRfS_M') },
  { what: 'an LVM2 physical volume', at: fixed(0, 512, 1024, 1536), magic: Buffer.from('LABELONE') },
  // md 1.1 at 0, 1.2 at 4 KiB, 1.0 8 KiB from the end (4 KiB aligned), 0.90 64 KiB from the end (64 KiB aligned)
  {
    what: 'an MD RAID member', magic: le32(0xa92b4efc),
    at: (size) => [0, 4096, (Math.floor(size / 4096) * 4096) - 8192, (Math.floor(size / 65536) * 65536) - 65536].filter((o) => o >= 0),
  },
  { what: 'a GPT partition table', at: fixed(512), magic: Buffer.from('EFI PART') },
  { what: 'an MBR partition table or boot sector', at: fixed(510), magic: Buffer.from([0x55, 0xaa]) },
  { what: 'a vsm pool label', at: fixed(0, 256 * 1024), magic: Buffer.from('VSMLABL1') },
  { what: 'swap space', at: fixed(4086, 8182, 16374, 65526), magic: Buffer.from('SWAPSPACE2') },
]

/** What dev holds, in words ("an ext2/3/4 file system"); null if it looks unused. */
export async function probeContents(dev: BlockDev): Promise<string | null> {
  const size = dev.size
  const edge = Math.min(MiB, size)
  const head = Buffer.alloc(edge)
  const tail = Buffer.alloc(edge)
  await dev.read(head, 0)
  await dev.read(tail, size - edge)
  const at = (off: number, len: number): Buffer | null => {
    if (off + len <= edge) return head.subarray(off, off + len)
    if (off >= size - edge && off + len <= size) return tail.subarray(off - (size - edge), off - (size - edge) + len)
    return null
  }
  for (const s of SIGNATURES) {
    for (const off of s.at(size)) {
      let b = at(off, s.magic.length)
      if (!b && off + s.magic.length <= size) {
        b = Buffer.alloc(s.magic.length)
        await dev.read(b, off)
      }
      if (b?.equals(s.magic)) return s.what
    }
  }
  const nonZero = (b: Buffer) => b.some((x) => x !== 0)
  if (nonZero(head)) return 'data (non-zero bytes in its first MiB)'
  if (nonZero(tail)) return 'data (non-zero bytes in its last MiB)'
  return null
}
