/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the idbroker CNI plugin prints on stdout: the spec's versions, the passed-through result and
 * CNI error objects {"cniVersion","code","msg","details"} (STYLE R22). Only this module and main.c
 * write to stdout; logs never do.
 */
#ifndef IDB_CNI_RESULT_H
#define IDB_CNI_RESULT_H

#include <json-c/json.h>
#include <stdbool.h>

/* The spec's well-known error codes, and ours from 100 on (append-only, like IDB_ERRNO_MAP). */
enum {
    CNI_ERR_INCOMPATIBLE_VERSION = 1,
    CNI_ERR_UNSUPPORTED_FIELD = 2,
    CNI_ERR_UNKNOWN_CONTAINER = 3,
    CNI_ERR_INVALID_ENV = 4,
    CNI_ERR_IO = 5,
    CNI_ERR_DECODE = 6,
    CNI_ERR_INVALID_CONFIG = 7,
    CNI_ERR_TRY_AGAIN = 11,
    CNI_ERR_NOT_AVAILABLE = 50,
    CNI_ERR_INTERNAL = 100, /* unexpected failure, see details */
    CNI_ERR_STATE = 101,    /* the registration could not be written or removed */
    CNI_ERR_CHECK_RULES =
        102, /* CHECK: the pod's nftables elements or idbroker's chains are missing */
    CNI_ERR_CHECK_STATE = 103,  /* CHECK: the pod's registration is missing or differs */
    CNI_ERR_NO_HOST_SIDE = 104, /* no host-side interface carries the pod's traffic */
};

#define CNI_VERSION_LATEST "1.1.0"
#define CNI_ERR_MSG_MAX 256
#define CNI_ERR_DETAILS_MAX 1024

/* A failed command's answer. code 0 = no error recorded. */
struct cni_error {
    unsigned code;
    char msg[CNI_ERR_MSG_MAX];
    char details[CNI_ERR_DETAILS_MAX];
};

/* Records code, msg and printf-formatted details in e (the first failure wins; later calls do not
 * overwrite it). Returns r if r < 0, else -EINVAL, so `return cni_fail(e, ...)` keeps STYLE R5. */
int cni_fail(struct cni_error *e, unsigned code, int r, const char *msg, const char *details_fmt,
             ...) __attribute__((format(printf, 5, 6)));

/* The code for a failed read, write or removal in the state directory (r = -errno): a full disk or
 * quota (-ENOSPC, -EDQUOT) is CNI_ERR_TRY_AGAIN (11: the runtime retries once space is freed),
 * anything else CNI_ERR_STATE. */
unsigned cni_state_error_code(int r);

/* The supported spec versions, NULL-terminated, oldest first. */
extern const char *const cni_supported_versions[];
bool cni_version_supported(const char *v);
/* Compares two "MAJOR.MINOR.PATCH" versions: <0, 0, >0; unparsable versions sort first. */
int cni_version_cmp(const char *a, const char *b);

/* Each returns new JSON text (caller frees) without a trailing newline, or NULL on ENOMEM. */
char *cni_error_json(const struct cni_error *e, const char *version);
char *cni_version_json(const char *version);
/* prevResult (borrowed) printed back unchanged, with "cniVersion" set to `version`. */
char *cni_result_json(struct json_object *prev_result, const char *version);

#endif
