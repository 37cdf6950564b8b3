/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>

#define LOG_MAX_RECORD 8192

static atomic_int log_max_level = IDB_LOG_INFO;
static atomic_int log_format_cur = LOG_FORMAT_JSON;
static atomic_int log_fd = STDERR_FILENO;

static const char *const level_names[] = {
    [0] = "emerg",
    [1] = "alert",
    [2] = "crit",
    [IDB_LOG_ERR] = "error",
    [IDB_LOG_WARNING] = "warning",
    [IDB_LOG_NOTICE] = "notice",
    [IDB_LOG_INFO] = "info",
    [IDB_LOG_DEBUG] = "debug",
};

void log_setup(int max_level, enum log_format format, int fd)
{
    atomic_store(&log_max_level, max_level);
    atomic_store(&log_format_cur, (int)format);
    atomic_store(&log_fd, fd);
}

int log_get_max_level(void)
{
    return atomic_load(&log_max_level);
}

int log_level_from_string(const char *s)
{
    static const struct {
        const char *name;
        int level;
    } map[] = {
        {"err", IDB_LOG_ERR},      {"error", IDB_LOG_ERR},     {"warning", IDB_LOG_WARNING},
        {"warn", IDB_LOG_WARNING}, {"notice", IDB_LOG_NOTICE}, {"info", IDB_LOG_INFO},
        {"debug", IDB_LOG_DEBUG},
    };
    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < ELEMENTSOF(map); i++)
        if (strcasecmp(s, map[i].name) == 0)
            return map[i].level;
    return -EINVAL;
}

const char *log_level_to_string(int level)
{
    if (level < 0 || level > IDB_LOG_DEBUG)
        return "unknown";
    return level_names[level];
}

int log_format_from_string(const char *s)
{
    if (s && strcasecmp(s, "json") == 0)
        return LOG_FORMAT_JSON;
    if (s && strcasecmp(s, "text") == 0)
        return LOG_FORMAT_TEXT;
    return -EINVAL;
}

static void format_time(char *out, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += k;
        n -= (size_t)k;
    }
}

int log_fullv(int level, int error, struct json_object *fields, const char *fmt, va_list ap)
{
    int ret = error == 0 ? 0 : (error < 0 ? error : -error);
    if (level > atomic_load(&log_max_level))
        return ret;

    char msg[LOG_MAX_RECORD / 2];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    char ts[40];
    format_time(ts, sizeof(ts));

    struct buf b;
    buf_init(&b, LOG_MAX_RECORD);
    if (atomic_load(&log_format_cur) == LOG_FORMAT_JSON) {
        _cleanup_json_ struct json_object *o = json_object_new_object();
        if (!o)
            return ret;
        json_add_str(o, "ts", ts);
        json_add_str(o, "level", log_level_to_string(level));
        json_add_str(o, "msg", msg);
        if (error != 0)
            json_add_str(o, "error", idb_strerror(ret));
        if (fields) {
            json_object_object_foreach(fields, k, v)
                json_object_object_add(o, k, json_object_get(v));
        }
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE);
        if (buf_puts(&b, s) < 0)
            buf_puts(&b, "{\"level\":\"error\",\"msg\":\"log record too large\"}");
    } else {
        buf_printf(&b, "%s %s %s", ts, log_level_to_string(level), msg);
        if (error != 0)
            buf_printf(&b, ": %s", idb_strerror(ret));
        if (fields) {
            json_object_object_foreach(fields, k, v)
                buf_printf(&b, " %s=%s", k,
                           json_object_is_type(v, json_type_string)
                               ? json_object_get_string(v)
                               : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        }
    }
    if (b.data) {
        buf_append(&b, "\n", 1);
        if (b.data[b.len - 1] != '\n')
            b.data[b.len - 1] = '\n';
        write_all(atomic_load(&log_fd), b.data, b.len);
    }
    buf_done(&b);
    return ret;
}

int log_full(int level, int error, struct json_object *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = log_fullv(level, error, fields, fmt, ap);
    va_end(ap);
    return r;
}

/* Appends "key":"value" (JSON) or " key=value" (text) at *p if it fits before end. */
static void put_field(char **p, char *end, bool json, const char *key, const char *value, bool raw)
{
    size_t klen, vlen;
    size_t kesc = json_escaped_len(key, &klen), vesc = json_escaped_len(value, &vlen);
    size_t need = json ? kesc + vesc + 6 : klen + vlen + 2;
    if ((size_t)(end - *p) < need + 1)
        return;
    char *q = *p;
    if (json) {
        *q++ = ',';
        *q++ = '"';
        q = json_escape_to(q, key, klen, kesc);
        *q++ = '"';
        *q++ = ':';
        if (!raw)
            *q++ = '"';
        q = json_escape_to(q, value, vlen, vesc);
        if (!raw)
            *q++ = '"';
    } else {
        *q++ = ' ';
        memcpy(q, key, klen);
        q += klen;
        *q++ = '=';
        memcpy(q, value, vlen);
        q += vlen;
    }
    *p = q;
}

int log_fields(int level, const struct log_field *fields, size_t n, const char *fmt, ...)
{
    if (level > atomic_load(&log_max_level))
        return 0;
    char msg[LOG_MAX_RECORD / 4], ts[40], line[LOG_MAX_RECORD];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    format_time(ts, sizeof(ts));
    bool json = atomic_load(&log_format_cur) == LOG_FORMAT_JSON;
    char *p = line, *end = line + sizeof(line) - 2; /* room for '}' and '\n' */
    if (json) {
        p += snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                      log_level_to_string(level));
        size_t mlen, mesc = json_escaped_len(msg, &mlen);
        if ((size_t)(end - p) > mesc + 1)
            p = json_escape_to(p, msg, mlen, mesc);
        *p++ = '"';
    } else
        p += snprintf(line, sizeof(line), "%s %s %s", ts, log_level_to_string(level), msg);
    for (size_t i = 0; i < n; i++)
        if (fields[i].key && fields[i].value)
            put_field(&p, end, json, fields[i].key, fields[i].value, fields[i].raw);
    if (json)
        *p++ = '}';
    *p++ = '\n';
    write_all(atomic_load(&log_fd), line, (size_t)(p - line));
    return 0;
}
