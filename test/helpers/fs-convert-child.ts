// Mounts the fs image named on the command line (converting an old format) and closes
// it, as its own process, so fs-convert's SIGKILL lands in the conversion as a real
// kill -9. Prints "mounting" (synchronously on a pipe) just before the mount starts.
import { writeSync } from 'fs'
import { FileSystem } from '../../src/fs'
import { FileDev } from './fs-filedev'

async function main() {
  const dev = await FileDev.open(process.argv[2])
  writeSync(1, 'mounting\n')
  const fs = await FileSystem.mount([dev])
  await fs.close()
  await dev.close()
  writeSync(1, 'done\n')
}

main().catch((e) => { console.error(e); process.exit(1) })
