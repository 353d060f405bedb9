// kill -9 of the daemon at random instants of migrations into an archive tier and of
// recalls (whole-file and range jobs, and reads through the view), ztest style, with a
// writer process fsyncing versioned slots into the disk all along. After every restart:
// fs check clean (no block both free and referenced, counts right), every byte of every
// slot is its last acknowledged version (or the one in flight), the interrupted move
// resumes and finishes, hsm check finds no object missing and removes the orphans the
// crash left. VSM_HSM_CRASH_ROUNDS (default 4) and VSM_HSM_CRASH_SEED replay a run.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'child_process'
import { mkdirSync, readdirSync, writeFileSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { SLOT, acknowledgedCount, slotData, startWriter, verifyEverySlot } from './helpers/crash-writer'
import { prng } from './helpers/ztest-child'

const vsm = makeVsm({ deviceSize: '256M' })
test.after(() => vsm.cleanup())

const ROUNDS = Number(process.env.VSM_HSM_CRASH_ROUNDS ?? 4)
const SEED = Number(process.env.VSM_HSM_CRASH_SEED ?? Date.now() % 1_000_000)
const SLOTS = 250
const BYTES = SLOTS * SLOT
const img = () => join(vsm.mount, 'crash.img')
const journal = () => join(vsm.home, 'crash.journal')
const archive = () => join(vsm.home, 'cold-archive')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 60_000) {
  const deadline = Date.now() + ms
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (seed ${SEED})`)
    await sleep(50)
  }
}

async function fsckClean(when: string) {
  const r = await vsm.json('fs', 'check')
  assert.ok(r.ok, `${when} (seed ${SEED}): ${r.errors.join('; ')}`)
}

/** Waits for every job still running (the one the crash cut short stays failed). */
async function waitRunning(when: string) {
  for (const j of (await vsm.json('job', 'list')).filter((x: any) => x.state !== 'concluded')) {
    const done = await vsm.json('job', 'wait', String(j.id))
    assert.not.ok(done.error, `${when}: job ${j.id} (${j.kind}): ${JSON.stringify(done.error)}`)
  }
}

const residency = async () => (await vsm.json('hsm', 'status', 'crash.img')).files[0].bytes as Record<string, number>

test(`kill -9 at random during migrations into an archive and recalls: nothing lost, nothing both freed and referenced (seed ${SEED}, ${ROUNDS} rounds)`, async () => {
  const rnd = prng(SEED)
  await vsm.up()
  await vsm.run('hsm', 'tier', 'add', 'fast', '--volume', 'vol0')
  mkdirSync(archive())
  await vsm.run('hsm', 'tier', 'add', 'cold', '--archive', archive())
  await vsm.run('disk', 'create', 'crash.img', '--size', `${BYTES / 1024}K`)
  const init = Buffer.alloc(BYTES)
  for (let s = 0; s < SLOTS; s++) slotData(s, 0).copy(init, s * SLOT)
  writeFileSync(img(), init)
  const ops: string[] = []
  for (let round = 1; round <= ROUNDS; round++) {
    const cold = (await residency()).cold ?? 0
    const op = cold < BYTES / 4 ? 'migrate' : (['migrate', 'recall', 'range', 'read'] as const)[Math.floor(rnd() * 4)]
    const exited = startWriter(img(), journal(), SLOTS, round)
    await until('the writer to start', () => acknowledgedCount(journal()) > 3)
    let reader: ReturnType<typeof spawn> | null = null
    if (op === 'migrate') await vsm.run('hsm', 'migrate', 'crash.img', '--tier', 'cold', '--rate', '4M')
    else if (op === 'recall') await vsm.run('hsm', 'recall', 'crash.img')
    else if (op === 'range') {
      const a = Math.floor(rnd() * SLOTS / 2) * SLOT
      await vsm.run('hsm', 'recall', 'crash.img', '--range', `${a}-${a + 64 * SLOT}`)
    } else {
      reader = spawn('dd', [`if=${img()}`, 'of=/dev/null', 'bs=256k'], { stdio: 'ignore' })
      reader.on('error', () => undefined)
    }
    const delay = 150 + Math.floor(rnd() * 2500)
    ops.push(`${op}@${delay}ms`)
    await sleep(delay)
    vsm.kill9()
    await exited
    reader?.kill('SIGKILL')
    await vsm.up()
    const when = `round ${round} (${ops.join(', ')})`
    await fsckClean(`after the crash, ${when}`)
    verifyEverySlot(img(), journal(), SLOTS)
    // whatever the crash interrupted resumes as a job: let it finish, then check again
    await waitRunning(when)
    await fsckClean(`after the resumed jobs, ${when}`)
    const c = (await vsm.json('hsm', 'check')).tiers[0]
    assert.equal(c.missing, [], `${when}: the fs points into objects that are gone`)
    const left = readdirSync(archive()).filter((n) => !n.startsWith('.'))
    assert.is(left.length, c.objects - c.removed, `${when}: check removed what it said`)
    assert.is((await vsm.json('hsm', 'check', '--dry-run')).tiers[0].orphans.length, 0, `${when}: a second check finds no orphan`)
    verifyEverySlot(img(), journal(), SLOTS)
    const bytes = await residency()
    assert.is((bytes.fast ?? 0) + (bytes.cold ?? 0), BYTES, `${when}: every block is somewhere: ${JSON.stringify(bytes)}`)
  }
  // the end: all of it home, every byte right
  const job = /job (\d+)/.exec(await vsm.run('hsm', 'recall', 'crash.img'))![1]
  assert.not.ok((await vsm.json('job', 'wait', job)).error)
  assert.equal(await residency(), { fast: BYTES })
  verifyEverySlot(img(), journal(), SLOTS)
  await fsckClean('at the end')
  console.log(`hsm-archive-crash seed ${SEED}: ${ops.join(', ')}`)
})

test.run()
