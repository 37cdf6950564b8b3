/* SPDX-License-Identifier: Apache-2.0 */
/*
 * idbroker — the chained CNI plugin (DESIGN §6, STYLE R22). Reads CNI_* from the environment and
 * the network configuration from stdin, runs one command from the table below, and prints its
 * result or a CNI error object on stdout. Logs go to stderr or logFile, never to stdout. Exit
 * status 0 on success, 1 on error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <idbroker-internal/buf.h>
#include <idbroker-internal/json-util.h>
#include <idbroker-internal/log.h>
#include <idbroker-internal/macro.h>

#include "cmd.h"
#include "cni-result.h"
#include "conf.h"

/* Each command, and the first spec version that has it (older configs are refused, as libcni and
 * the reference plugins' skel do). */
static const struct {
    const char *name;
    cmd_fn fn;
    const char *since;
} commands[] = {
    {"ADD", cmd_add, "0.3.0"}, {"DEL", cmd_del, "0.3.0"},       {"CHECK", cmd_check, "0.4.0"},
    {"GC", cmd_gc, "1.1.0"},   {"STATUS", cmd_status, "1.1.0"},
};

static int print_line(const char *text)
{
    if (fputs(text, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) == EOF)
        return -EIO;
    return 0;
}

static int print_error(const struct cni_error *e, const char *version)
{
    _cleanup_free_ char *text = cni_error_json(e, version);
    if (text)
        (void)print_line(text);
    else
        (void)print_line("{\"code\":100,\"msg\":\"out of memory\"}");
    return EXIT_FAILURE;
}

/* VERSION never fails on its input: it answers with the asked cniVersion when it knows it. */
static int cmd_version(const char *text, size_t len)
{
    const char *version = CNI_VERSION_LATEST;
    _cleanup_json_ struct json_object *o = NULL;
    if (len > 0 && json_parse_strict(text, len, &o, NULL) >= 0 &&
        cni_version_supported(json_get_str(o, "cniVersion")))
        version = json_get_str(o, "cniVersion");
    _cleanup_free_ char *out = cni_version_json(version);
    if (!out || print_line(out) < 0)
        return EXIT_FAILURE;
    return EXIT_SUCCESS;
}

/* Best effort: the cniVersion of an input that failed to parse as a whole, for the error object. */
static const char *guess_version(const char *text, size_t len, struct json_object **keep)
{
    if (json_parse_strict(text, len, keep, NULL) < 0)
        return NULL;
    return json_get_str(*keep, "cniVersion");
}

/* Reads the network configuration from stdin into *in (buf_done() it afterwards). */
static int read_stdin(struct buf *in, struct cni_error *err)
{
    buf_init(in, CONF_MAX_STDIN);
    int r = buf_read_fd(in, STDIN_FILENO);
    if (r < 0) {
        buf_done(in);
        cni_fail(err, r == -E2BIG ? CNI_ERR_DECODE : CNI_ERR_IO, r,
                 "cannot read the network configuration", "stdin: %s",
                 r == -E2BIG ? "more than 1 MiB" : idb_strerror(r));
    }
    return r;
}

/* idbroker --guard: the tables now, for the configuration on stdin (cmd.h: cmd_guard): the plugin's
 * own, or a whole conflist (its idbroker entry, as a runtime would pass it). For a person, a script
 * or a unit, not a runtime: a line on stderr, exit status 0 or 1. */
static int guard_main(void)
{
    struct cni_error err = {0};
    struct buf in;
    struct cni_conf conf;
    bool written = false;
    log_setup(IDB_LOG_WARNING, LOG_FORMAT_TEXT, STDERR_FILENO);
    _cleanup_free_ char *entry = NULL;
    int r = read_stdin(&in, &err);
    if (r >= 0) {
        const char *text = in.data ? in.data : "";
        r = conf_from_list(text, in.len, &entry, &err);
        if (r > 0)
            r = conf_parse(entry, strlen(entry), true, &conf, &err);
        else if (r == 0)
            r = conf_parse(text, in.len, true, &conf, &err);
        buf_done(&in);
    }
    if (r >= 0) {
        r = cmd_guard(&conf, &written, &err);
        conf_done(&conf);
    }
    if (r < 0) {
        fprintf(stderr, "idbroker --guard: %s: %s\n", err.msg, err.details);
        return EXIT_FAILURE;
    }
    if (written)
        fputs("idbroker --guard: installed idbroker's nftables tables (redirect chain and guard)\n",
              stderr);
    return EXIT_SUCCESS;
}

static const char usage[] =
    "Usage: idbroker [--help] [--version] [--guard]\n"
    "\n"
    "The idbroker chained CNI plugin: at ADD it redirects the pod's requests to "
    "169.254.169.254:80\n"
    "(IMDS) to idbrokerd on the node and registers the pod with the broker; DEL, CHECK, GC and "
    "STATUS\n"
    "undo, verify and clean up. A container runtime runs it, not a person: the command comes in\n"
    "CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS, VERSION), the pod in CNI_CONTAINERID, CNI_NETNS,\n"
    "CNI_IFNAME and CNI_ARGS, and the network configuration (with prevResult) on stdin. It prints "
    "a\n"
    "CNI result or error object on stdout.\n"
    "\n"
    "Install it in the runtime's CNI bin directory (/opt/cni/bin) and add it after the primary\n"
    "plugin in the conflist, e.g. {\"type\": \"idbroker\"}. CNI spec versions 0.3.0 to 1.1.0.\n"
    "\n"
    "idbroker --guard  installs idbroker's nftables tables (the redirect chain and the guard that\n"
    "                  drops pod traffic to the metadata address) now, from the conflist (or the\n"
    "                  plugin's network configuration) on stdin, so a node is fail-closed before\n"
    "                  its first ADD (deploy/install-cni.sh and idbroker-guard.service run it).\n"
    "                  Tables already current are left alone.\n"
    "\n"
    "Try by hand:  echo '{\"cniVersion\":\"1.1.0\"}' | CNI_COMMAND=VERSION idbroker\n"
    "Docs: docs/cni.md (every key of the plugin's configuration), docs/troubleshooting.md\n";

int main(int argc, char **argv)
{
    if (argc > 1) {
        if (streq(argv[1], "--help") || streq(argv[1], "-h")) {
            fputs(usage, stdout);
            return EXIT_SUCCESS;
        }
        if (streq(argv[1], "--guard") && argc == 2)
            return guard_main();
        if (streq(argv[1], "--version") || streq(argv[1], "-V")) {
            printf("idbroker CNI plugin %s (CNI spec 0.3.0 to %s)\n", IDB_VERSION,
                   CNI_VERSION_LATEST);
            return EXIT_SUCCESS;
        }
        fprintf(stderr, "idbroker: unknown argument '%s'\n\n%s", argv[1], usage);
        return 2;
    }

    struct cni_env env = {
        .command = getenv("CNI_COMMAND"),
        .container_id = getenv("CNI_CONTAINERID"),
        .netns = getenv("CNI_NETNS"),
        .ifname = getenv("CNI_IFNAME"),
        .args = getenv("CNI_ARGS"),
        .path = getenv("CNI_PATH"),
    };
    struct cni_error err = {0};
    log_setup(IDB_LOG_INFO, LOG_FORMAT_JSON, STDERR_FILENO);

    if (!env.command || !*env.command) {
        cni_fail(&err, CNI_ERR_INVALID_ENV, -EINVAL, "missing environment variable",
                 "CNI_COMMAND is not set");
        fputs("idbroker: this is a CNI plugin, run by a container runtime with CNI_COMMAND set and "
              "the "
              "network configuration on stdin; see 'idbroker --help'\n",
              stderr);
        return print_error(&err, NULL);
    }

    struct buf in;
    int r = read_stdin(&in, &err);
    if (r < 0)
        return print_error(&err, NULL);
    const char *text = in.data ? in.data : "";

    if (streq(env.command, "VERSION")) {
        r = cmd_version(text, in.len);
        buf_done(&in);
        return r;
    }

    cmd_fn fn = NULL;
    const char *since = NULL;
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (streq(env.command, commands[i].name)) {
            fn = commands[i].fn;
            since = commands[i].since;
        }
    if (!fn) {
        buf_done(&in);
        cni_fail(&err, CNI_ERR_INVALID_ENV, -EINVAL, "invalid environment variable",
                 "unknown CNI_COMMAND '%.32s'", env.command);
        return print_error(&err, NULL);
    }

    struct cni_conf conf;
    r = conf_parse(text, in.len, true, &conf, &err);
    if (r < 0) {
        _cleanup_json_ struct json_object *partial = NULL;
        const char *version = guess_version(text, in.len, &partial);
        buf_done(&in);
        return print_error(&err, version);
    }
    buf_done(&in);
    if (cni_version_cmp(conf.cni_version, since) < 0) {
        cni_fail(&err, CNI_ERR_INCOMPATIBLE_VERSION, -EPROTONOSUPPORT,
                 "config version does not allow this command", "%s needs cniVersion %s or later",
                 env.command, since);
        int rc = print_error(&err, conf.cni_version);
        conf_done(&conf);
        return rc;
    }

    _cleanup_close_ int log_fd = -1;
    if (conf.log_file[0]) {
        log_fd = open(conf.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (log_fd < 0) {
            int e = -errno;
            log_warning_errno(e, "cannot open logFile '%s': %s, logging to stderr", conf.log_file,
                              idb_strerror(e));
        }
    }
    log_setup(conf.log_level, LOG_FORMAT_JSON, log_fd >= 0 ? log_fd : STDERR_FILENO);

    char *out = NULL;
    r = fn(&env, &conf, &out, &err);
    if (r < 0) {
        if (!err.code)
            cni_fail(&err, CNI_ERR_INTERNAL, r, "internal error", "%s", idb_strerror(r));
        log_error("%s %s@%s failed: %s: %s", env.command, strna(env.container_id),
                  strna(env.ifname), err.msg, err.details);
        int rc = print_error(&err, conf.cni_version);
        conf_done(&conf);
        return rc;
    }
    r = out ? print_line(out) : 0;
    free(out);
    conf_done(&conf);
    return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
