// What `vsm status` tells an operator to do: each degraded or failed volume and each
// missing or failed device comes with its reason and the command that fixes it.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { attention } from '../src/daemon/attention'
import type { JobInfo } from '../src/control/jobs'
import type { DeviceInfo, VolumeInfo } from '../src/volume/pool'

const dev = (name: string, state: DeviceInfo['state'], reason?: string): DeviceInfo =>
  ({ name, id: `id-${name}`, path: `/srv/${name}.img`, size: 1 << 30, free: 0, used: 1 << 30, state, blockDevice: false, reason })
const vol = (state: VolumeInfo['state'], members: Array<[string, VolumeInfo['members'][number]['state']]>, extra: Partial<VolumeInfo> = {}): VolumeInfo => ({
  name: 'vol0', layout: 'mirror', size: 1 << 30, devices: members.map(([d]) => d), state, open: true,
  members: members.map(([d, s]) => ({ device: d, deviceId: `id-${d}`, offset: 0, length: 1 << 30, state: s })), ...extra,
})
const job = (id: number, kind: string, state: JobInfo['state']): JobInfo =>
  ({ id, kind, state, progress: { done: 1, total: 2 }, pausable: false, createdAt: 0, cancelRequested: false })

test('a healthy pool needs nothing', () => {
  assert.equal(attention([dev('d0', 'online'), dev('d1', 'online')], [vol('healthy', [['d0', 'ok'], ['d1', 'ok']])], []), [])
})

test('a mirror degraded by an offline device: online it or replace it', () => {
  const a = attention([dev('d0', 'online'), dev('d1', 'offline')], [vol('degraded', [['d0', 'ok'], ['d1', 'failed']])], [])
  assert.is(a.length, 1)
  assert.is(a[0].object, 'volume vol0')
  assert.match(a[0].problem, /degraded: d1 failed/)
  assert.is(a[0].fix, 'vsm device online d1, or vsm volume replace vol0 d1 NEWDEV')
})

test('a rebuild under way: wait for its job, not a command to type', () => {
  const rebuild = { target: 'd1', done: 1, total: 2 } as unknown as VolumeInfo['rebuild']
  const a = attention([dev('d0', 'online'), dev('d1', 'online')], [vol('degraded', [['d0', 'ok'], ['d1', 'stale']], { rebuild })],
    [job(3, 'volume.rebuild', 'concluded'), job(7, 'volume.rebuild', 'running')])
  assert.is(a[0].fix, 'a rebuild is running: vsm job wait 7')
})

test('a failed device: replace it on every volume it holds, after adding a new one', () => {
  const a = attention([dev('d0', 'online'), dev('d1', 'failed')], [vol('degraded', [['d0', 'ok'], ['d1', 'failed']])], [])
  assert.equal(a.map((x) => x.object), ['device d1', 'volume vol0'])
  assert.match(a[0].fix!, /vsm volume replace VOLUME d1 NEWDEV/)
  assert.match(a[1].fix!, /^vsm volume replace vol0 d1 NEWDEV/)
})

test('a missing device names where it was and why; a failed volume says it cannot serve', () => {
  const a = attention([dev('d0', 'missing', 'cannot open: ENOENT'), dev('d1', 'online')],
    [vol('failed', [['d0', 'missing'], ['d1', 'ok']], { layout: 'concat' })], [])
  assert.match(a[0].problem, /missing at \/srv\/d0\.img: cannot open: ENOENT/)
  assert.match(a[1].problem, /^failed: d0 missing/)
  assert.match(a[1].fix!, /too many members lost for concat/)
})

test('a member failed because its backing file system filled up: free space there and online the device, not a new device', () => {
  const v = vol('degraded', [['d0', 'ok'], ['d1', 'failed']])
  v.members[1].reason = 'I/O error: write on /srv/d1.img at 3145728: ENOSPC'
  const a = attention([dev('d0', 'online'), dev('d1', 'failed')], [v], [])
  assert.equal(a.map((x) => [x.object, x.problem, x.fix]), [
    ['device d1', 'failed: the file system holding /srv/d1.img is full (ENOSPC)', 'free space on the file system holding /srv/d1.img, then vsm device online d1'],
    ['volume vol0', 'degraded: d1 failed (I/O error: write on /srv/d1.img at 3145728: ENOSPC)', 'free space on the file system holding /srv/d1.img, then vsm device online d1'],
  ])
})

test('thin device files that may outgrow their file system: a line for it before it fills, none while they fit', () => {
  const ok = [dev('d0', 'online'), dev('d1', 'online')]
  const healthy = [vol('healthy', [['d0', 'ok'], ['d1', 'ok']])]
  const host = (growth: number, free: number) => [{ dir: '/srv', devices: ['d0', 'd1'], growth, free }]
  assert.equal(attention(ok, healthy, [], host(2 ** 30, 2 * 2 ** 30)), [])
  assert.equal(attention(ok, healthy, [], host(3 * 2 ** 30, 2 ** 30)), [{
    object: 'file system of /srv',
    problem: 'device files d0, d1 may still grow by 3G, and it has 1G free: once it is full their writes fail (ENOSPC)',
    fix: 'free space there, or move a device to a file system with room: vsm device add NEWDEV PATH, then vsm volume replace VOLUME DEV NEWDEV',
  }])
})

test('a file system a failed commit stopped: restart once the cause is remedied', () => {
  const a = attention([dev('d0', 'online')], [vol('healthy', [['d0', 'ok']])], [], [], 'commit failed: write on /srv/d0.img at 4096: ENOSPC')
  assert.equal(a, [{ object: 'file system', problem: 'serves nothing more: commit failed: write on /srv/d0.img at 4096: ENOSPC', fix: 'remedy the cause, then vsm down --force; vsm up (what was committed is replayed)' }])
})

test.run()
