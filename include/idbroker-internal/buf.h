/* SPDX-License-Identifier: Apache-2.0 */
/* A growable byte buffer with a hard cap (STYLE R11; curl's dynbuf). Always NUL-terminated. */
#ifndef IDBROKER_INTERNAL_BUF_H
#define IDBROKER_INTERNAL_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* NUL-terminated when non-NULL */
    size_t len;
    size_t alloc;
    size_t max; /* len never exceeds max */
};

void buf_init(struct buf *b, size_t max);
/* Frees the contents, not the struct; the buffer is empty and reusable afterwards. */
void buf_done(struct buf *b);
/* Empties the buffer, keeping its memory. */
void buf_reset(struct buf *b);
/* Appends n bytes. Returns -E2BIG (buffer unchanged) past max, -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Reads fd to EOF. Returns -E2BIG if more than max bytes arrive, -errno on read errors. */
int buf_read_fd(struct buf *b, int fd);
/* Returns a new string formatted like printf, or NULL when out of memory. */
char *strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Returns the data (returns new, caller frees; "" for an empty buffer) and empties the buffer. */
char *buf_steal(struct buf *b);

#endif
