// An ext4 file system on a sparse loop file, the reference the fs-scale section
// (bench/fs-scale.ts) measures vsm's fs against: mkfs, losetup and mount (as root), the
// bytes written to the loop device (/sys/block/loopN/stat), a timed mount, and a
// teardown that leaves no mount and no loop device behind, whatever state it is in.
import { execFileSync } from 'child_process'
import * as fs from 'fs'

const run = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()

export class Ext4Loop {
  private mounted = false
  private constructor(readonly dev: string, readonly mnt: string) {}

  /** A new ext4 of `bytes` in a sparse `file`, attached and mounted on `mnt` (created). */
  static create(file: string, bytes: number, mnt: string): Ext4Loop {
    fs.writeFileSync(file, '')
    fs.truncateSync(file, bytes)
    // inode tables and journal zeroed now: otherwise ext4lazyinit writes them in the
    // background after mount, into the bytes this bench counts
    run('mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', file)
    fs.mkdirSync(mnt, { recursive: true })
    const loop = new Ext4Loop(run('losetup', '--find', '--show', file), mnt)
    try {
      loop.mount()
    } catch (e) {
      loop.destroy()
      throw e
    }
    return loop
  }

  /** Bytes written to the loop device since it was attached (sectors written, field 7 of its stat). */
  bytesWritten(): number {
    const stat = fs.readFileSync(`/sys/block/${this.dev.replace('/dev/', '')}/stat`, 'utf8').trim().split(/\s+/)
    return Number(stat[6]) * 512
  }

  /** Mounts and returns the time mount(8) took, its own start included. */
  mount(): number {
    const t0 = process.hrtime.bigint()
    run('mount', '-t', 'ext4', this.dev, this.mnt)
    this.mounted = true
    return Number(process.hrtime.bigint() - t0) / 1e6
  }

  /** Unmounts: everything ext4 held back (journal checkpoints, inode tables) reaches the device. */
  umount(): void {
    run('umount', this.mnt)
    this.mounted = false
  }

  /** Unmounts (lazily if busy) and detaches the loop device; for `finally`, so it never throws. */
  destroy(): void {
    if (this.mounted) {
      try { this.umount() } catch { try { run('umount', '-l', this.mnt) } catch { /* not mounted after all */ } }
    }
    try { run('losetup', '-d', this.dev) } catch (e) { console.error(`bench: losetup -d ${this.dev}: ${(e as Error).message}`) }
  }
}
