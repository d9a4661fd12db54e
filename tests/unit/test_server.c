/* Unit tests of src/server (flags, IDs) and src/util (error table, map). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/config.h"
#include "server/identity.h"
#include "util/errors.h"
#include "util/u64map.h"

/* etcd's defaults: one member "default" at http://localhost:2380, token
 * etcd-cluster, has these IDs (as `etcd` prints them). */
static void test_default_ids_match_etcd(void **state)
{
    struct identity id;
    assert_int_equal(identity_from_cluster(&id, "default=http://localhost:2380", "etcd-cluster",
                                           "default"),
                     0);
    assert_int_equal(id.n_members, 1);
    assert_true(id.members[0].id == 0x8e9e05c52164694dULL);
    assert_true(id.cluster_id == 0xcdf818194e3a8c32ULL);
    identity_free(&id);
}

static void test_three_members(void **state)
{
    struct identity id;
    assert_int_equal(identity_from_cluster(&id,
                                           "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,"
                                           "c=http://127.0.0.1:2382",
                                           "tok", "b"),
                     0);
    assert_int_equal(id.n_members, 3);
    assert_int_equal(id.self, 1);
    assert_true(id.members[0].id != id.members[1].id);
    /* The cluster ID does not depend on the order members are listed in. */
    struct identity id2;
    assert_int_equal(identity_from_cluster(&id2,
                                           "c=http://127.0.0.1:2382,a=http://127.0.0.1:2380,"
                                           "b=http://127.0.0.1:2381",
                                           "tok", "a"),
                     0);
    assert_true(id.cluster_id == id2.cluster_id);
    identity_free(&id);
    identity_free(&id2);
    assert_int_equal(identity_from_cluster(&id, "a=http://x:1", "tok", "zz"), -1);
    assert_int_equal(identity_from_cluster(&id, "a", "tok", "a"), -1);
}

static void test_flags(void **state)
{
    struct config c;
    char *argv1[] = {"ketch", "--name", "n1", "--max-txn-ops=7", "-log-level", "debug", NULL};
    assert_int_equal(config_parse(&c, 6, argv1), 0);
    assert_string_equal(c.name, "n1");
    assert_string_equal(c.data_dir, "n1.ketch");
    assert_string_equal(c.initial_cluster, "n1=http://localhost:2380");
    assert_int_equal(c.max_txn_ops, 7);
    assert_int_equal(c.max_request_bytes, 1572864);
    assert_string_equal(c.log_level, "debug");
    config_free(&c);

    setenv("ETCD_DATA_DIR", "/tmp/envdir", 1);
    char *argv2[] = {"ketch", NULL};
    assert_int_equal(config_parse(&c, 1, argv2), 0);
    assert_string_equal(c.data_dir, "/tmp/envdir");
    config_free(&c);
    char *argv3[] = {"ketch", "--data-dir=/tmp/flagdir", NULL};
    assert_int_equal(config_parse(&c, 2, argv3), 0);
    assert_string_equal(c.data_dir, "/tmp/flagdir"); /* flag beats environment */
    config_free(&c);
    unsetenv("ETCD_DATA_DIR");

    /* no --initial-cluster: name=url for each advertised peer URL, as
     * etcd's InitialClusterFromName */
    char *argv4[] = {"ketch", "--name", "n2", "--initial-advertise-peer-urls",
                     "http://127.0.0.1:2,http://127.0.0.1:1", NULL};
    assert_int_equal(config_parse(&c, 5, argv4), 0);
    assert_string_equal(c.initial_cluster, "n2=http://127.0.0.1:2,n2=http://127.0.0.1:1");
    config_free(&c);

    char *bad1[] = {"ketch", "--no-such-flag", NULL};
    assert_int_equal(config_parse(&c, 2, bad1), 2);
    config_free(&c);
    char *bad2[] = {"ketch", "--max-txn-ops", "many", NULL};
    assert_int_equal(config_parse(&c, 3, bad2), 2);
    config_free(&c);
    char *bad3[] = {"ketch", "--initial-cluster-state", "maybe", NULL};
    assert_int_equal(config_parse(&c, 3, bad3), 2);
    config_free(&c);
}

static void test_urls(void **state)
{
    char *host;
    int port;
    assert_int_equal(config_parse_url("http://127.0.0.1:2379", &host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 2379);
    free(host);
    assert_int_equal(config_parse_url("http://[::1]:23", &host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 23);
    free(host);
    assert_int_equal(config_parse_url("http://nohost", &host, &port), -1);
    assert_int_equal(config_parse_url("http://h:99999", &host, &port), -1);
}

static void test_error_table(void **state)
{
    assert_string_equal(kerr_text(KERR_COMPACTED),
                        "etcdserver: mvcc: required revision has been compacted");
    assert_int_equal(kerr_grpc_status(KERR_COMPACTED), GRPC_OUT_OF_RANGE);
    assert_string_equal(kerr_text(KERR_DUPLICATE_KEY),
                        "etcdserver: duplicate key given in txn request");
    assert_int_equal(kerr_grpc_status(KERR_NO_LEADER), GRPC_UNAVAILABLE);
    assert_string_equal(kerr_text(12345), "ketch: unknown error");
}

static void test_u64map(void **state)
{
    u64map m = {0};
    for (uint64_t k = 1; k <= 5000; k++) assert_int_equal(u64map_put(&m, k * 7919, (void *)(uintptr_t)k), 0);
    assert_int_equal(m.len, 5000);
    for (uint64_t k = 1; k <= 5000; k += 2)
        assert_true(u64map_del(&m, k * 7919) == (void *)(uintptr_t)k);
    for (uint64_t k = 1; k <= 5000; k++) {
        void *v = u64map_get(&m, k * 7919);
        if (k % 2) assert_null(v);
        else assert_true(v == (void *)(uintptr_t)k);
    }
    assert_null(u64map_del(&m, 3));
    u64map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_ids_match_etcd),
        cmocka_unit_test(test_three_members),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_u64map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
