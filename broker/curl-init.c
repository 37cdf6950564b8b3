/* SPDX-License-Identifier: Apache-2.0 */
#include "curl-init.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int result;

static void init(void)
{
    result = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

int curl_init_once(void)
{
    pthread_once(&once, init);
    return result;
}
