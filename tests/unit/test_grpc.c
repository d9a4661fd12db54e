/* Unit tests for the I/O-free parts of src/grpc: grpc-timeout parsing,
 * grpc-message percent-encoding, the method table and grpc-go's
 * UNIMPLEMENTED texts, the byte buffer. The HTTP/2 side is tested with
 * real clients in tests/integration/test_grpc_layer.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc/grpc_int.h"

static void test_timeout_parse(void **state)
{
#define T(s) grpc_timeout_parse_ms(s, strlen(s))
    assert_int_equal(T("100m"), 100);
    assert_int_equal(T("5S"), 5000);
    assert_int_equal(T("2M"), 120000);
    assert_int_equal(T("1H"), 3600000);
    assert_int_equal(T("1000000u"), 1000);
    assert_int_equal(T("1500u"), 2);  /* rounded up */
    assert_int_equal(T("30n"), 1);    /* never 0 for a positive timeout */
    assert_int_equal(T("0m"), 0);
    assert_int_equal(T("99999999S"), 99999999000LL);
    assert_int_equal(T("123456789S"), -1); /* at most 8 digits */
    assert_int_equal(T("m"), -1);
    assert_int_equal(T("10"), -1);
    assert_int_equal(T("10x"), -1);
    assert_int_equal(T("-1S"), -1);
    assert_int_equal(T(""), -1);
#undef T
}

static void test_message_encode(void **state)
{
    char *s = grpc_message_encode("etcdserver: key not found");
    assert_string_equal(s, "etcdserver: key not found");
    free(s);
    s = grpc_message_encode("100% \xc3\xbc\n");
    assert_string_equal(s, "100%25 %C3%BC%0A");
    free(s);
}

static const grpc_method methods[] = {
    {"/etcdserverpb.KV/Range", GRPC_UNARY, NULL, NULL},
    {"/etcdserverpb.KV/Put", GRPC_UNARY, NULL, NULL},
    {"/etcdserverpb.Watch/Watch", GRPC_STREAM, NULL, NULL},
};

static void test_methods(void **state)
{
    struct grpc_method_table t;
    assert_int_equal(grpc_methods_init(&t, methods, 3), 0);
    const char *p = "/etcdserverpb.KV/Put";
    assert_ptr_equal(grpc_methods_find(&t, p, strlen(p)), &methods[1]);
    p = "/etcdserverpb.Watch/Watch";
    assert_ptr_equal(grpc_methods_find(&t, p, strlen(p)), &methods[2]);
    p = "/etcdserverpb.KV/Pu";
    assert_null(grpc_methods_find(&t, p, strlen(p)));
    p = "/etcdserverpb.KV/Puts";
    assert_null(grpc_methods_find(&t, p, strlen(p)));

    char buf[256];
    grpc_methods_unknown_text(&t, "/etcdserverpb.KV/Bar", buf, sizeof buf);
    assert_string_equal(buf, "unknown method Bar for service etcdserverpb.KV");
    grpc_methods_unknown_text(&t, "/etcdserverpb.Foo/Range", buf, sizeof buf);
    assert_string_equal(buf, "unknown service etcdserverpb.Foo");
    grpc_methods_unknown_text(&t, "/etcdserverpb.K/Range", buf, sizeof buf);
    assert_string_equal(buf, "unknown service etcdserverpb.K");
    grpc_methods_unknown_text(&t, "nonsense", buf, sizeof buf);
    assert_string_equal(buf, "malformed method name: \"nonsense\"");
    grpc_methods_free(&t);
}

static void test_buf(void **state)
{
    uint8_t inl[8];
    struct grpc_buf b;
    grpc_buf_init(&b, inl, sizeof inl);
    assert_int_equal(grpc_buf_append(&b, "abcd", 4), 0);
    assert_ptr_equal(b.p, inl);
    assert_int_equal(grpc_buf_append(&b, "efghijkl", 8), 0);
    assert_ptr_not_equal(b.p, inl);
    assert_memory_equal(b.p, "abcdefghijkl", 12);
    grpc_buf_consume(&b, 5);
    assert_int_equal(b.len, 7);
    assert_memory_equal(b.p, "fghijkl", 7);
    grpc_buf_free(&b);
    assert_ptr_equal(b.p, inl);
    assert_int_equal(b.cap, sizeof inl);
    assert_int_equal(b.len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timeout_parse),
        cmocka_unit_test(test_message_encode),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_buf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
