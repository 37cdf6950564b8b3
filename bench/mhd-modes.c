/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The serving-model comparison of bench/mhd-modes.sh: libmicrohttpd answering every request with a
 * fixed 1.3 kB body (copied per reply, as the broker does), in one of its threading modes, so the
 * cost of the mode itself can be measured apart from the broker's handler.
 * Usage: mhd-modes MODE PORT, MODE one of tpc-select, tpc-poll, epoll, epoll-pool (one epoll thread
 * per core).
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char body[1300];

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req_cls)
{
    static int seen;
    (void)cls, (void)url, (void)method, (void)version, (void)upload, (void)upload_size;
    if (!*req_cls) { /* answer once the request is complete, as the broker does (keep-alive) */
        *req_cls = &seen;
        return MHD_YES;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof(body), body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s tpc-select|tpc-poll|epoll|epoll-pool PORT\n", argv[0]);
        return 2;
    }
    memset(body, 'x', sizeof(body));
    unsigned flags, pool = 0;
    if (strcmp(argv[1], "tpc-select") == 0)
        flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
    else if (strcmp(argv[1], "tpc-poll") == 0)
        flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    else if (strcmp(argv[1], "epoll") == 0)
        flags = MHD_USE_EPOLL_INTERNAL_THREAD;
    else if (strcmp(argv[1], "epoll-pool") == 0) {
        flags = MHD_USE_EPOLL_INTERNAL_THREAD;
        pool = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    } else
        return 2;
    unsigned long port = strtoul(argv[2], NULL, 10);
    struct MHD_Daemon *d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle, NULL,
                                            MHD_OPTION_THREAD_POOL_SIZE, pool,
                                            MHD_OPTION_CONNECTION_LIMIT, 1024, MHD_OPTION_END);
    if (!d)
        return 1;
    pause();
    MHD_stop_daemon(d);
    return 0;
}
