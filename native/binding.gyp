# The N-API addons in native/, one target each, built by scripts/setup with node-gyp.
{
  "targets": [
    {
      # vsm_sys: the system calls Node lacks (flock on an fd, SO_PEERCRED of a unix socket).
      "target_name": "vsm_sys",
      "sources": ["sys.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-Wall", "-Wextra"]
    },
    {
      # vsm_sums: crc32 (Intel's ISA-L) and xor for the data path (sums.cc says why).
      "target_name": "vsm_sums",
      "sources": ["sums.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "libraries": ["-lisal"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-Wall", "-Wextra", "-O3"]
    },
    {
      # vsm_fuse: the FUSE view's binding on libfuse3's low-level API (fuse/session.cc says how).
      "target_name": "vsm_fuse",
      "sources": ["fuse/session.cc", "fuse/requests.cc", "fuse/replies.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!@(pkg-config --cflags-only-I fuse3 | sed s/-I//g)"],
      "libraries": ["<!@(pkg-config --libs fuse3)"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
