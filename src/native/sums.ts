// Loads native/vsm_sums (built by scripts/setup with node-gyp): zlib's crc32 and a
// xor, in native code for the data path (native/sums.cc says why).
import { join } from 'path'

interface SumsAddon {
  crc32(buf: Uint8Array, value?: number): number
  blockSums(buf: Uint8Array, blockSize: number, out: Uint32Array): void
  xorInto(dst: Uint8Array, src: Uint8Array): void
}

// dist/src/native/ is three levels below the repo root, where native/build is
const addon = require(join(__dirname, '..', '..', '..', 'native', 'build', 'Release', 'vsm_sums.node')) as SumsAddon

/** zlib's crc32 of buf, continuing from value (the crc32 of what came before) as zlib's does. */
export const crc32 = addon.crc32

/** out[k]: the crc32 of the k-th blockSize bytes of buf (the last may be short), 1 where that is 0. */
export const blockSumsInto = addon.blockSums

/** dst ^= src, over the shorter of the two. */
export const xorInto = addon.xorInto
