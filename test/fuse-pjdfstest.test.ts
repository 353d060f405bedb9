// The outside POSIX suite, pjdfstest (github.com/pjd/pjdfstest), run in the FUSE view
// mounted with --allow-other (its cases switch to other users). It is not fetched by
// the test: build it from a checkout (autoreconf -ifs && ./configure && make pjdfstest)
// and point VSM_PJDFSTEST at that directory; without it the test is skipped. The pass
// rate is printed; VSM_PJDFSTEST_MIN (default 96) is the least percentage accepted.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawnSync } from 'child_process'
import { chmodSync, existsSync, mkdirSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'

const suite = process.env.VSM_PJDFSTEST
const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())

const run = suite && existsSync(join(suite, 'pjdfstest')) ? test : test.skip
run('pjdfstest in the view passes at least VSM_PJDFSTEST_MIN percent of its cases', async () => {
  chmodSync(vsm.home, 0o711)
  await vsm.up('--allow-other')
  const dir = join(vsm.mount, 'pjd')
  mkdirSync(dir, { mode: 0o777 })
  chmodSync(dir, 0o777)
  const r = spawnSync('prove', ['-r', join(suite!, 'tests')], { cwd: dir, encoding: 'utf8', maxBuffer: 256 << 20, timeout: 40 * 60_000 })
  const out = r.stdout + r.stderr
  const total = Number(/Files=\d+, Tests=(\d+)/.exec(out)?.[1] ?? 0)
  let failed = 0
  for (const m of out.slice(out.indexOf('Test Summary Report')).matchAll(/Tests: \d+ Failed: (\d+)/g)) failed += Number(m[1])
  const rate = total ? (100 * (total - failed)) / total : 0
  console.log(`pjdfstest: ${total - failed} of ${total} cases pass (${rate.toFixed(1)}%)`)
  assert.ok(total > 8000, `pjdfstest ran ${total} cases:\n${out.slice(-2000)}`)
  assert.ok(rate >= Number(process.env.VSM_PJDFSTEST_MIN ?? 96), `pass rate ${rate.toFixed(1)}%`)
})

test.run()
