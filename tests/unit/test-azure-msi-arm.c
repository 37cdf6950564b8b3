/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pure part of azure-msi's identity assignment (plugins/azure-msi/arm.c, compiled in): parsing
 * ARM's identity block, the PATCH bodies that add or remove one identity while keeping the others,
 * and the resource ID checks.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../plugins/azure-msi/arm.c"

#include <cmocka.h>

#define SUB "/subscriptions/0000/resourceGroups/rg/providers/"
#define UAI SUB "Microsoft.ManagedIdentity/userAssignedIdentities/"
#define VM SUB "Microsoft.Compute/virtualMachines/vm0"
#define VMSS SUB "Microsoft.Compute/virtualMachineScaleSets/pool"

static int parse(const char *s, struct arm_identity *ret)
{
    return arm_identity_parse(s, strlen(s), ret);
}

static void test_parse(void **state)
{
    (void)state;
    struct arm_identity id;
    assert_int_equal(parse("{\"id\":\"x\",\"identity\":{\"type\":\"SystemAssigned, UserAssigned\","
                           "\"userAssignedIdentities\":{\"" UAI "a\":{\"clientId\":\"c\"},\"" UAI
                           "b\":{}}},\"properties\":{\"provisioningState\":\"Updating\"}}",
                           &id),
                     0);
    assert_true(id.system_assigned);
    assert_int_equal(id.n_user, 2);
    assert_true(arm_identity_has(&id, UAI "a"));
    assert_true(arm_identity_has(&id, SUB "microsoft.managedidentity/userassignedidentities/B"));
    assert_false(arm_identity_has(&id, UAI "c"));
    assert_string_equal(id.provisioning_state, "Updating");
    arm_identity_done(&id);

    /* No identity block at all, or type None. */
    assert_int_equal(parse("{\"id\":\"x\"}", &id), 0);
    assert_false(id.system_assigned);
    assert_int_equal(id.n_user, 0);
    assert_null(id.provisioning_state);
    arm_identity_done(&id);
    assert_int_equal(parse("{\"identity\":{\"type\":\"None\"}}", &id), 0);
    assert_int_equal(id.n_user, 0);
    arm_identity_done(&id);

    /* Not a resource. */
    assert_int_equal(parse("[]", &id), -EBADMSG);
    assert_int_equal(parse("{\"identity\":1}", &id), -EBADMSG);
    assert_int_equal(parse("{\"identity\":{\"userAssignedIdentities\":[]}}", &id), -EBADMSG);
    assert_int_equal(parse("{\"identity\":{\"type\":5}}", &id), -EBADMSG);
    assert_int_equal(parse("{} trailing", &id), -EBADMSG);
    assert_int_equal(parse("{\"properties\":{\"provisioningState\":1}}", &id), -EBADMSG);
    assert_int_equal(arm_identity_parse("{}", 2, &id), 0);
    arm_identity_done(&id);
}

/* The PATCH body as a parsed identity, for comparisons independent of key order. */
static void body_identity(const char *body, const char **ret_type, struct json_object **ret_users,
                          struct json_object **ret_root)
{
    struct json_object *root = json_tokener_parse(body), *ident = NULL, *type = NULL;
    assert_non_null(root);
    assert_int_equal(json_object_object_length(root), 1); /* nothing but the identity block */
    assert_true(json_object_object_get_ex(root, "identity", &ident));
    assert_true(json_object_object_get_ex(ident, "type", &type));
    *ret_type = json_object_get_string(type);
    *ret_users = NULL;
    json_object_object_get_ex(ident, "userAssignedIdentities", ret_users);
    *ret_root = root;
}

static void test_patch_add(void **state)
{
    (void)state;
    struct arm_identity id;
    assert_int_equal(parse("{\"identity\":{\"type\":\"SystemAssigned, UserAssigned\","
                           "\"userAssignedIdentities\":{\"" UAI "kubelet\":{}}}}",
                           &id),
                     0);
    char *body = NULL;
    assert_int_equal(arm_patch_add(&id, UAI "pod", &body), 0);
    const char *type;
    struct json_object *users, *root, *v;
    body_identity(body, &type, &users, &root);
    assert_string_equal(type, "SystemAssigned, UserAssigned");
    assert_int_equal(json_object_object_length(users), 2);
    assert_true(json_object_object_get_ex(users, UAI "kubelet", &v));
    assert_true(json_object_object_get_ex(users, UAI "pod", &v));
    json_object_put(root);
    free(body);
    arm_identity_done(&id);

    /* A VM without identities: UserAssigned only. */
    assert_int_equal(parse("{}", &id), 0);
    assert_int_equal(arm_patch_add(&id, UAI "pod", &body), 0);
    body_identity(body, &type, &users, &root);
    assert_string_equal(type, "UserAssigned");
    assert_int_equal(json_object_object_length(users), 1);
    json_object_put(root);
    free(body);
    arm_identity_done(&id);
}

static void test_patch_remove(void **state)
{
    (void)state;
    struct arm_identity id;
    assert_int_equal(
        parse("{\"identity\":{\"type\":\"UserAssigned\",\"userAssignedIdentities\":{\"" UAI
              "kubelet\":{},\"" UAI "pod\":{}}}}",
              &id),
        0);
    char *body = NULL;
    const char *type;
    struct json_object *users, *root, *v;
    assert_int_equal(arm_patch_remove(&id, UAI "POD", &body), 0);
    body_identity(body, &type, &users, &root);
    assert_string_equal(type, "UserAssigned");
    assert_true(json_object_object_get_ex(users, UAI "pod", &v));
    assert_null(v); /* null: remove */
    assert_true(json_object_object_get_ex(users, UAI "kubelet", &v));
    assert_true(json_object_is_type(v, json_type_object)); /* kept */
    json_object_put(root);
    free(body);
    arm_identity_done(&id);

    /* The last user-assigned identity: the type drops UserAssigned. */
    assert_int_equal(parse("{\"identity\":{\"type\":\"SystemAssigned, UserAssigned\","
                           "\"userAssignedIdentities\":{\"" UAI "pod\":{}}}}",
                           &id),
                     0);
    assert_int_equal(arm_patch_remove(&id, UAI "pod", &body), 0);
    body_identity(body, &type, &users, &root);
    assert_string_equal(type, "SystemAssigned");
    assert_null(users);
    json_object_put(root);
    free(body);
    arm_identity_done(&id);
    assert_int_equal(parse("{\"identity\":{\"type\":\"UserAssigned\","
                           "\"userAssignedIdentities\":{\"" UAI "pod\":{}}}}",
                           &id),
                     0);
    assert_int_equal(arm_patch_remove(&id, UAI "pod", &body), 0);
    body_identity(body, &type, &users, &root);
    assert_string_equal(type, "None");
    json_object_put(root);
    free(body);
    arm_identity_done(&id);
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(arm_identity_id_valid(UAI "my-id_1.(x)"));
    assert_false(arm_identity_id_valid(UAI));
    assert_false(arm_identity_id_valid(UAI "a/b"));
    assert_false(arm_identity_id_valid(UAI "a?b"));
    assert_false(arm_identity_id_valid(UAI "a b"));
    assert_false(arm_identity_id_valid(SUB "../x/userAssignedIdentities/a"));
    assert_false(arm_identity_id_valid("/x/" UAI "a"));
    assert_false(arm_identity_id_valid(VM));
    assert_false(arm_identity_id_valid(NULL));

    char *n = NULL;
    assert_int_equal(arm_node_resource(VM, &n), 0);
    assert_string_equal(n, VM);
    free(n);
    assert_int_equal(arm_node_resource(VMSS "/virtualMachines/3", &n), 0);
    assert_string_equal(n, VMSS);
    free(n);
    assert_int_equal(arm_node_resource(VMSS, &n), 0);
    assert_string_equal(n, VMSS);
    free(n);
    assert_int_equal(arm_node_resource(VMSS "/virtualMachines/3/extra", &n), -EINVAL);
    assert_int_equal(arm_node_resource(VMSS "/other/3", &n), -EINVAL);
    assert_int_equal(arm_node_resource(VM "/extensions/x", &n), -EINVAL);
    assert_int_equal(arm_node_resource(VM "?api-version=1", &n), -EINVAL);
    assert_int_equal(arm_node_resource(SUB "Microsoft.Web/sites/x", &n), -EINVAL);
    assert_int_equal(arm_node_resource(UAI "a", &n), -EINVAL);

    const char *md = "{\"compute\":{\"resourceId\":\"" VM "\",\"name\":\"vm0\"}}";
    assert_int_equal(arm_instance_resource_id(md, strlen(md), &n), 0);
    assert_string_equal(n, VM);
    free(n);
    assert_int_equal(arm_instance_resource_id("{\"compute\":{}}", 14, &n), -EBADMSG);
    assert_int_equal(arm_instance_resource_id("nope", 4, &n), -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_patch_add),
        cmocka_unit_test(test_patch_remove),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
