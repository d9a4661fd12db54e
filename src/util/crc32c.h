/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Go's
 * crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), p): what etcd's
 * HashKV, Hash and `snapshot status` compute. One implementation for mvcc
 * and snapshot/: the SSE4.2 crc32 instruction where the CPU has it (~8x
 * the table), a table otherwise. Thread-safe (snapshot status and hashes
 * run on worker threads). */
#ifndef KETCH_UTIL_CRC32C_H
#define KETCH_UTIL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC of `crc`'s data followed by the n bytes at p (crc 0: none yet). */
uint32_t crc32c_update(uint32_t crc, const void *p, size_t n);

/* The table implementation alone (for tests: both must agree). */
uint32_t crc32c_update_sw(uint32_t crc, const void *p, size_t n);

#endif
