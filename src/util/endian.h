/* Fixed-width integers in a byte order, read from and written to unaligned
 * memory: one load or store and (where the order differs from the CPU's) a
 * byte swap. gcc -O2 does not turn every hand-written byte loop into that
 * (a range's count decoded one record per key that way: a third of its
 * profile), so every on-disk and on-wire encoding goes through these.
 *
 * Big endian: the LMDB keys of mvcc (they must sort as numbers), etcd's
 * bbolt revisions, gRPC's message length, member IDs from a SHA-1.
 * Little endian: bbolt's pages, libraft's handshake, our snapshot trailer
 * and the index prefix of ketchpb.Internal/Propose's reply. */
#ifndef KETCH_UTIL_ENDIAN_H
#define KETCH_UTIL_ENDIAN_H

#include <stdint.h>
#include <string.h>

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ENDIAN_BE16(v) __builtin_bswap16(v)
#define ENDIAN_BE32(v) __builtin_bswap32(v)
#define ENDIAN_BE64(v) __builtin_bswap64(v)
#define ENDIAN_LE16(v) (v)
#define ENDIAN_LE32(v) (v)
#define ENDIAN_LE64(v) (v)
#else
#define ENDIAN_BE16(v) (v)
#define ENDIAN_BE32(v) (v)
#define ENDIAN_BE64(v) (v)
#define ENDIAN_LE16(v) __builtin_bswap16(v)
#define ENDIAN_LE32(v) __builtin_bswap32(v)
#define ENDIAN_LE64(v) __builtin_bswap64(v)
#endif

#define ENDIAN_DEFINE(name, type, swap)                                                \
    static inline type get_##name(const uint8_t *p)                                    \
    {                                                                                  \
        type v;                                                                        \
        memcpy(&v, p, sizeof v);                                                       \
        return (type)swap(v);                                                          \
    }                                                                                  \
    static inline void put_##name(uint8_t *p, type v)                                  \
    {                                                                                  \
        v = (type)swap(v);                                                             \
        memcpy(p, &v, sizeof v);                                                       \
    }

/* get_be16/put_be16 ... get_le64/put_le64: p needs no alignment. */
ENDIAN_DEFINE(be16, uint16_t, ENDIAN_BE16)
ENDIAN_DEFINE(be32, uint32_t, ENDIAN_BE32)
ENDIAN_DEFINE(be64, uint64_t, ENDIAN_BE64)
ENDIAN_DEFINE(le16, uint16_t, ENDIAN_LE16)
ENDIAN_DEFINE(le32, uint32_t, ENDIAN_LE32)
ENDIAN_DEFINE(le64, uint64_t, ENDIAN_LE64)

#undef ENDIAN_DEFINE

#endif
