// The crash tests' verifier against journals and images made by hand: what a slot may
// hold after kills (its last acknowledged version, or any version tried after it, block
// by block) and what it may not.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdtempSync, rmSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { SLOT, slotData, verifyAcknowledged, verifyEverySlot } from './helpers/crash-writer'

const SLOTS = 4

/** An image whose slots hold the given versions (a [version, version] pair: torn at block 8), and its journal. */
function make(dir: string, held: (number | [number, number])[], journal: string[]): { img: string; journal: string } {
  const img = Buffer.alloc(SLOTS * SLOT)
  held.forEach((v, s) => {
    const [a, b] = Array.isArray(v) ? v : [v, v]
    slotData(s, a).copy(img, s * SLOT)
    slotData(s, b).subarray(8 * 4096).copy(img, s * SLOT + 8 * 4096)
  })
  writeFileSync(join(dir, 'img'), img)
  writeFileSync(join(dir, 'journal'), journal.join('\n') + '\n')
  return { img: join(dir, 'img'), journal: join(dir, 'journal') }
}

test('a write in flight at one kill that landed, tried over at the next without an acknowledgement, is not a loss', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vsm-verifier-'))
  try {
    // slot 1: acknowledged 1000001; 1000002 in flight at the first kill and landed;
    // the second round tried 2000001, the kill came first
    const j = ['try 0 1000000', 'ack 0 1000000', 'try 1 1000001', 'ack 1 1000001', 'try 1 1000002', 'try 1 2000001']
    const ok = make(dir, [1000000, 1000002, 0, 0], j)
    assert.is(verifyAcknowledged(ok.img, ok.journal), 2)
    assert.is(verifyEverySlot(ok.img, ok.journal, SLOTS), 2)
    // torn between the acknowledged version and a later try: each block is one of them
    const torn = make(dir, [1000000, [1000001, 2000001], 0, 0], j)
    assert.is(verifyAcknowledged(torn.img, torn.journal), 2)
  } finally {
    rmSync(dir, { recursive: true })
  }
})

test('an acknowledged write lost is found: an older version, a version of another slot, zeros', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vsm-verifier-'))
  try {
    const j = ['try 0 1000000', 'ack 0 1000000', 'try 1 1000001', 'ack 1 1000001', 'try 1 1000002', 'ack 1 1000002']
    const older = make(dir, [1000000, [1000002, 1000001], 0, 0], j)
    assert.throws(() => verifyAcknowledged(older.img, older.journal), /slot 1 block 8: acknowledged version 1000002 lost; it holds block 8 of slot 1 version 1000001/)
    const zeros = make(dir, [1000000, 1000002, 0, 0], j)
    writeFileSync(zeros.img, Buffer.alloc(SLOT), { flag: 'r+' })
    assert.throws(() => verifyAcknowledged(zeros.img, zeros.journal), /slot 0 block 0: acknowledged version 1000000 lost; it holds zeros/)
    // a slot never acknowledged must still hold the first fill (version 0) or a try
    const never = make(dir, [1000000, 1000002, 1000002, 0], j)
    assert.throws(() => verifyEverySlot(never.img, never.journal, SLOTS), /slot 2 block 0: version 0 lost/)
  } finally {
    rmSync(dir, { recursive: true })
  }
})

test.run()
