/* util/: CRC-32C (crc32c.h) and the byte-order helpers (endian.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/crc32c.h"
#include "util/endian.h"

/* Known values: "123456789" is the check value of every CRC catalogue;
 * the 32-byte ones are RFC 3720's (iSCSI, B.4), which lists the CRC's
 * bytes as sent, least significant first. */
static void test_crc32c_vectors(void **state)
{
    (void)state;
    uint8_t zeros[32] = {0}, ones[32], inc[32], dec[32];
    memset(ones, 0xff, sizeof ones);
    for (int i = 0; i < 32; i++) inc[i] = (uint8_t)i, dec[i] = (uint8_t)(31 - i);
    uint32_t (*fns[])(uint32_t, const void *, size_t) = {crc32c_update, crc32c_update_sw};
    for (size_t f = 0; f < 2; f++) {
        assert_int_equal(fns[f](0, "123456789", 9), 0xE3069283u);
        assert_int_equal(fns[f](0, zeros, 32), 0x8A9136AAu);
        assert_int_equal(fns[f](0, ones, 32), 0x62A8AB43u);
        assert_int_equal(fns[f](0, inc, 32), 0x46DD794Eu);
        assert_int_equal(fns[f](0, dec, 32), 0x113FDB5Cu);
        assert_int_equal(fns[f](0, "", 0), 0);
        /* Go's crc32.Update: feeding in pieces gives the same CRC */
        assert_int_equal(fns[f](fns[f](0, "1234", 4), "56789", 5), 0xE3069283u);
    }
}

/* The SSE4.2 path (when the CPU has it) and the table agree at every
 * length and alignment (the instruction takes 8 bytes, then the rest). */
static void test_crc32c_paths_agree(void **state)
{
    (void)state;
    uint8_t buf[1100];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= sizeof buf; n += n < 40 ? 1 : 97) {
            uint32_t a = crc32c_update(0xDEADBEEFu, buf + off, n);
            assert_int_equal(a, crc32c_update_sw(0xDEADBEEFu, buf + off, n));
        }
}

static void test_endian(void **state)
{
    (void)state;
    uint8_t b[9] = {0};
    put_be64(b + 1, 0x0102030405060708ull);
    assert_memory_equal(b + 1, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    assert_true(get_be64(b + 1) == 0x0102030405060708ull);
    put_le64(b + 1, 0x0102030405060708ull);
    assert_memory_equal(b + 1, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
    assert_true(get_le64(b + 1) == 0x0102030405060708ull);
    put_be32(b + 1, 0xA1B2C3D4u);
    assert_memory_equal(b + 1, "\xA1\xB2\xC3\xD4", 4);
    assert_int_equal(get_be32(b + 1), 0xA1B2C3D4u);
    put_le32(b + 1, 0xA1B2C3D4u);
    assert_memory_equal(b + 1, "\xD4\xC3\xB2\xA1", 4);
    assert_int_equal(get_le32(b + 1), 0xA1B2C3D4u);
    put_be16(b + 1, 0xBEEF);
    assert_memory_equal(b + 1, "\xBE\xEF", 2);
    assert_int_equal(get_be16(b + 1), 0xBEEF);
    put_le16(b + 1, 0xBEEF);
    assert_memory_equal(b + 1, "\xEF\xBE", 2);
    assert_int_equal(get_le16(b + 1), 0xBEEF);
    /* big endian sorts as the numbers do (mvcc's LMDB keys) */
    uint8_t x[8], y[8];
    put_be64(x, 255);
    put_be64(y, 256);
    assert_true(memcmp(x, y, 8) < 0);
    /* the top bit survives (no sign extension) */
    put_be64(x, UINT64_MAX - 1);
    assert_true(get_be64(x) == UINT64_MAX - 1);
    put_le32(x, 0x80000000u);
    assert_int_equal(get_le32(x), 0x80000000u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_crc32c_paths_agree),
        cmocka_unit_test(test_endian),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
