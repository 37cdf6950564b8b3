/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcurl's global initialisation, done once and only when a transfer is about to be made. It
 * initialises OpenSSL (config, providers, error strings): ~1.7 MiB of resident memory that a broker
 * which never makes an HTTP call itself (files mode, providers in their own process) does not pay.
 */
#ifndef IDB_BROKER_CURL_INIT_H
#define IDB_BROKER_CURL_INIT_H

/* Runs curl_global_init(CURL_GLOBAL_DEFAULT) the first time; thread-safe. Returns 0, or -EIO if
 * libcurl could not be initialised (every later call returns the same). Call before
 * curl_easy_init(). There is no matching cleanup: the state lives until the process exits. */
int curl_init_once(void);

#endif
