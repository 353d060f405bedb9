// The FUSE view: mounts the fs so every regular file is a raw disk image any
// program can open. The operations live in one binding-neutral table (fuse-ops.ts);
// this file picks the binding that serves them, mounts and unmounts, and answers
// which disks are open. fsync and flush of a written handle reach stable storage
// through every layer before they answer; <mount>/.snapshots/<DISK>/<NAME> shows
// every snapshot as a read-only image.
import { mkdirSync } from 'fs'
import type { Logger } from 'pino'
import type { FileSystem } from '../fs'
import { fuseNativeBinding } from './fuse-fusenative'
import { loadAddon, lowLevelBinding } from './fuse-lowlevel'
import { Handles, viewOps, type FuseOps, type Invoke } from './fuse-ops'
import { NULL_SINK, type EventSink } from '../control/events'
import type { WriteGate } from './gate'
import type { IoMeters } from '../metrics/io'
import type { FuseBindingName } from '../daemon/options'
export { FUSE_BINDINGS, type FuseBindingName } from '../daemon/options'

export type { Invoke } from './fuse-ops'


/**
 * How the view is mounted, whatever the binding. allowOther lets other users reach it,
 * always together with default_permissions (the kernel checks each file's owner and
 * mode): allow_other alone would let anyone read and delete a root 0600 disk.
 */
export interface MountOptions { allowOther: boolean; binding: FuseBindingName }

export type Change = 'data' | 'gone'

/** A FUSE library serving the operation table at a mount point. */
export interface FuseBinding {
  readonly name: string
  /** WRITEs answered early (WriteAck) so far, where the binding can. */
  earlyWrites?(): number
  /**
   * The file at path changed outside the view: its contents ('data': a revert, a resize),
   * or its name went ('gone': a delete). The kernel's caches of it are dropped before
   * this resolves, where the binding can.
   */
  changed?(path: string, how: Change): Promise<void>
  mount(): Promise<void>
  unmount(): Promise<void>
}

export class FuseView {
  private binding: FuseBinding | undefined
  /** A lost connection's recovery (lost()), which unmount waits for; and whether unmount has begun. */
  private recovering: Promise<void> = Promise.resolve()
  private stopping = false
  private readonly handles = new Handles()

  constructor(
    private readonly fs: FileSystem,
    private readonly mountpoint: string,
    private readonly gate: WriteGate,
    private readonly invoke: Invoke,
    private readonly log: Logger,
    /** Per disk I/O counters (metrics on), or null. */
    private readonly meters: IoMeters | null,
    private readonly opts: MountOptions = { allowOther: false, binding: 'native' },
    private readonly events: EventSink = NULL_SINK,
  ) {}

  /** The binding serving the mount (native falls back to fuse-native when its addon cannot load). */
  get bindingName(): FuseBindingName | null { return (this.binding?.name as FuseBindingName) ?? null }
  get earlyWrites(): number | null { return this.binding?.earlyWrites?.() ?? null }

  openCount(path: string): number { return this.handles.openCount(path) }

  /** A disk changed through the control socket: what the kernel cached of it goes (see FuseBinding.changed). */
  async changed(path: string, how: Change): Promise<void> { await this.binding?.changed?.(path, how) }

  writerCount(path: string): number { return this.handles.writerCount(path) }

  async mount(): Promise<void> {
    this.stopping = false
    const ops = viewOps({ fs: this.fs, gate: this.gate, invoke: this.invoke, handles: this.handles, meters: this.meters })
    mkdirSync(this.mountpoint, { recursive: true })
    const lost = () => { this.recovering = this.lost(b, ops) }
    const b: FuseBinding = this.opts.binding === 'native' && this.addonLoads()
      ? lowLevelBinding(this.mountpoint, ops, this.log, this.opts, lost)
      : fuseNativeBinding(this.mountpoint, ops, this.log, this.opts, lost)
    await b.mount()
    this.binding = b
  }

  /**
   * The kernel ended b's connection with no unmount of ours: someone aborted it (what an
   * administrator does to a FUSE mount that hangs) or unmounted it from outside (`vsm
   * down` is the way to stop the view). Its users got ENOTCONN or lost it; the files
   * they had open are released here, as no RELEASE will come for them (left open, they
   * would keep `vsm down` waiting forever), and the view is mounted afresh at the same
   * place, as a path to a device comes back after a reset.
   */
  private async lost(b: FuseBinding, ops: FuseOps): Promise<void> {
    if (this.binding !== b) return
    this.binding = undefined
    const open = this.handles.all()
    this.events.publish('fuse.connection-lost', { mount: this.mountpoint, released: open.length, reason: 'the kernel ended the FUSE connection without vsm unmounting it (aborted, or unmounted from outside)' }, 'warn')
    for (const fh of open) await Promise.resolve(ops.release(fh)).catch((err) => this.log.error({ err, fh }, 'releasing a file of the lost connection'))
    if (this.stopping) return // unmount() came meanwhile: the view is being stopped, not restored
    try {
      await this.mount()
      this.events.publish('fuse.remounted', { mount: this.mountpoint, binding: this.bindingName })
    } catch (err) {
      this.events.publish('fuse.remount-failed', { mount: this.mountpoint, reason: (err as Error).message }, 'error')
    }
  }

  private addonLoads(): boolean {
    try {
      loadAddon()
      return true
    } catch (err) {
      this.log.warn({ err }, 'the native FUSE addon (native/build/Release/vsm_fuse.node) cannot load: serving the view with fuse-native; run scripts/setup to build it')
      return false
    }
  }

  async unmount(): Promise<void> {
    this.stopping = true
    await this.recovering
    const b = this.binding
    this.binding = undefined
    await b?.unmount()
  }
}
