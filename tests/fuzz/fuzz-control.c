/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Feeds arbitrary bytes to control_handle_message() (broker/control.c) with a small op table, as
 * root and as another user. Every input must give one well-formed reply: a JSON object with
 * version, ok and, on failure, a negative code.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <idbroker/ctl-proto.h>

#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>

#include "control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int op_echo(void *ud, struct json_object *req, struct json_object **ret_result,
                   char **ret_error)
{
    (void)ud;
    (void)ret_error;
    *ret_result = json_object_get(req);
    return 0;
}

static int op_fail(void *ud, struct json_object *req, struct json_object **ret_result,
                   char **ret_error)
{
    (void)ud;
    (void)ret_result;
    const char *msg = json_get_str(req, "message");
    if (msg)
        *ret_error = strdup(msg);
    return (int)json_get_int(req, "code", -EINVAL) < 0 ? (int)json_get_int(req, "code", -EINVAL)
                                                       : -EINVAL;
}

static const struct control_op ops[] = {
    {"echo", op_echo, 0},
    {"fail", op_fail, 0},
    {"token", op_echo, 1},
    {NULL, NULL, 0},
};

static void check(char *reply)
{
    if (!reply)
        return; /* out of memory */
    size_t len = strlen(reply);
    if (len == 0 || reply[len - 1] != '\n')
        abort();
    struct json_object *o = NULL;
    if (json_parse_strict(reply, len, &o, NULL) < 0 || !json_object_is_type(o, json_type_object))
        abort();
    if (json_get_int(o, "version", 0) != IDB_CTL_VERSION)
        abort();
    if (!json_get_bool(o, "ok", false) &&
        (json_get_int(o, "code", 0) >= 0 || !json_get_str(o, "error")))
        abort();
    json_object_put(o);
    free(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        log_setup(IDB_LOG_ERR, LOG_FORMAT_TEXT, 2);
        init = 1;
    }
    if (size > IDB_CTL_MAX_REQUEST)
        return 0;
    check(control_handle_message(ops, NULL, (const char *)data, size, 0));
    check(control_handle_message(ops, NULL, (const char *)data, size, 1000));
    return 0;
}
