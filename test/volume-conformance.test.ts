// The BlockDev conformance suite over every volume-layer implementation: a device
// file, the fault wrapper with no faults, slices, concat, stripe, mirror, raid10 and
// raid5 (healthy and with one member failing everything), and the same layouts
// assembled by a Pool, the checksummed ones also with the checksum tables' page cache
// held to 3 pages (every table page is evicted and read back many times).
import * as path from 'path'
import { conformance } from './helpers/conformance'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { openDevice, Device } from '../src/volume/device'
import { SliceDev } from '../src/volume/slice'
import { ConcatDev } from '../src/volume/concat'
import { StripeDev } from '../src/volume/stripe'
import { MirrorDev } from '../src/volume/mirror'
import { Raid5Dev } from '../src/volume/raid5'
import { Pool } from '../src/volume/pool'
import type { VolumeSpec } from '../src/volume/config'
import { FaultDev } from '../src/block/fault'
import type { BlockDev } from '../src/block/blockdev'
import { tableCache, PAGE_BYTES } from '../src/volume/pagecache'

const SIZE = 40 * MiB

conformance('volume Device (sparse file)', async () => {
  const t = await tmpDir()
  const file = path.join(t.dir, 'dev.img')
  let dev: Device = await openDevice(file, { create: SIZE })
  return {
    dev,
    reopen: async () => { await dev.close(); dev = await openDevice(file); return dev },
    cleanup: async () => { await dev.close(); await t.cleanup() },
  }
}).run()

conformance('FaultDev over a Device, no faults', async () => {
  const t = await tmpDir()
  const dev = await openDevice(path.join(t.dir, 'dev.img'), { create: SIZE })
  return { dev: new FaultDev(dev), cleanup: async () => { await dev.close(); await t.cleanup() } }
}).run()

/** n devices of size each, and a layout built over slices of them (after a 1 MiB gap, like a data area). */
function layoutSubject(n: number, each: number, build: (slices: BlockDev[]) => BlockDev) {
  return async () => {
    const t = await tmpDir()
    const files = Array.from({ length: n }, (_, i) => path.join(t.dir, `d${i}.img`))
    let devs: Device[] = []
    const open = async (create: boolean) => {
      devs = await Promise.all(files.map((f) => openDevice(f, create ? { create: each + 2 * MiB } : undefined)))
      return build(devs.map((d) => new SliceDev(d, MiB, each)))
    }
    let dev = await open(true)
    return {
      dev,
      reopen: async () => {
        await dev.close()
        await Promise.all(devs.map((d) => d.close()))
        dev = await open(false)
        return dev
      },
      cleanup: async () => {
        await dev.close().catch(() => {})
        await Promise.all(devs.map((d) => d.close()))
        await t.cleanup()
      },
    }
  }
}

conformance('SliceDev', layoutSubject(1, SIZE, (s) => s[0])).run()
conformance('concat of 3 unequal-offset members', layoutSubject(3, 13 * MiB + 4096, (s) => new ConcatDev(s))).run()
conformance('stripe of 3, 64 KiB unit', layoutSubject(3, 12 * MiB, (s) => new StripeDev(s))).run()
conformance('stripe of 2, 4 KiB unit', layoutSubject(2, 16 * MiB, (s) => new StripeDev(s, 4096))).run()
conformance('mirror of 2', layoutSubject(2, SIZE, (s) => new MirrorDev(s))).run()
conformance('mirror of 3', layoutSubject(3, 20 * MiB, (s) => new MirrorDev(s))).run()
conformance('mirror of 2, copy 0 failing everything', layoutSubject(2, SIZE,
  (s) => new MirrorDev([new FaultDev(s[0], { rules: [{ op: 'any' }] }), s[1]]))).run()
conformance('mirror of 2, copy 1 failing everything', layoutSubject(2, SIZE,
  (s) => new MirrorDev([s[0], new FaultDev(s[1], { rules: [{ op: 'any' }] })]))).run()

const dead = (m: BlockDev) => new FaultDev(m, { rules: [{ op: 'any' }] })
const raid10 = (s: BlockDev[]) => new StripeDev([new MirrorDev([s[0], s[1]]), new MirrorDev([s[2], s[3]])], 32768)
conformance('raid10 of 2x2', layoutSubject(4, 12 * MiB, raid10)).run()
conformance('raid10 of 2x2, one copy of each group failing', layoutSubject(4, 12 * MiB,
  (s) => raid10([dead(s[0]), s[1], s[2], dead(s[3])]))).run()
const R5 = { stripeUnit: 65536, journal: 4 * MiB, tag: '00112233-4455-6677-8899-aabbccddeeff' }
const raid5 = (s: BlockDev[]) => new Raid5Dev(s, R5)
conformance('raid5 of 3', layoutSubject(3, 16 * MiB, raid5)).run()
conformance('raid5 of 4, 4 KiB unit', layoutSubject(4, 12 * MiB, (s) => new Raid5Dev(s, { ...R5, stripeUnit: 4096 }))).run()
for (const k of [0, 1, 2]) {
  conformance(`raid5 of 3, member ${k} failing everything`, layoutSubject(3, 16 * MiB,
    (s) => raid5(s.map((m, i) => (i === k ? dead(m) : m))))).run()
}
conformance('raid5 of 3, member 1 absent', layoutSubject(3, 16 * MiB, (s) => raid5([s[0], null as never, s[2]]))).run()

/** A volume of each layout made by a Pool; reopen = pool close + Pool.open. */
function poolSubject(spec: Omit<VolumeSpec, 'devices'> & { devices: number }, failDevice?: string) {
  return async () => {
    const t = await tmpDir()
    const home = path.join(t.dir, 'home')
    let pool = await Pool.create(home)
    const names: string[] = []
    for (let i = 0; i < spec.devices; i++) {
      await pool.addDevice(`d${i}`, path.join(t.dir, `d${i}.img`), 64 * MiB)
      names.push(`d${i}`)
    }
    await pool.createVolume('v', { ...spec, devices: names })
    // degraded: reassemble with one device refusing every I/O, as if it had died
    const opts = failDevice ? { wrapDevice: (n: string, d: BlockDev) => (n === failDevice ? dead(d) : d) } : {}
    if (failDevice) { await pool.close(); pool = await Pool.open(home, opts) }
    let dev = await pool.openVolume('v')
    return {
      dev,
      reopen: async () => {
        await pool.close()
        pool = await Pool.open(home, opts)
        dev = await pool.openVolume('v')
        return dev
      },
      cleanup: async () => { await pool.close().catch(() => {}); await t.cleanup() },
    }
  }
}

conformance('pool concat volume', poolSubject({ layout: 'concat', devices: 2, size: 90 * MiB })).run()
conformance('pool stripe volume', poolSubject({ layout: 'stripe', devices: 3, size: 40 * MiB, stripeUnit: 128 * 1024 })).run()
conformance('pool mirror volume', poolSubject({ layout: 'mirror', devices: 2, size: 40 * MiB })).run()
conformance('pool 3-copy mirror volume', poolSubject({ layout: 'mirror', devices: 3, size: 20 * MiB, copies: 3 })).run()
conformance('pool raid10 volume', poolSubject({ layout: 'raid10', devices: 4, size: 40 * MiB })).run()
conformance('pool raid5 volume', poolSubject({ layout: 'raid5', devices: 3, size: 40 * MiB })).run()
conformance('pool raid10 volume, degraded', poolSubject({ layout: 'raid10', devices: 4, size: 40 * MiB }, 'd2')).run()
conformance('pool raid5 volume, degraded', poolSubject({ layout: 'raid5', devices: 3, size: 40 * MiB }, 'd1')).run()
conformance('pool 3-copy mirror volume, degraded', poolSubject({ layout: 'mirror', devices: 3, size: 20 * MiB }, 'd0')).run()

/** A subject run with the process's table cache held to 3 pages. */
function underPressure(make: () => Promise<{ dev: BlockDev; reopen?: () => Promise<BlockDev>; cleanup: () => Promise<void> }>) {
  return async () => {
    const was = tableCache.capacityBytes
    tableCache.capacityBytes = 3 * PAGE_BYTES
    try {
      const s = await make()
      return { ...s, cleanup: async () => { try { await s.cleanup() } finally { tableCache.capacityBytes = was } } }
    } catch (e) {
      tableCache.capacityBytes = was
      throw e
    }
  }
}

conformance('pool mirror volume, table cache of 3 pages', underPressure(poolSubject({ layout: 'mirror', devices: 2, size: 40 * MiB }))).run()
conformance('pool raid10 volume, table cache of 3 pages', underPressure(poolSubject({ layout: 'raid10', devices: 4, size: 40 * MiB }))).run()
conformance('pool raid5 volume, table cache of 3 pages', underPressure(poolSubject({ layout: 'raid5', devices: 3, size: 40 * MiB }))).run()
conformance('pool 3-copy mirror volume, degraded, table cache of 3 pages',
  underPressure(poolSubject({ layout: 'mirror', devices: 3, size: 20 * MiB }, 'd0'))).run()
