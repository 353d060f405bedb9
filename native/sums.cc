// vsm_sums: the arithmetic of the data path that JavaScript does slowly. crc32 and
// blockSums compute zlib's crc32 with Intel's ISA-L (PCLMULQDQ folding: 9.3 GB/s on 4 KiB
// blocks here against 2.0 GB/s for zlib.crc32 from Node, which made the mirror's sums a
// quarter of the daemon's CPU under 1 MiB writes); xorInto is raid5's parity. All run on
// the calling thread: a 1 MiB buffer takes about 0.1 ms, less than a hop to a worker.
#include <napi.h>
#include <isa-l/crc.h>
#include <cstdint>
#include <cstring>

namespace {

bool Bytes(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* len) {
  if (info.Length() <= i || !info[i].IsTypedArray()) {
    Napi::TypeError::New(info.Env(), "a Buffer is expected").ThrowAsJavaScriptException();
    return false;
  }
  Napi::TypedArray t = info[i].As<Napi::TypedArray>();
  *data = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  *len = t.ByteLength();
  return true;
}

// crc32(buf, value = 0) -> zlib's crc32 of buf, continuing from value as zlib's does
Napi::Value Crc32(const Napi::CallbackInfo& info) {
  uint8_t* d;
  size_t n;
  if (!Bytes(info, 0, &d, &n)) return info.Env().Undefined();
  uint32_t seed = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Uint32Value() : 0;
  return Napi::Number::New(info.Env(), crc32_gzip_refl(seed, d, n));
}

// blockSums(buf, blockSize, out: Uint32Array): out[k] = crc32 of block k, or 1 where that
// is 0 (a sum of 0 marks a block never written); the last block may be short.
Napi::Value BlockSums(const Napi::CallbackInfo& info) {
  uint8_t* d;
  size_t n;
  if (!Bytes(info, 0, &d, &n)) return info.Env().Undefined();
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsTypedArray() ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    Napi::TypeError::New(info.Env(), "blockSums: a block size and a Uint32Array are expected").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  size_t bs = static_cast<size_t>(info[1].As<Napi::Number>().Int64Value());
  Napi::Uint32Array out = info[2].As<Napi::Uint32Array>();
  if (bs == 0 || out.ElementLength() < (n + bs - 1) / bs) {
    Napi::RangeError::New(info.Env(), "blockSums: out is too short for the blocks").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  for (size_t k = 0, at = 0; at < n; k++, at += bs) {
    uint32_t c = crc32_gzip_refl(0, d + at, n - at < bs ? n - at : bs);
    out[k] = c ? c : 1;
  }
  return info.Env().Undefined();
}

// xorInto(dst, src): dst ^= src over the shorter of the two.
Napi::Value XorInto(const Napi::CallbackInfo& info) {
  uint8_t *a, *b;
  size_t na, nb;
  if (!Bytes(info, 0, &a, &na) || !Bytes(info, 1, &b, &nb)) return info.Env().Undefined();
  size_t n = na < nb ? na : nb, i = 0;
  // memcpy keeps unaligned words defined; the compiler turns the loop into vector xors
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    memcpy(&x, a + i, 8);
    memcpy(&y, b + i, 8);
    x ^= y;
    memcpy(a + i, &x, 8);
  }
  for (; i < n; i++) a[i] ^= b[i];
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("crc32", Napi::Function::New(env, Crc32));
  exports.Set("blockSums", Napi::Function::New(env, BlockSums));
  exports.Set("xorInto", Napi::Function::New(env, XorInto));
  return exports;
}

}  // namespace

NODE_API_MODULE(vsm_sums, Init)
