// Boots an unmodified Linux guest under QEMU (TCG: KVM does not work on these machines)
// with the given image files as its disks, runs one shell script inside it, and returns
// the serial console output and the @@KEY=value@@ markers the script printed.
//
// The kernel and initramfs come from scripts/guest-assets (cached). The script reaches the
// guest through QEMU's fw_cfg (opt/vsm/script), so each boot gets its own script without
// rebuilding or copying the initramfs. Inside the guest it runs as `sh -e` in /root with
// busybox, e2fsprogs (mkfs.ext4, e2fsck, tune2fs, debugfs) and stdin at /dev/null;
// disks appear as /dev/vda, /dev/vdb, ... (virtio) and /dev/sda, /dev/sdb, ... (scsi), each
// in the order given. The init prints VSM_BOOTED (uptime s), VSM_DISKS and VSM_EXIT markers.
import { spawn, spawnSync, execFile, type ChildProcess } from 'child_process'
import { promises as fsp, constants as fsc } from 'fs'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

export type CacheMode = 'none' | 'writeback' | 'directsync' | 'writethrough' | 'unsafe'

export interface GuestDisk {
  path: string
  iface: 'virtio' | 'scsi'
  readonly?: boolean
  format?: 'raw'
  /** Default 'auto' (see autoCache): writeback on FUSE, else none where O_DIRECT works. */
  cache?: CacheMode | 'auto'
  /**
   * Offer the guest WRITE ZEROES and DISCARD (virtio only; default true). A FUSE file
   * without fallocate (fuse-native has no such op) makes QEMU 7.2 fail some guest
   * writes under cache=none after its fallocate probe is refused; turning these off
   * makes the guest write zeros itself.
   */
  zeroing?: boolean
  /** discard=unmap on the drive: the guest's discards reach the file as punched holes (default: QEMU ignores them). */
  unmap?: boolean
}

export interface BootOptions {
  disks: GuestDisk[]
  /** sh script run inside the guest under `set -e`; print `@@KEY=value@@` to report. */
  script: string
  timeoutMs?: number
  memMB?: number
  /** Appended to the kernel command line. */
  append?: string
  /** Extra QEMU arguments, e.g. for a QMP socket. */
  qemuArgs?: string[]
  /** Called with console output as it arrives (e.g. process.stderr.write for debugging). */
  onOutput?: (text: string) => void
}

export interface BootResult {
  /** QEMU exited by itself, without timeout, and the guest script exited 0. */
  ok: boolean
  /** Serial console text, ANSI escapes and CRs removed. */
  output: string
  markers: Record<string, string>
  timedOut: boolean
  /** Exit status of the guest script, or null if it never reported one. */
  scriptExit: number | null
  qemuExit: number | null
  durationMs: number
  /** The cache= mode each disk was attached with. */
  cacheModes: CacheMode[]
}

export interface GuestAssets { kernel: string; initrd: string }

function repoRoot(): string {
  // Works from test/helpers (tsx) and from dist/test/helpers (compiled).
  let d = __dirname
  for (;;) {
    if (fs.existsSync(path.join(d, 'scripts', 'guest-assets'))) return d
    const up = path.dirname(d)
    if (up === d) throw new Error(`guest: scripts/guest-assets not found above ${__dirname}`)
    d = up
  }
}

let assetsPromise: Promise<GuestAssets> | undefined
/** Builds or finds the cached kernel and initramfs; once per process. */
export function guestAssets(): Promise<GuestAssets> {
  assetsPromise ??= new Promise((resolve, reject) => {
    const script = path.join(repoRoot(), 'scripts', 'guest-assets')
    execFile('bash', [script], { maxBuffer: 16 << 20, timeout: 15 * 60_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`scripts/guest-assets failed: ${err.message}\n${stderr}`))
      const kernel = /^KERNEL=(.+)$/m.exec(stdout)?.[1]
      const initrd = /^INITRD=(.+)$/m.exec(stdout)?.[1]
      if (!kernel || !initrd) return reject(new Error(`scripts/guest-assets printed no KERNEL/INITRD:\n${stdout}\n${stderr}`))
      resolve({ kernel, initrd })
    })
  })
  // A failed build should be retried by the next caller, not cached forever.
  assetsPromise.catch(() => { assetsPromise = undefined })
  return assetsPromise
}

/**
 * cache=none opens the image with O_DIRECT. Older FUSE kernels and tmpfs refuse that with
 * EINVAL, and QEMU would then fail to start, so probe the file the way QEMU will open it.
 */
export async function supportsODirect(file: string, readonly = false): Promise<boolean> {
  try {
    const fh = await fsp.open(file, (readonly ? fsc.O_RDONLY : fsc.O_RDWR) | fsc.O_DIRECT)
    await fh.close()
    return true
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EINVAL') return false
    throw e
  }
}

const FUSE_SUPER_MAGIC = 0x65735546

/** True when the file lives on a FUSE mount (the vsm view, a qemu-storage-daemon export). */
export async function onFuse(file: string): Promise<boolean> {
  return (await fsp.statfs(file)).type === FUSE_SUPER_MAGIC
}

/**
 * The cache mode 'auto' picks. On FUSE, writeback: measured with QEMU 7.2 on a
 * qemu-storage-daemon FUSE export, cache=none (O_DIRECT) lost ext4 file data written back by
 * the guest, as vsm's view did while it took O_DIRECT I/O of any alignment (QEMU then pads
 * guest writes to 4 KiB and failed some with EIO; see the README). vsm's guest tests run
 * cache=none explicitly. Writeback still sends every guest flush down as fdatasync.
 * Elsewhere, none where O_DIRECT is accepted, else writeback.
 */
export async function autoCache(file: string, readonly = false): Promise<CacheMode> {
  if (await onFuse(file)) return 'writeback'
  return (await supportsODirect(file, readonly)) ? 'none' : 'writeback'
}

const CACHE_MODES = ['none', 'writeback', 'directsync', 'writethrough', 'unsafe', 'auto']
function envCache(): CacheMode | 'auto' | undefined {
  const v = process.env.VSM_GUEST_CACHE
  if (!v) return undefined
  if (!CACHE_MODES.includes(v)) throw new Error(`VSM_GUEST_CACHE=${v}: expected one of ${CACHE_MODES.join(', ')}`)
  return v as CacheMode | 'auto'
}

/** QEMU option values escape a comma by doubling it. */
const qv = (s: string) => s.replace(/,/g, ',,')

export function parseMarkers(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const m of text.matchAll(/@@([A-Za-z0-9_.:-]+)=([^@\n]*)@@/g)) out[m[1]] = m[2]
  return out
}

const cleanConsole = (s: string) => s.replace(/\x1b(\[[0-9;?]*[A-Za-z]|[c()][0-9A-Za-z]?)/g, '').replace(/\r/g, '')

// Any QEMU still running when this process exits (a test crashed or was killed by the
// runner's timeout with SIGTERM) would hold image files open and keep writing to them.
const live = new Set<ChildProcess>()
let exitHookInstalled = false
function track(child: ChildProcess) {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.on('exit', () => { for (const c of live) try { c.kill('SIGKILL') } catch { /* gone */ } })
  }
  live.add(child)
  child.once('exit', () => live.delete(child))
}

let setprivOk: boolean | undefined
function hasSetpriv(): boolean {
  if (setprivOk === undefined) {
    const r = spawnSync('setpriv', ['--help'], { encoding: 'utf8' })
    setprivOk = r.status === 0 && r.stdout.includes('--pdeathsig')
  }
  return setprivOk
}

export async function bootGuest(opts: BootOptions): Promise<BootResult> {
  const { kernel, initrd } = await guestAssets()
  // Generous: TCG on 2 shared cores slows several-fold when other tests load the machine.
  const timeoutMs = opts.timeoutMs ?? 300_000
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'vsm-guest-'))
  let child: ChildProcess | undefined
  let timer: NodeJS.Timeout | undefined
  const t0 = Date.now()
  try {
    const scriptFile = path.join(tmp, 'script.sh')
    await fsp.writeFile(scriptFile, opts.script)

    const cacheModes: CacheMode[] = []
    const args = [
      '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', String(opts.memMB ?? 256),
      '-nographic', '-nodefaults', '-no-user-config', '-serial', 'stdio', '-monitor', 'none',
      '-no-reboot',
      '-kernel', kernel, '-initrd', initrd,
      // panic=-1: a guest panic reboots at once, which -no-reboot turns into a QEMU exit.
      // scsi_mod.scan=sync: every SCSI disk exists before init runs the script.
      '-append', `console=ttyS0 quiet panic=-1 scsi_mod.scan=sync vsm.disks=${opts.disks.length} ${opts.append ?? ''}`.trim(),
      '-fw_cfg', `name=opt/vsm/script,file=${qv(scriptFile)}`,
    ]
    let scsiId = 0
    if (opts.disks.some((d) => d.iface === 'scsi')) args.push('-device', 'virtio-scsi-pci,id=scsi0')
    for (const [i, d] of opts.disks.entries()) {
      if ((d.format ?? 'raw') !== 'raw') throw new Error(`guest: disk ${d.path}: only raw images are supported`)
      // VSM_GUEST_CACHE forces one mode on every disk, to rerun a suite under another.
      let cache = d.cache ?? envCache() ?? 'auto'
      if (cache === 'auto') cache = await autoCache(d.path, d.readonly)
      cacheModes.push(cache)
      // aio=threads: works with and without O_DIRECT, on any file system, FUSE included.
      let drive = `file=${qv(d.path)},format=raw,if=none,id=d${i},cache=${cache},aio=threads`
      if (d.readonly) drive += ',readonly=on'
      if (d.unmap) drive += ',discard=unmap'
      args.push('-drive', drive)
      if (d.iface === 'virtio') args.push('-device', `virtio-blk-pci,drive=d${i},serial=vsm${i}${d.zeroing === false ? ',write-zeroes=off,discard=off' : ''}`)
      // One target per disk: the synchronous scan names them sda, sdb, ... in target order.
      else args.push('-device', `scsi-hd,drive=d${i},bus=scsi0.0,channel=0,scsi-id=${scsiId++},lun=0,serial=vsm${i}`)
    }
    args.push(...(opts.qemuArgs ?? []))

    let raw = ''
    let timedOut = false
    // The test runner kills a hung test file with SIGKILL, which runs no exit hook; the
    // parent-death signal still takes QEMU down with it instead of leaving it on the images.
    const [cmd, cmdArgs] = hasSetpriv()
      ? ['setpriv', ['--pdeathsig', 'KILL', '--', 'qemu-system-x86_64', ...args]]
      : ['qemu-system-x86_64', args]
    const proc = spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = proc
    track(proc)
    const onData = (b: Buffer) => { const s = b.toString('utf8'); raw += s; opts.onOutput?.(s) }
    proc.stdout!.on('data', onData)
    proc.stderr!.on('data', onData)
    const qemuExit = await new Promise<number | null>((resolve, reject) => {
      timer = setTimeout(() => { timedOut = true; proc.kill('SIGKILL') }, timeoutMs)
      proc.once('error', reject)
      proc.once('close', (code) => resolve(code))
    })
    const output = cleanConsole(raw)
    const markers = parseMarkers(output)
    const scriptExit = markers.VSM_EXIT === undefined ? null : Number(markers.VSM_EXIT)
    return {
      ok: !timedOut && qemuExit === 0 && scriptExit === 0,
      output: timedOut ? output + `\n[bootGuest: killed after ${timeoutMs} ms]\n` : output,
      markers, timedOut, scriptExit, qemuExit, durationMs: Date.now() - t0, cacheModes,
    }
  } finally {
    if (timer) clearTimeout(timer)
    // pid is undefined when spawn itself failed: there is nothing to wait for.
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      const c = child
      await new Promise<void>((resolve) => { c.once('close', () => resolve()); c.kill('SIGKILL') })
    }
    await fsp.rm(tmp, { recursive: true, force: true })
  }
}
