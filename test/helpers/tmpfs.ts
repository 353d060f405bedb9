// A small tmpfs for a test file: a real file system that fills up (ENOSPC) at a size
// the test picks. Mounted before the tests, unmounted and removed after.
import { execFileSync } from 'child_process'
import { mkdtempSync, rmSync } from 'fs'
import type { Test } from 'uvu'

export function tmpfsFor(test: Test, name: string, size: string): string {
  const dir = mkdtempSync(`/var/tmp/vsm-${name}-`)
  let mounted = false
  test.before(() => {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
    mounted = true
  })
  test.after(() => {
    if (mounted) execFileSync('umount', [dir])
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}
