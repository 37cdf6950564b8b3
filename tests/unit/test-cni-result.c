/* SPDX-License-Identifier: Apache-2.0 */
/* cni-result.c: error codes for state-directory failures, first failure wins. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include "cni-result.h"

#include <cmocka.h>

static void test_state_error_code(void **state)
{
    (void)state;
    /* A full disk or quota is temporary: the runtime retries ADD later. */
    assert_int_equal(cni_state_error_code(-ENOSPC), CNI_ERR_TRY_AGAIN);
    assert_int_equal(cni_state_error_code(-EDQUOT), CNI_ERR_TRY_AGAIN);
    assert_int_equal(cni_state_error_code(-EACCES), CNI_ERR_STATE);
    assert_int_equal(cni_state_error_code(-EROFS), CNI_ERR_STATE);
    assert_int_equal(cni_state_error_code(-EIO), CNI_ERR_STATE);
}

static void test_first_failure_wins(void **state)
{
    (void)state;
    struct cni_error e = {0};
    assert_int_equal(cni_fail(&e, cni_state_error_code(-ENOSPC), -ENOSPC, "cannot write",
                              "'%s': %s", "/state", "No space left on device"),
                     -ENOSPC);
    assert_int_equal(cni_fail(&e, CNI_ERR_INTERNAL, -EIO, "later", NULL), -EIO);
    assert_int_equal(e.code, CNI_ERR_TRY_AGAIN);
    assert_string_equal(e.msg, "cannot write");
    assert_string_equal(e.details, "'/state': No space left on device");
    assert_int_equal(cni_fail(NULL, 1, 0, "x", NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_error_code),
        cmocka_unit_test(test_first_failure_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
