/*
 * cloister_native: the two ioctls that Node cannot issue by itself.
 *
 *   nsmRaw(fd, request)                      -> Uint8Array     (AWS Nitro Secure Module)
 *   snpGetExtReport(fd, reportData, vmpl, n) -> { report, certs } (AMD SEV-SNP guest driver)
 *
 * Plain Node-API C (node_api.h), no dependencies. The file descriptors are opened and closed
 * by JavaScript (fs.openSync); this code only borrows them for one ioctl. Nothing here logs,
 * and no request or response bytes outlive the call except the copies returned to JS.
 *
 * The ioctl structures are declared locally (mirroring the Linux UAPI headers
 * include/uapi/linux/nsm.h and include/uapi/linux/sev-guest.h) so the addon builds against
 * any kernel headers; _Static_assert pins their layout to the kernel ABI.
 */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include "crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <sys/ioctl.h>
#include <linux/ioctl.h>
#endif

/* ---- Nitro Secure Module (include/uapi/linux/nsm.h; aws-nitro-enclaves-nsm-api driver) --- */

#define NSM_REQUEST_MAX_SIZE 0x1000  /* 4096: NSM_REQUEST_MAX_SIZE in the nsm-api driver */
#define NSM_RESPONSE_MAX_SIZE 0x3000 /* 12288: NSM_RESPONSE_MAX_SIZE in the nsm-api driver */

struct cloister_nsm_iovec {
  uint64_t addr;
  uint64_t len;
};

struct cloister_nsm_raw {
  struct cloister_nsm_iovec request;
  struct cloister_nsm_iovec response;
};

_Static_assert(sizeof(struct cloister_nsm_raw) == 32, "struct nsm_raw layout");

/* ---- SEV-SNP guest driver (include/uapi/linux/sev-guest.h) ----------------------------- */

struct cloister_snp_report_req {
  uint8_t user_data[64];
  uint32_t vmpl;
  uint8_t rsvd[28];
};

struct cloister_snp_ext_report_req {
  struct cloister_snp_report_req data;
  uint64_t certs_address;
  uint32_t certs_len;
};

struct cloister_snp_guest_request_ioctl {
  uint8_t msg_version;
  uint64_t req_data;
  uint64_t resp_data;
  union {
    uint64_t exitinfo2;
    struct {
      uint32_t fw_error;
      uint32_t vmm_error;
    } err;
  } u;
};

#define SNP_REPORT_RESP_SIZE 4000
/* MSG_REPORT_RSP (SEV-SNP firmware ABI, table "MSG_REPORT_RSP Message Structure"):
 * status u32 @0, report_size u32 @4, reserved[24] @8, report @0x20. */
#define SNP_REPORT_RESP_HEADER 0x20
#define SNP_GUEST_VMM_ERR_INVALID_LEN 1
#define SNP_CERTS_MAX_LEN (16u * 4096u * 16u) /* 1 MiB upper bound on a certificate blob */
#define SNP_PAGE_SIZE 4096u

_Static_assert(sizeof(struct cloister_snp_report_req) == 96, "struct snp_report_req layout");
_Static_assert(sizeof(struct cloister_snp_ext_report_req) == 112, "struct snp_ext_report_req layout");
_Static_assert(sizeof(struct cloister_snp_guest_request_ioctl) == 32, "struct snp_guest_request_ioctl layout");

#ifdef __linux__
#define CLOISTER_NSM_IOCTL_RAW _IOWR(0x0A, 0, struct cloister_nsm_raw)
#define CLOISTER_SNP_GET_EXT_REPORT _IOWR('S', 0x2, struct cloister_snp_guest_request_ioctl)
#endif

/* ---- helpers ----------------------------------------------------------------------------- */

#define CHECK(env, call)                                                  \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error((env), "INTERNAL", "Node-API call failed");        \
      return NULL;                                                        \
    }                                                                     \
  } while (0)

/* Throw an Error with .code and numeric properties; returns NULL for `return throw_...`. */
static napi_value throw_coded(napi_env env, const char *code, const char *message, int err_no,
                              int64_t extra1, const char *extra1_name, int64_t extra2,
                              const char *extra2_name) {
  napi_value msg, code_v, error, num;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v) != napi_ok) return NULL;
  if (napi_create_error(env, code_v, msg, &error) != napi_ok) return NULL;
  if (err_no != 0 && napi_create_int32(env, err_no, &num) == napi_ok) {
    napi_set_named_property(env, error, "errno", num);
  }
  if (extra1_name != NULL && napi_create_int64(env, extra1, &num) == napi_ok) {
    napi_set_named_property(env, error, extra1_name, num);
  }
  if (extra2_name != NULL && napi_create_int64(env, extra2, &num) == napi_ok) {
    napi_set_named_property(env, error, extra2_name, num);
  }
  napi_throw(env, error);
  return NULL;
}

/* An integral JS number in [min, max]: its int32 and double readings must agree, so
 * fractions, NaN, infinities and out-of-range values are all refused. */
static int get_int_in_range(napi_env env, napi_value v, int32_t min, int32_t max, int32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  if (napi_get_value_int32(env, v, out) != napi_ok) return 0;
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != (double)*out) return 0;
  return *out >= min && *out <= max;
}

/* Borrow a Uint8Array's bytes (never retained past the call). */
static int get_u8(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is_typed;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return 0;
  napi_typedarray_type type;
  void *ptr;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, &ab, &offset) != napi_ok) return 0;
  if (type != napi_uint8_array) return 0;
  *data = (uint8_t *)ptr;
  return 1;
}

/*
 * The argument prologue every entry point shares: exactly `want` arguments, the first a file
 * descriptor (a non-negative integer), the second a Uint8Array (of exactly `u8_len` bytes
 * unless 0). Throws a TypeError with code INVALID_ARGUMENT and returns 0 otherwise.
 */
static int get_fd_and_bytes(napi_env env, napi_callback_info info, const char *fn, const char *u8_what, size_t u8_len,
                            size_t want, napi_value *argv, int32_t *fd, uint8_t **data, size_t *len) {
  char msg[128];
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, "INTERNAL", "Node-API call failed");
    return 0;
  }
  if (argc != want || !get_int_in_range(env, argv[0], 0, INT32_MAX, fd)) {
    snprintf(msg, sizeof msg, "%s: fd must be a non-negative integer", fn);
    napi_throw_type_error(env, "INVALID_ARGUMENT", msg);
    return 0;
  }
  if (!get_u8(env, argv[1], data, len) || (u8_len != 0 && *len != u8_len)) {
    if (u8_len == 0) snprintf(msg, sizeof msg, "%s: %s must be a Uint8Array", fn, u8_what);
    else snprintf(msg, sizeof msg, "%s: %s must be a %zu-byte Uint8Array", fn, u8_what, u8_len);
    napi_throw_type_error(env, "INVALID_ARGUMENT", msg);
    return 0;
  }
  return 1;
}

/* Copy bytes into a fresh JS Uint8Array. */
static napi_value make_u8(napi_env env, const uint8_t *src, size_t len) {
  void *dst = NULL;
  napi_value ab, arr;
  if (napi_create_arraybuffer(env, len, &dst, &ab) != napi_ok) return NULL;
  if (len > 0) memcpy(dst, src, len);
  if (napi_create_typedarray(env, napi_uint8_array, len, ab, 0, &arr) != napi_ok) return NULL;
  return arr;
}

#ifdef __linux__
/* One ioctl, retried while a signal interrupts it (EINTR). Returns its result; on failure
 * *err holds the errno the caller reports. */
static int ioctl_retrying(int fd, unsigned long request, void *arg, int *err) {
  int rc;
  do {
    rc = ioctl(fd, request, arg);
  } while (rc < 0 && errno == EINTR);
  *err = errno;
  return rc;
}
#endif

/* ---- nsmRaw(fd, request) ------------------------------------------------------------------ */

static napi_value nsm_raw(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  uint8_t *req;
  size_t req_len;
  if (!get_fd_and_bytes(env, info, "nsmRaw", "request", 0, 2, argv, &fd, &req, &req_len)) return NULL;
  if (req_len == 0 || req_len > NSM_REQUEST_MAX_SIZE) {
    napi_throw_range_error(env, "LIMIT_EXCEEDED", "nsmRaw: request must be 1..4096 bytes");
    return NULL;
  }
#ifdef __linux__
  /* Copy the request so the ioctl never reads memory JS could move or mutate. */
  uint8_t req_copy[NSM_REQUEST_MAX_SIZE];
  memcpy(req_copy, req, req_len);
  uint8_t *resp = (uint8_t *)calloc(1, NSM_RESPONSE_MAX_SIZE);
  if (resp == NULL) return throw_coded(env, "INTERNAL", "nsmRaw: out of memory", ENOMEM, 0, NULL, 0, NULL);
  struct cloister_nsm_raw raw;
  memset(&raw, 0, sizeof raw);
  raw.request.addr = (uint64_t)(uintptr_t)req_copy;
  raw.request.len = (uint64_t)req_len;
  raw.response.addr = (uint64_t)(uintptr_t)resp;
  raw.response.len = NSM_RESPONSE_MAX_SIZE;
  int saved = 0;
  int rc = ioctl_retrying(fd, CLOISTER_NSM_IOCTL_RAW, &raw, &saved);
  if (rc < 0) {
    free(resp);
    return throw_coded(env, saved == EMSGSIZE ? "LIMIT_EXCEEDED" : "ATTESTER_FAILED",
                       "nsmRaw: NSM ioctl failed", saved, 0, NULL, 0, NULL);
  }
  /* The driver writes the response length back into response.len. */
  if (raw.response.len == 0 || raw.response.len > NSM_RESPONSE_MAX_SIZE) {
    free(resp);
    return throw_coded(env, "MALFORMED", "nsmRaw: NSM returned an out-of-range response length", 0,
                       (int64_t)raw.response.len, "responseLength", 0, NULL);
  }
  napi_value out = make_u8(env, resp, (size_t)raw.response.len);
  memset(resp, 0, NSM_RESPONSE_MAX_SIZE);
  free(resp);
  if (out == NULL) napi_throw_error(env, "INTERNAL", "nsmRaw: could not allocate the result");
  return out;
#else
  (void)fd;
  return throw_coded(env, "PLATFORM_UNAVAILABLE", "nsmRaw: only available on Linux", ENOSYS, 0, NULL, 0, NULL);
#endif
}

/* ---- snpGetExtReport(fd, reportData, vmpl, certsBufferLength) ----------------------------- */

static napi_value snp_get_ext_report(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd;
  uint8_t *rd;
  size_t rd_len;
  if (!get_fd_and_bytes(env, info, "snpGetExtReport", "reportData", 64, 4, argv, &fd, &rd, &rd_len)) return NULL;
  int32_t vmpl, certs_len;
  if (!get_int_in_range(env, argv[2], 0, 3, &vmpl)) {
    napi_throw_range_error(env, "INVALID_ARGUMENT", "snpGetExtReport: vmpl must be an integer 0..3");
    return NULL;
  }
  if (!get_int_in_range(env, argv[3], 0, (int32_t)SNP_CERTS_MAX_LEN, &certs_len) || ((uint32_t)certs_len % SNP_PAGE_SIZE) != 0) {
    napi_throw_range_error(env, "INVALID_ARGUMENT",
                           "snpGetExtReport: certsBufferLength must be a multiple of 4096 in 0..1048576");
    return NULL;
  }
#ifdef __linux__
  struct cloister_snp_ext_report_req req;
  memset(&req, 0, sizeof req);
  memcpy(req.data.user_data, rd, 64);
  req.data.vmpl = (uint32_t)vmpl;
  uint8_t *certs = NULL;
  if (certs_len > 0) {
    /* The driver copies whole pages; hand it a zeroed, page-multiple buffer. */
    certs = (uint8_t *)calloc(1, (size_t)certs_len);
    if (certs == NULL) return throw_coded(env, "INTERNAL", "snpGetExtReport: out of memory", ENOMEM, 0, NULL, 0, NULL);
  }
  req.certs_address = (uint64_t)(uintptr_t)certs;
  req.certs_len = (uint32_t)certs_len;
  uint8_t resp[SNP_REPORT_RESP_SIZE];
  memset(resp, 0, sizeof resp);
  struct cloister_snp_guest_request_ioctl io;
  memset(&io, 0, sizeof io);
  io.msg_version = 1; /* must be non-zero (sev-guest.h) */
  io.req_data = (uint64_t)(uintptr_t)&req;
  io.resp_data = (uint64_t)(uintptr_t)resp;
  int saved = 0;
  int rc = ioctl_retrying(fd, CLOISTER_SNP_GET_EXT_REPORT, &io, &saved);
  if (rc < 0) {
    free(certs);
    if (io.u.err.vmm_error == SNP_GUEST_VMM_ERR_INVALID_LEN) {
      /* The host's certificate blob is larger than our buffer: the driver wrote the needed
       * length back into certs_len (GHCB spec, SNP Extended Guest Request). */
      return throw_coded(env, "CERTS_BUFFER_TOO_SMALL", "snpGetExtReport: certificate buffer too small", saved,
                         (int64_t)req.certs_len, "neededCertsLength", 0, NULL);
    }
    return throw_coded(env, "ATTESTER_FAILED", "snpGetExtReport: SNP_GET_EXT_REPORT ioctl failed", saved,
                       (int64_t)io.u.err.fw_error, "fwError", (int64_t)io.u.err.vmm_error, "vmmError");
  }
  uint32_t status, report_size;
  memcpy(&status, resp, 4);      /* little-endian on every SNP host */
  memcpy(&report_size, resp + 4, 4);
  if (status != 0) {
    free(certs);
    return throw_coded(env, "ATTESTER_FAILED", "snpGetExtReport: firmware returned a non-zero status", 0,
                       (int64_t)status, "status", 0, NULL);
  }
  if (report_size == 0 || report_size > SNP_REPORT_RESP_SIZE - SNP_REPORT_RESP_HEADER) {
    free(certs);
    return throw_coded(env, "MALFORMED", "snpGetExtReport: report_size out of range", 0, (int64_t)report_size,
                       "reportSize", 0, NULL);
  }
  napi_value result, report_v, certs_v;
  report_v = make_u8(env, resp + SNP_REPORT_RESP_HEADER, report_size);
  /* Return the whole buffer we handed in (the certificate table is self-delimiting: it ends
   * with an all-zero entry); the JS side parses it with its own bounds. */
  certs_v = make_u8(env, certs, certs == NULL ? 0 : (size_t)certs_len);
  free(certs);
  if (report_v == NULL || certs_v == NULL || napi_create_object(env, &result) != napi_ok ||
      napi_set_named_property(env, result, "report", report_v) != napi_ok ||
      napi_set_named_property(env, result, "certs", certs_v) != napi_ok) {
    napi_throw_error(env, "INTERNAL", "snpGetExtReport: could not build the result");
    return NULL;
  }
  return result;
#else
  (void)fd;
  return throw_coded(env, "PLATFORM_UNAVAILABLE", "snpGetExtReport: only available on Linux", ENOSYS, 0, NULL, 0,
                     NULL);
#endif
}

/* ---- module ------------------------------------------------------------------------------- */

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"nsmRaw", NULL, nsm_raw, NULL, NULL, NULL, napi_enumerable, NULL},
      {"snpGetExtReport", NULL, snp_get_ext_report, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  napi_value limits, v;
  CHECK(env, napi_create_object(env, &limits));
  CHECK(env, napi_create_uint32(env, NSM_REQUEST_MAX_SIZE, &v));
  CHECK(env, napi_set_named_property(env, limits, "nsmRequestMax", v));
  CHECK(env, napi_create_uint32(env, NSM_RESPONSE_MAX_SIZE, &v));
  CHECK(env, napi_set_named_property(env, limits, "nsmResponseMax", v));
  CHECK(env, napi_create_uint32(env, SNP_CERTS_MAX_LEN, &v));
  CHECK(env, napi_set_named_property(env, limits, "snpCertsMax", v));
  CHECK(env, napi_set_named_property(env, exports, "limits", limits));
  CHECK(env, cloister_crypto_register(env, exports));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
