/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The provider host process (THREATS T19): `idbrokerd --provider-host 3`, started by the broker's
 * provider client (provider-client.h) with one end of a socketpair as fd 3. It loads the providers
 * the broker names with the broker's own loader (plugin-loader.h) and host API (host-api.h: log
 * lines go to the inherited stderr with the [provider:<name>] prefix, HTTP runs here through
 * libcurl), runs each issue() on a thread of its own (at most max_calls at once per provider; more
 * are refused with IDB_E_UPSTREAM_UNAVAILABLE), and sends host->issue_via() requests back to the
 * broker, whose cache serves them.
 *
 * A crash here costs the calls in flight, never the broker. The host exits when its channel ends
 * (the broker stopped, or closed it): cleanly (providers destroyed) when no call is running, with
 * _exit(0) otherwise, since a provider's state cannot be destroyed under a running issue(). It dies
 * with the broker (PR_SET_PDEATHSIG), ignores SIGHUP/SIGINT/SIGTERM (its life is the channel's),
 * and leaves SIGSEGV, SIGBUS, SIGFPE and SIGILL at their defaults so that a crashing provider ends
 * the process at once, whatever a sanitizer runtime would otherwise do.
 */
#ifndef IDB_BROKER_PROVIDER_HOST_H
#define IDB_BROKER_PROVIDER_HOST_H

/* Runs the host on channel fd (taken). Returns the process's exit status: 0 after a clean stop,
 * 1 on a protocol error or when the first frame is not PP_INIT. */
int provider_host_main(int fd);

#endif
