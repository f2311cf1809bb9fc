/* NAL_BUFFER functions (every one, with zero-size and full cases) and the
 * NAL_encode_* / NAL_decode_* serialisation functions, including short
 * input and output. No server needed. */
#include <string.h>
#include <libnal/nal.h>
#include "check.h"

static void test_buffer_basics(void)
{
    NAL_BUFFER *b = NAL_BUFFER_new();
    unsigned char out[64];
    CHECK(b != NULL);
    /* A fresh buffer has size 0: empty and full at once. */
    CHECK(NAL_BUFFER_size(b) == 0);
    CHECK(NAL_BUFFER_empty(b));
    CHECK(NAL_BUFFER_full(b));
    CHECK(!NAL_BUFFER_notempty(b));
    CHECK(!NAL_BUFFER_notfull(b));
    CHECK(NAL_BUFFER_write(b, (const unsigned char *)"x", 1) == 0);
    CHECK(NAL_BUFFER_read(b, out, sizeof(out)) == 0);
    /* Size limits: 0..32768 (nal_compat.c has the 0 and shrink cases). */
    CHECK(NAL_BUFFER_set_size(b, 0) && NAL_BUFFER_size(b) == 0);
    CHECK(!NAL_BUFFER_set_size(b, 32769));
    CHECK(NAL_BUFFER_set_size(b, 32768));
    CHECK(NAL_BUFFER_size(b) == 32768);
    CHECK(NAL_BUFFER_set_size(b, 10));
    CHECK(NAL_BUFFER_size(b) == 10);
    CHECK(NAL_BUFFER_empty(b) && NAL_BUFFER_notfull(b));
    CHECK(NAL_BUFFER_used(b) == 0 && NAL_BUFFER_unused(b) == 10);

    /* Write more than fits: partial write, then full. */
    CHECK(NAL_BUFFER_write(b, (const unsigned char *)"0123456789abc", 13) == 10);
    CHECK(NAL_BUFFER_full(b) && !NAL_BUFFER_notfull(b));
    CHECK(NAL_BUFFER_notempty(b) && !NAL_BUFFER_empty(b));
    CHECK(NAL_BUFFER_used(b) == 10 && NAL_BUFFER_unused(b) == 0);
    CHECK(NAL_BUFFER_write(b, (const unsigned char *)"z", 1) == 0);
    CHECK(memcmp(NAL_BUFFER_data(b), "0123456789", 10) == 0);
    /* Growing keeps the data. */
    CHECK(NAL_BUFFER_set_size(b, 20));
    CHECK(memcmp(NAL_BUFFER_data(b), "0123456789", 10) == 0);
    CHECK(NAL_BUFFER_unused(b) == 10);

    /* Reads take from the front. */
    CHECK(NAL_BUFFER_read(b, out, 4) == 4);
    CHECK(memcmp(out, "0123", 4) == 0);
    CHECK(NAL_BUFFER_used(b) == 6);
    CHECK(memcmp(NAL_BUFFER_data(b), "456789", 6) == 0);
    /* Read with NULL storage discards. */
    CHECK(NAL_BUFFER_read(b, NULL, 2) == 2);
    CHECK(memcmp(NAL_BUFFER_data(b), "6789", 4) == 0);
    CHECK(NAL_BUFFER_read(b, out, 100) == 4);
    CHECK(memcmp(out, "6789", 4) == 0);
    CHECK(NAL_BUFFER_empty(b));
    CHECK(NAL_BUFFER_read(b, out, 100) == 0);
    /* Zero-length operations. */
    CHECK(NAL_BUFFER_write(b, (const unsigned char *)"abc", 0) == 0);
    CHECK(NAL_BUFFER_write(b, NULL, 0) == 0);
    CHECK(NAL_BUFFER_write(b, NULL, 5) == 0);
    CHECK(NAL_BUFFER_read(b, out, 0) == 0);

    /* reset drops data, keeps the size. */
    NAL_BUFFER_write(b, (const unsigned char *)"abc", 3);
    NAL_BUFFER_reset(b);
    CHECK(NAL_BUFFER_empty(b) && NAL_BUFFER_size(b) == 20);
    NAL_BUFFER_free(b);
}

static void test_write_ptr(void)
{
    NAL_BUFFER *b = NAL_BUFFER_new();
    unsigned char *p;
    CHECK(NAL_BUFFER_set_size(b, 8));
    NAL_BUFFER_write(b, (const unsigned char *)"ab", 2);
    p = NAL_BUFFER_write_ptr(b);
    CHECK(p != NULL);
    CHECK(p == NAL_BUFFER_data(b) + 2);
    memcpy(p, "cdef", 4);
    NAL_BUFFER_wrote(b, 4);
    CHECK(NAL_BUFFER_used(b) == 6);
    CHECK(memcmp(NAL_BUFFER_data(b), "abcdef", 6) == 0);
    /* wrote() beyond the free space is clamped. */
    p = NAL_BUFFER_write_ptr(b);
    memcpy(p, "gh", NAL_BUFFER_unused(b));
    NAL_BUFFER_wrote(b, 100);
    CHECK(NAL_BUFFER_full(b) && NAL_BUFFER_used(b) == 8);
    CHECK(memcmp(NAL_BUFFER_data(b), "abcdefgh", 8) == 0);
    NAL_BUFFER_wrote(b, 0);
    CHECK(NAL_BUFFER_used(b) == 8);
    NAL_BUFFER_free(b);
}

static void test_transfer(void)
{
    NAL_BUFFER *a = NAL_BUFFER_new(), *b = NAL_BUFFER_new();
    CHECK(NAL_BUFFER_set_size(a, 4) && NAL_BUFFER_set_size(b, 10));
    NAL_BUFFER_write(b, (const unsigned char *)"0123456789", 10);
    /* Limited by the destination's space. */
    CHECK(NAL_BUFFER_transfer(a, b, 100) == 4);
    CHECK(memcmp(NAL_BUFFER_data(a), "0123", 4) == 0);
    CHECK(memcmp(NAL_BUFFER_data(b), "456789", 6) == 0);
    /* Destination full. */
    CHECK(NAL_BUFFER_transfer(a, b, 100) == 0);
    NAL_BUFFER_reset(a);
    /* Limited by max. */
    CHECK(NAL_BUFFER_transfer(a, b, 2) == 2);
    CHECK(memcmp(NAL_BUFFER_data(b), "6789", 4) == 0);
    /* Limited by the source's data. */
    NAL_BUFFER_reset(a);
    NAL_BUFFER_read(b, NULL, 3);
    CHECK(NAL_BUFFER_transfer(a, b, 100) == 1);
    CHECK(NAL_BUFFER_data(a)[0] == '9');
    CHECK(NAL_BUFFER_empty(b));
    CHECK(NAL_BUFFER_transfer(a, b, 100) == 0);
    /* Same buffer both sides is refused. */
    CHECK(NAL_BUFFER_transfer(a, a, 100) == 0);
    NAL_BUFFER_free(a);
    NAL_BUFFER_free(b);
}

static void test_null_args(void)
{
    CHECK(NAL_BUFFER_size(NULL) == 0);
    CHECK(NAL_BUFFER_used(NULL) == 0);
    CHECK(NAL_BUFFER_unused(NULL) == 0);
    CHECK(!NAL_BUFFER_empty(NULL) && !NAL_BUFFER_full(NULL));
    CHECK(!NAL_BUFFER_notempty(NULL) && !NAL_BUFFER_notfull(NULL));
    CHECK(!NAL_BUFFER_set_size(NULL, 10));
    CHECK(NAL_BUFFER_data(NULL) == NULL);
    CHECK(NAL_BUFFER_write_ptr(NULL) == NULL);
    CHECK(NAL_BUFFER_write(NULL, (const unsigned char *)"a", 1) == 0);
    CHECK(NAL_BUFFER_read(NULL, NULL, 1) == 0);
    CHECK(NAL_BUFFER_transfer(NULL, NULL, 1) == 0);
    NAL_BUFFER_wrote(NULL, 1);
    NAL_BUFFER_reset(NULL);
    NAL_BUFFER_free(NULL);
}

static void test_codec(void)
{
    unsigned char store[16];
    unsigned char *w = store;
    unsigned int wlen = 11;
    const unsigned char *r;
    unsigned int rlen;
    unsigned long u32;
    unsigned int u16;
    unsigned char c, bin[4];

    memset(store, 0xEE, sizeof(store));
    CHECK(NAL_encode_uint32(&w, &wlen, 0x01020304UL));
    CHECK(w == store + 4 && wlen == 7);
    CHECK(NAL_encode_uint16(&w, &wlen, 0xA0B0));
    CHECK(NAL_encode_char(&w, &wlen, 0x7F));
    CHECK(NAL_encode_bin(&w, &wlen, (const unsigned char *)"xyz", 3));
    CHECK(w == store + 10 && wlen == 1);
    /* Short output: nothing written, cursor unchanged. */
    CHECK(!NAL_encode_uint16(&w, &wlen, 0x1111));
    CHECK(!NAL_encode_uint32(&w, &wlen, 1));
    CHECK(!NAL_encode_bin(&w, &wlen, (const unsigned char *)"ab", 2));
    CHECK(w == store + 10 && wlen == 1 && store[10] == 0xEE);
    CHECK(NAL_encode_bin(&w, &wlen, NULL, 0));
    CHECK(w == store + 10 && wlen == 1);
    CHECK(NAL_encode_char(&w, &wlen, 0x42));
    CHECK(wlen == 0 && !NAL_encode_char(&w, &wlen, 1));
    CHECK(memcmp(store, "\x01\x02\x03\x04\xA0\xB0\x7Fxyz\x42", 11) == 0);
    CHECK(store[11] == 0xEE);

    r = store;
    rlen = 11;
    CHECK(NAL_decode_uint32(&r, &rlen, &u32) && u32 == 0x01020304UL);
    CHECK(r == store + 4 && rlen == 7);
    CHECK(NAL_decode_uint16(&r, &rlen, &u16) && u16 == 0xA0B0);
    CHECK(NAL_decode_char(&r, &rlen, &c) && c == 0x7F);
    CHECK(NAL_decode_bin(&r, &rlen, bin, 3) && memcmp(bin, "xyz", 3) == 0);
    CHECK(rlen == 1);
    /* Short input: failure, cursor and value unchanged. */
    u32 = 99;
    u16 = 99;
    CHECK(!NAL_decode_uint32(&r, &rlen, &u32) && u32 == 99);
    CHECK(!NAL_decode_uint16(&r, &rlen, &u16) && u16 == 99);
    CHECK(!NAL_decode_bin(&r, &rlen, bin, 2));
    CHECK(r == store + 10 && rlen == 1);
    CHECK(NAL_decode_bin(&r, &rlen, bin, 0) && rlen == 1);
    CHECK(NAL_decode_char(&r, &rlen, &c) && c == 0x42 && rlen == 0);
    CHECK(!NAL_decode_char(&r, &rlen, &c));

    /* Values wider than the wire size keep their low bits. */
    w = store;
    wlen = 6;
    CHECK(NAL_encode_uint16(&w, &wlen, 0x12345678));
    CHECK(store[0] == 0x56 && store[1] == 0x78);
    CHECK(NAL_encode_uint32(&w, &wlen, 0xFFFFFFFFUL));
    r = store + 2;
    rlen = 4;
    CHECK(NAL_decode_uint32(&r, &rlen, &u32) && u32 == 0xFFFFFFFFUL);

    /* NULL arguments fail cleanly. */
    r = store;
    rlen = 4;
    CHECK(!NAL_decode_uint32(NULL, &rlen, &u32));
    CHECK(!NAL_decode_uint32(&r, NULL, &u32));
    CHECK(!NAL_decode_uint32(&r, &rlen, NULL));
    CHECK(!NAL_decode_bin(&r, &rlen, NULL, 2));
    CHECK(!NAL_encode_uint32(NULL, &wlen, 1));
    CHECK(!NAL_encode_bin(&w, &wlen, NULL, 2));
    CHECK(r == store && rlen == 4);
}

int main(void)
{
    test_buffer_basics();
    test_write_ptr();
    test_transfer();
    test_null_args();
    test_codec();
    return check_done("nal_buffer");
}
