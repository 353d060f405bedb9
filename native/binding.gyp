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
    }
  ]
}
