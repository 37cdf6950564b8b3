/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One logging API for the broker, idbrokerctl and the CNI plugin (STYLE R15). Levels are syslog's.
 * Output is one line per record on the configured fd (stderr by default), JSON
 * ({"ts","level","msg",...}) or plain text. Never log tokens, secrets or keys (STYLE R10).
 * Thread-safe: each record is one write(2). The log_*_errno() forms return the (negative) error
 * they were given, so `return log_error_errno(r, ...)`.
 */
#ifndef IDBROKER_INTERNAL_LOG_H
#define IDBROKER_INTERNAL_LOG_H

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>

#include <idbroker/provider.h>

enum log_format {
    LOG_FORMAT_JSON,
    LOG_FORMAT_TEXT,
};

/* Returns a static message for r (< 0): idbroker's own codes, otherwise strerror(-r). */
const char *idb_strerror(int r);

/* Configures the log. fd is borrowed (not closed). Safe to call again (e.g. on reload). */
void log_setup(int max_level, enum log_format format, int fd);
int log_get_max_level(void);
/* "err", "warning", "notice", "info", "debug" (and "error", "warn") -> level; -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);
/* "json" | "text" -> format; -EINVAL otherwise. */
int log_format_from_string(const char *s);

/* Writes one record; `fields` (borrowed, may be NULL) adds keys to JSON records and k=v pairs to
 * text ones. Returns -abs(error) if error != 0, else 0. */
int log_full(int level, int error, struct json_object *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int log_fullv(int level, int error, struct json_object *fields, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

/* A field of a record; value NULL = left out. raw: value is a JSON number, written unquoted. */
struct log_field {
    const char *key;
    const char *value;
    int raw;
};

/* Like log_full with string fields, but writes the record straight into one stack buffer with no
 * JSON object built: for records on hot paths (the audit record of every token). Fields that do not
 * fit in the record's cap are left out. */
int log_fields(int level, const struct log_field *fields, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_at(level, ...) log_full((level), 0, NULL, __VA_ARGS__)
#define log_debug(...) log_at(IDB_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(IDB_LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_at(IDB_LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_at(IDB_LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_at(IDB_LOG_ERR, __VA_ARGS__)
#define log_debug_errno(r, ...) log_full(IDB_LOG_DEBUG, (r), NULL, __VA_ARGS__)
#define log_info_errno(r, ...) log_full(IDB_LOG_INFO, (r), NULL, __VA_ARGS__)
#define log_warning_errno(r, ...) log_full(IDB_LOG_WARNING, (r), NULL, __VA_ARGS__)
#define log_error_errno(r, ...) log_full(IDB_LOG_ERR, (r), NULL, __VA_ARGS__)

#endif
