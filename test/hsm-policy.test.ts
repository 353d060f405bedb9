// HSM policy decisions (src/hsm/policy.ts) as a table: which files a policy run migrates,
// by cold-after and by watermarks over a model of access times and volume use, and under
// --regions which regions of a file go to the tier and which come back.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { checkPolicy, decide, parseDuration, type FileFacts, type RegionFacts } from '../src/hsm/policy'
import { VsmError } from '../src/block/blockdev'
import { Jobs } from '../src/control/jobs'
import { NULL_SINK } from '../src/control/events'
import { Hsm } from '../src/hsm/hsm'
import { memFs } from './helpers/fs-fixture'

const DAY = 86_400_000
const NOW = 1_000 * DAY
const tiers = [{ name: 'slow', volume: 'v1' }, { name: 'fast', volume: 'vol0' }]
const cold = { coldAfterMs: 7 * DAY, minSize: 1 << 20, tier: 'slow' }
const f = (over: Partial<FileFacts>): FileFacts => ({
  path: '/a.img', size: 8 << 20, lastAccess: NOW - 30 * DAY, pinned: false, moving: false, policy: cold, bytesOn: { vol0: 8 << 20 }, ...over,
})

const cases: [string, Partial<FileFacts>, boolean][] = [
  ['cold, large, on the fast tier', {}, true],
  ['accessed within cold-after', { lastAccess: NOW - 6 * DAY }, false],
  ['exactly cold-after ago', { lastAccess: NOW - 7 * DAY }, true],
  ['pinned', { pinned: true }, false],
  ['a move under way', { moving: true }, false],
  ['smaller than min-size', { size: (1 << 20) - 1 }, false],
  ['exactly min-size', { size: 1 << 20, bytesOn: { vol0: 1 << 20 } }, true],
  ['no policy', { policy: null }, false],
  ['policy names an unknown tier', { policy: { ...cold, tier: 'gone' } }, false],
  ['already wholly on the tier', { bytesOn: { v1: 8 << 20 } }, false],
  ['partly on the tier (a move cut short)', { bytesOn: { v1: 4 << 20, vol0: 4 << 20 } }, true],
  ['nothing allocated (sparse)', { bytesOn: {} }, false],
  ['cold-after 0: everything qualifies', { lastAccess: NOW, policy: { ...cold, coldAfterMs: 0 } }, true],
]

for (const [name, over, migrate] of cases) {
  test(`decide: ${name} -> ${migrate ? 'migrate' : 'stay'}`, () => {
    const d = decide([f(over)], tiers, NOW)
    assert.is(d.length, migrate ? 1 : 0, JSON.stringify(d))
    if (migrate) assert.equal({ tier: d[0].tier, volume: d[0].volume, reason: d[0].reason }, { tier: 'slow', volume: 'v1', reason: 'cold' })
  })
}

test('decide: the bytes to move are those off the tier; coldest first', () => {
  const d = decide([
    f({ path: '/warm', lastAccess: NOW - 8 * DAY }),
    f({ path: '/half', lastAccess: NOW - 40 * DAY, bytesOn: { v1: 3 << 20, vol0: 5 << 20 } }),
    f({ path: '/pinned', lastAccess: NOW - 90 * DAY, pinned: true }),
  ], tiers, NOW)
  assert.equal(d.map((x) => [x.path, x.bytes]), [['/half', 5 << 20], ['/warm', 8 << 20]])
})

test('parseDuration: units and bad input', () => {
  assert.is(parseDuration('7d'), 7 * DAY)
  assert.is(parseDuration('12h'), 12 * 3_600_000)
  assert.is(parseDuration('30m'), 1_800_000)
  assert.is(parseDuration('45s'), 45_000)
  assert.is(parseDuration('2w'), 14 * DAY)
  assert.is(parseDuration('90'), 90_000)
  for (const bad of ['', '7x', '-1d', 'd', '1e9d', {}, null]) {
    assert.throws(() => parseDuration(bad), (e: unknown) => e instanceof VsmError && e.code === 'EINVAL' && !/\n/.test(e.message), String(bad))
  }
})

test('checkPolicy: an unknown tier and a bad min-size are refused', () => {
  assert.equal(checkPolicy({ tier: 'slow', coldAfter: '1d', minSize: 5 }, tiers), { coldAfterMs: DAY, minSize: 5, tier: 'slow' })
  assert.throws(() => checkPolicy({ tier: 'nope' }, tiers), /not a tier/)
  assert.throws(() => checkPolicy({ tier: 'slow', minSize: -1 }, tiers), /min-size/)
  assert.throws(() => checkPolicy({ tier: 'slow', minSize: '5' }, tiers), /min-size/)
})

// Watermarks: ten 10 MiB files on a 100 MiB vol0, accessed an hour apart (none cold by
// age: cold-after is 30 days); the policy says above 85% migrate the coldest until 70%.
const HOUR = 3_600_000
const marks = { ...cold, coldAfterMs: 30 * DAY, highPct: 85, lowPct: 70 }
const disks = (n: number, over: (i: number) => Partial<FileFacts> = () => ({})) => Array.from({ length: n }, (_, i) =>
  f({ path: `/d${i}`, size: 10 << 20, lastAccess: NOW - (n - i) * HOUR, policy: marks, bytesOn: { vol0: 10 << 20 }, ...over(i) }))
const vol0 = (usedMiB: number) => [{ name: 'vol0', size: 100 << 20, used: usedMiB << 20 }, { name: 'v1', size: 1 << 30, used: 0 }]

const watermarkCases: [string, FileFacts[], ReturnType<typeof vol0>, string[]][] = [
  ['at 90%: the two coldest, down to 70%', disks(9), vol0(90), ['/d0', '/d1']],
  ['at 85% (not above high): none', disks(9), vol0(85), []],
  ['at 100%: coldest until 70%', disks(10), vol0(100), ['/d0', '/d1', '/d2']],
  ['a pinned cold one is skipped, the next coldest goes', disks(9, (i) => ({ pinned: i === 0 })), vol0(90), ['/d1', '/d2']],
  ['a file cold by age counts toward the low mark', disks(9, (i) => (i === 5 ? { lastAccess: NOW - 40 * DAY } : {})), vol0(90), ['/d5', '/d0']],
  ['files on another volume do not lower vol0', disks(9, (i) => (i < 2 ? { bytesOn: { v2: 10 << 20 } } : {})), vol0(90), ['/d2', '/d3']],
  ['no watermarks in the policy: none', disks(9, () => ({ policy: { ...marks, highPct: undefined, lowPct: undefined } })), vol0(95), []],
]

for (const [name, files, volumes, expect] of watermarkCases) {
  test(`decide, watermarks: ${name}`, () => {
    const d = decide(files, tiers, NOW, volumes)
    assert.equal(d.map((x) => x.path), expect)
  })
}

// Premigration: a premigrating policy copies cold files and frees their pool blocks only for a watermark.
const arch = [...tiers, { name: 'cold', volume: 'archive:cold' }]
const pre = { ...marks, tier: 'cold', premigrate: true as const }
const premigrateCases: [string, FileFacts[], ReturnType<typeof vol0>, [string, string][]][] = [
  ['cold, below high: copied only', disks(2, (i) => ({ lastAccess: NOW - 40 * DAY - i, policy: pre })), vol0(50), [['/d1', 'premigrate'], ['/d0', 'premigrate']]],
  ['cold and already copied, below high: nothing', disks(2, () => ({ lastAccess: NOW - 40 * DAY, policy: pre, premigrated: true })), vol0(50), []],
  ['above high: copied ones released, the rest migrated, coldest first', disks(9, (i) => ({ policy: pre, premigrated: i === 1 })), vol0(90), [['/d0', 'migrate'], ['/d1', 'release']]],
  ['not cold, below high: nothing', disks(3, () => ({ policy: pre })), vol0(50), []],
  ['a plain policy releases a copy made by hand', [f({ policy: { ...cold, tier: 'cold' }, premigrated: true })], vol0(10), [['/a.img', 'release']]],
]

for (const [name, files, volumes, expect] of premigrateCases) {
  test(`decide, premigrate: ${name}`, () => {
    assert.equal(decide(files, arch, NOW, volumes).map((x) => [x.path, x.action]), expect)
  })
}

test('checkPolicy: watermarks both or neither, low below high, percentages', () => {
  assert.equal(checkPolicy({ tier: 'slow', high: '85%', low: 70 }, tiers), { coldAfterMs: 7 * DAY, minSize: 0, tier: 'slow', highPct: 85, lowPct: 70 })
  assert.throws(() => checkPolicy({ tier: 'slow', high: '85%' }, tiers), /both --high and --low/)
  assert.throws(() => checkPolicy({ tier: 'slow', high: '70%', low: '85%' }, tiers), /must be below high/)
  assert.throws(() => checkPolicy({ tier: 'slow', high: '185%', low: '5%' }, tiers), /high: a percentage/)
  assert.throws(() => checkPolicy({ tier: 'slow', high: 'lots', low: '5%' }, tiers), /high: a percentage/)
  assert.throws(() => checkPolicy({ tier: 'slow', premigrate: true }, tiers), /not an archive/)
  assert.equal(checkPolicy({ tier: 'cold', premigrate: true }, arch).premigrate, true)
})

const MiB = 1 << 20
const R = MiB / 4096
/** A disk's regions: heat in days ago and MiB on the tier, one entry per 1 MiB region. */
const regions = (spec: [number, number][]): RegionFacts[] => spec.map(([daysAgo, onTierMiB], i) => ({
  b0: i * R, b1: (i + 1) * R, lastAccess: NOW - daysAgo * DAY, onTier: onTierMiB * MiB, elsewhere: (1 - onTierMiB) * MiB,
}))
const byRegion = { ...cold, regionBytes: MiB }

test('decide, regions: cold regions of a hot disk go (adjacent ones as one range), hot ones on the tier come back', () => {
  // a disk used a minute ago: regions 0-1 and 4 cold, 2 hot, 3 hot but on the tier, 5 cold and already there
  const d = decide([f({ lastAccess: NOW - 60_000, policy: byRegion, regions: regions([[30, 0], [8, 0], [0.01, 0], [1, 1], [40, 0], [40, 1]]) })], tiers, NOW)
  assert.equal(d.map((x) => [x.action, x.reason, x.volume, x.ranges, x.bytes]), [
    ['migrate', 'cold', 'v1', [[0, 2 * R], [4 * R, 5 * R]], 3 * MiB],
    ['recall', 'hot', 'v1', [[3 * R, 4 * R]], MiB],
  ])
})

test('decide, regions: nothing when every region is where its heat says; pinned and moving disks are left alone', () => {
  const settled = regions([[30, 1], [0, 0], [9, 1]])
  assert.equal(decide([f({ policy: byRegion, regions: settled })], tiers, NOW), [])
  const mixed = regions([[30, 0], [0, 1]])
  assert.equal(decide([f({ policy: byRegion, regions: mixed, pinned: true }), f({ path: '/b', policy: byRegion, regions: mixed, moving: true })], tiers, NOW), [])
})

test('checkPolicy: regions in whole MiB, not with watermarks or premigrate', () => {
  assert.is(checkPolicy({ tier: 'slow', regions: true }, tiers).regionBytes, MiB)
  assert.is(checkPolicy({ tier: 'slow', regions: 4 * MiB }, tiers).regionBytes, 4 * MiB)
  assert.throws(() => checkPolicy({ tier: 'slow', regions: MiB + 4096 }, tiers), /regions: a region size in whole MiB/)
  assert.throws(() => checkPolicy({ tier: 'slow', regions: true, high: '85%', low: '70%' }, tiers), /not with watermarks/)
  assert.throws(() => checkPolicy({ tier: 'cold', regions: true, premigrate: true }, arch), /not with --premigrate/)
})

test('decide, snapshots first: blocks only snapshots hold go at every run, hot disk or not, before the coldest file', () => {
  const snapFirst = { ...cold, snapshotsFirst: true as const }
  const d = decide([
    f({ path: '/cold', lastAccess: NOW - 90 * DAY }),
    f({ path: '/hot', lastAccess: NOW, policy: snapFirst, snapshotOnly: 3 * MiB }),
    f({ path: '/none', lastAccess: NOW, policy: snapFirst, snapshotOnly: 0 }),
    f({ path: '/pinned', lastAccess: NOW, policy: snapFirst, snapshotOnly: MiB, pinned: true }),
    f({ path: '/plain', lastAccess: NOW, snapshotOnly: MiB }),
  ], tiers, NOW)
  assert.equal(d.map((x) => [x.path, x.reason, x.bytes, !!x.snapshots]), [['/hot', 'snapshot', 3 * MiB, true], ['/cold', 'cold', 8 << 20, false]])
  assert.is(checkPolicy({ tier: 'slow', snapshotsFirst: true }, tiers).snapshotsFirst, true)
})

test('a policy run walks the extent maps of files under a policy only (in-process fs on memory volumes)', async () => {
  const { fs } = await memFs(16 * MiB, 2)
  const hsm = new Hsm(fs, new Jobs(), NULL_SINK)
  await hsm.addTier('slow', { volume: fs.volumeNames()[1] })
  await fs.mkdir('/cold', 0o755, 0, 0)
  for (const p of ['/cold/a.img', '/plain.img']) await fs.write(await fs.create(p, 0o644, 0, 0), Buffer.alloc(8192, 1), 0)
  await hsm.setPolicy('/cold', { tier: 'slow', coldAfter: '1d' })
  const walked: number[] = []
  const placementOf = fs.placementOf.bind(fs)
  fs.placementOf = (ino) => { walked.push(ino); return placementOf(ino) }
  // a disk of 300k extents under no policy cost the daemon a ~0.5 s stall at every minute's check
  hsm.run()
  assert.equal(walked, [fs.lookup('/cold/a.img')])
})

test.run()
