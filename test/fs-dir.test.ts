// A directory's names by bucket (src/fs/dir.ts) against a model: after any sequence of
// adds, re-sets, deletes and renames, the names namesIn gives for a bucket are exactly
// those of the directory's whole image in that bucket, in the same order (the order the
// checkpoint writes them in, which its plan is checked against byte for byte), whatever
// bucket count was asked for before.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { Dir, nameHash } from '../src/fs/dir'

function rng(seed: number) {
  let s = seed >>> 0
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32)
}

/** Bucket b of count as the whole image makes it: the names in insertion order, filtered by hash. */
const modelBucket = (m: Map<string, number>, b: number, count: number) => [...m.keys()].filter((n) => (nameHash(n) & (count - 1)) === b)

test('namesIn matches the whole image bucket by bucket under random changes', () => {
  const seed = Number(process.env.DIR_SEED ?? Date.now() % 1e9)
  const r = rng(seed)
  const d = new Dir(), m = new Map<string, number>()
  let ino = 2
  for (let step = 0; step < 20000; step++) {
    const x = r()
    const name = `n${Math.floor(r() * 3000)}`
    if (x < 0.5) { d.set(name, ino); m.set(name, ino++) } // add, or re-set in place
    else if (x < 0.8) assert.is(d.delete(name), m.delete(name), `delete ${name} (seed ${seed})`)
    else if (x < 0.9) {
      const to = `n${Math.floor(r() * 3000)}`
      const i = m.get(name)
      if (i !== undefined && to !== name) { d.delete(name); m.delete(name); d.set(to, i); m.set(to, i) }
    } else {
      const count = 2 ** Math.floor(r() * 6)
      const b = Math.floor(r() * count)
      assert.equal([...d.namesIn(b, count)], modelBucket(m, b, count), `bucket ${b} of ${count} at step ${step} (seed ${seed})`)
    }
  }
  assert.equal([...d], [...m], `entries and their order (seed ${seed})`)
  for (const count of [1, 8, 32]) for (let b = 0; b < count; b++) assert.equal([...d.namesIn(b, count)], modelBucket(m, b, count), `final bucket ${b} of ${count} (seed ${seed})`)
})

test('Dir.of keeps the order it is given; clear forgets the buckets', () => {
  const d = Dir.of([['b', 3], ['a', 2], ['c', 4]])
  assert.equal([...d.keys()], ['b', 'a', 'c'])
  assert.equal([...d.namesIn(0, 1)], ['b', 'a', 'c'])
  d.clear()
  d.set('z', 9)
  assert.equal([...d.namesIn(0, 1)], ['z'])
})

test.run()
