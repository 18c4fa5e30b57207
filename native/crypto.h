/* The crypto half of cloister_native (native/crypto.c): registered from the module init. */
#ifndef CLOISTER_CRYPTO_H
#define CLOISTER_CRYPTO_H
#include <node_api.h>

/* Adds the crypto functions to `exports`; adds nothing (and succeeds) where Node's OpenSSL 3
 * is not available, so the ioctl functions never depend on it. */
napi_status cloister_crypto_register(napi_env env, napi_value exports);

#endif
