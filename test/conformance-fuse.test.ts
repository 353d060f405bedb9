// The conformance suite on a virtual disk as a program sees it: a file in the real
// FUSE mount, opened through the kernel with the same device code vsm uses for
// backing files; once per FUSE binding.
import { makeVsm } from './helpers/daemon'
import { conformance } from './helpers/conformance'
import { openDevice } from '../src/volume/device'
import { FUSE_BINDINGS } from '../src/virtualizer/fuse-view'
import { join } from 'path'

for (const fuse of FUSE_BINDINGS) {
  const vsm = makeVsm({ deviceSize: '1G', fuse })
  let n = 0
  const t = conformance(`virtual disk through the FUSE mount [${fuse}]`, async () => {
    if (n === 0) await vsm.up()
    const name = `conf${n++}.img`
    await vsm.run('disk', 'create', name, '--size', '64M')
    const path = join(vsm.mount, name)
    let dev = await openDevice(path)
    return {
      dev,
      reopen: async () => { await dev.close(); dev = await openDevice(path); return dev },
      cleanup: async () => { await dev.close(); await vsm.run('disk', 'delete', name) },
    }
  })
  t.after(() => vsm.cleanup())
  t.run()
}
