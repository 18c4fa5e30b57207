{
  "targets": [
    {
      "target_name": "cloister_native",
      "sources": ["native/cloister_native.c", "native/crypto.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-fstack-protector-strong", "-O2", "-fvisibility=hidden"]
    }
  ]
}
