/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire format between idbrokerd and its provider host process (docs/plugin-abi.md, "Process
 * isolation"). A codec with no I/O and no threads, so it can be fuzzed, plus two I/O helpers
 * (provider_proto_read/write) that move whole frames over the channel.
 *
 * A frame is a 16-byte header followed by fields; every integer is little-endian:
 *
 *     u32 len      whole frame, header included, PP_HEADER_BYTES..PP_MAX_FRAME_BYTES
 *     u8  type     enum pp_type
 *     u8  version  PP_VERSION
 *     u16 zero
 *     u64 id       request id: pairs a reply with its request
 *     fields:      u16 tag, u32 n, n bytes
 *
 * A string field carries its bytes and a terminating NUL (n >= 1, byte n-1 is NUL, no other NUL),
 * so a decoded string points straight into the frame. A number field is exactly 8 bytes. Each type
 * allows some tags and requires some; unknown tags, tags the type does not allow, a repeated tag
 * (but PP_T_ANNOTATION), a bad kind, trailing bytes or an odd number of annotations make the frame
 * invalid. Both ends are the same binary (the host is idbrokerd re-executed), so the format is
 * strict rather than extensible; PP_VERSION changes with any change.
 */
#ifndef IDB_BROKER_PROVIDER_PROTO_H
#define IDB_BROKER_PROVIDER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <idbroker/provider.h>

#define PP_VERSION 1
#define PP_HEADER_BYTES 16
#define PP_MAX_FRAME_BYTES (1024 * 1024)
#define PP_MAX_ANNOTATION_STRINGS 512 /* key and value each count */

enum pp_type {
    PP_INIT = 1,       /* broker -> host, first frame: log level/format, plugin dir, limits */
    PP_LOAD = 2,       /* broker -> host: load provider (name, conf) */
    PP_LOADED = 3,     /* host -> broker: code, and error or metadata */
    PP_ISSUE = 4,      /* broker -> host: one issue() call */
    PP_RESULT = 5,     /* host -> broker: the answer to PP_ISSUE */
    PP_VIA = 6,        /* host -> broker: a plugin's host->issue_via() */
    PP_VIA_RESULT = 7, /* broker -> host: the answer to PP_VIA */
    PP_SET_LOG = 8,    /* broker -> host: new log level and format (reload) */
    PP_INIT_OK = 9,    /* host -> broker: the answer to PP_INIT; no fields */
    /* A plugin's upstream limiter calls (host API 1.1), served by the broker's limiters, which are
     * the node's: */
    PP_UP_LIMITS = 10,  /* host -> broker: upstream_limits(); answered by PP_UP_RESULT */
    PP_UP_ACQUIRE = 11, /* host -> broker: upstream_acquire(); answered by PP_UP_RESULT */
    PP_UP_RELEASE = 12, /* host -> broker: upstream_release(); no answer */
    PP_UP_RESULT = 13,  /* broker -> host: code, and hint_ms for an acquire */
    _PP_TYPE_MAX,
};

enum pp_tag {
    PP_T_PROVIDER = 1,
    PP_T_RESOURCE,
    PP_T_IDENTITY_NAME,
    PP_T_IDENTITY_NAMESPACE,
    PP_T_IDENTITY_TYPE, /* number: int */
    PP_T_CLIENT_ID,
    PP_T_RESOURCE_ID,
    PP_T_TENANT_ID,
    PP_T_AD_ENDPOINT,
    PP_T_AD_RESOURCE_ID,
    PP_T_SECRET_NAME,
    PP_T_SECRET_NAMESPACE,
    PP_T_ANNOTATION,  /* repeated: key, value, key, value ... */
    PP_T_DEADLINE_MS, /* number: CLOCK_MONOTONIC ms (one clock for the whole machine) */
    PP_T_CODE,        /* number: int <= 0 */
    PP_T_ACCESS_TOKEN,
    PP_T_EXPIRES_ON,     /* number */
    PP_T_NOT_BEFORE,     /* number */
    PP_T_EXT_EXPIRES_IN, /* number */
    PP_T_TOKEN_CLIENT_ID,
    PP_T_UPSTREAM_STATUS, /* number: 0..999 */
    PP_T_UPSTREAM_ERROR,
    PP_T_RETRY_AFTER, /* number: uint32 */
    PP_T_CONF,
    PP_T_DIR,
    PP_T_ERROR,
    PP_T_VERSION,
    PP_T_ABI_MAJOR, /* number: uint32 */
    PP_T_ABI_MINOR, /* number: uint32 */
    PP_T_PATH,
    PP_T_LOG_LEVEL,  /* number: 0..7 */
    PP_T_LOG_FORMAT, /* number: 0..1 */
    PP_T_TIMEOUT_MS, /* number: uint32 */
    PP_T_MAX_CALLS,  /* number: uint32, >= 1 */
    PP_T_UPSTREAM,
    PP_T_MAX_CONCURRENT, /* number: uint32 */
    PP_T_MAX_PER_SECOND, /* number: uint32 */
    PP_T_HINT_MS,        /* number: uint32 */
    _PP_TAG_MAX,
};

/* A decoded frame. Strings point into the frame it was decoded from (borrowed: valid as long as
 * that buffer is). */
struct pp_msg {
    enum pp_type type;
    uint64_t id;
    uint64_t present; /* bit (1 << tag) for each tag seen */
    const char *str[_PP_TAG_MAX];
    uint64_t num[_PP_TAG_MAX];
    const char *annotations[PP_MAX_ANNOTATION_STRINGS + 1]; /* NULL-terminated */
    size_t n_annotations;
};

/* Validates a frame header; returns the whole frame's length (PP_HEADER_BYTES..PP_MAX_FRAME_BYTES)
 * or -EBADMSG (bad length, version or reserved bits). The caller then reads len - PP_HEADER_BYTES
 * more bytes. */
int provider_proto_frame_length(const uint8_t hdr[PP_HEADER_BYTES]);

/* Decodes frame[0..len) into *ret (written only on success; strings borrowed from frame). Returns 0
 * or -EBADMSG when anything is off (see the header comment). Never reads outside frame[0..len). */
int provider_proto_decode(const uint8_t *frame, size_t len, struct pp_msg *ret);

/* Whether m carries tag. */
bool provider_proto_has(const struct pp_msg *m, enum pp_tag tag);

/*
 * Encoders. Each returns a new frame (*ret_frame, malloc'ed, exactly *ret_len bytes; the caller
 * frees it, after explicit_bzero() when it holds a token) and 0, or -E2BIG when the frame would
 * pass PP_MAX_FRAME_BYTES (or more than PP_MAX_ANNOTATION_STRINGS annotations), -EINVAL on bad
 * arguments, -ENOMEM. NULL strings are left out. The frame is sized before it is written, so a
 * token is never copied by realloc.
 */
int provider_proto_encode_init(uint64_t id, int log_level, int log_format, const char *plugin_dir,
                               uint32_t timeout_ms, uint32_t max_calls, uint8_t **ret_frame,
                               size_t *ret_len);
int provider_proto_encode_init_ok(uint8_t **ret_frame, size_t *ret_len);
int provider_proto_encode_set_log(int log_level, int log_format, uint8_t **ret_frame,
                                  size_t *ret_len);
int provider_proto_encode_load(uint64_t id, const char *name, const char *conf, uint8_t **ret_frame,
                               size_t *ret_len);
/* code < 0: error (borrowed, may be NULL) says why; code >= 0: version (may be NULL), abi and path.
 */
int provider_proto_encode_loaded(uint64_t id, int code, const char *error, const char *version,
                                 uint32_t abi_major, uint32_t abi_minor, const char *path,
                                 uint8_t **ret_frame, size_t *ret_len);
/* type is PP_ISSUE or PP_VIA. req's 1.0 fields are sent; req->resource must not be NULL. */
int provider_proto_encode_request(enum pp_type type, uint64_t id, const char *provider,
                                  const struct idb_token_req *req, uint8_t **ret_frame,
                                  size_t *ret_len);
/* type is PP_RESULT or PP_VIA_RESULT. code >= 0 sends the token fields of tok, code < 0 the error
 * fields (upstream_status, upstream_error, retry_after_s). code > 0 is sent as 0. */
int provider_proto_encode_result(enum pp_type type, uint64_t id, int code,
                                 const struct idb_token *tok, uint8_t **ret_frame, size_t *ret_len);

/* Upstream limiter calls and their answer. */
int provider_proto_encode_up_limits(uint64_t id, const char *name, uint32_t max_concurrent,
                                    uint32_t max_per_second, uint8_t **ret_frame, size_t *ret_len);
int provider_proto_encode_up_acquire(uint64_t id, const char *name, uint64_t deadline_ms,
                                     uint8_t **ret_frame, size_t *ret_len);
int provider_proto_encode_up_release(const char *name, uint8_t **ret_frame, size_t *ret_len);
int provider_proto_encode_up_result(uint64_t id, int code, uint32_t hint_ms, uint8_t **ret_frame,
                                    size_t *ret_len);

/* Fills *ret (all 1.0 fields; strings borrowed from m) from a PP_ISSUE or PP_VIA message. Returns 0
 * or -EBADMSG (wrong type, a number out of range). */
int provider_proto_get_request(const struct pp_msg *m, struct idb_token_req *ret);
/* From a PP_RESULT or PP_VIA_RESULT message: *ret_code (<= 0) and, in *ret, new malloc'ed copies of
 * the strings (access_token, client_id, upstream_error; free access_token with explicit_bzero) and
 * the numbers. ret->size must be set by the caller; the fields it covers are written. Returns 0, or
 * -EBADMSG (wrong type, out of range, a success without a token), -EINVAL (ret->size short of ABI
 * 1.0), -ENOMEM; *ret untouched then. */
int provider_proto_get_result(const struct pp_msg *m, int *ret_code, struct idb_token *ret);

/* Reads one whole frame from fd: returns 0 and *ret_frame (new, malloc'ed; wipe it before free when
 * it may hold a token) and *ret_len, or -ECONNRESET at end of file, -EBADMSG on a bad header,
 * -ETIMEDOUT once deadline_ms (CLOCK_MONOTONIC ms; 0 = none) passes, -ENOMEM, -errno. The frame is
 * not decoded. */
int provider_proto_read(int fd, uint64_t deadline_ms, uint8_t **ret_frame, size_t *ret_len);
/* Writes all of frame[0..len) (MSG_NOSIGNAL). Returns 0, -ETIMEDOUT (SO_SNDTIMEO ran out), -errno.
 * A failure may leave part of the frame written: the channel is unusable afterwards. */
int provider_proto_write(int fd, const uint8_t *frame, size_t len);

#endif
