/* DC_PLUG over NAL_CONNECTION_create_pair: single and multi-frame messages
 * (built with write + write_more), pipelining, read/write resume, rollback,
 * NOFREE_CONN, bad arguments, and a corrupt stream that fails only the plug
 * receiving it. No server needed. */
#include <stdlib.h>
#include <string.h>
#include <libnal/nal.h>
#include <distcache/dc_plug.h>
#include "check.h"

struct pair {
    NAL_CONNECTION *c1, *c2;
    DC_PLUG *cli, *srv; /* cli: TO_SERVER on c1; srv: server side on c2 */
};

static int make_pair(struct pair *p, unsigned int bufsize)
{
    p->c1 = NAL_CONNECTION_new();
    p->c2 = NAL_CONNECTION_new();
    if (!p->c1 || !p->c2 || !NAL_CONNECTION_create_pair(p->c1, p->c2, bufsize))
        return 0;
    p->cli = DC_PLUG_new(p->c1, DC_PLUG_FLAG_TO_SERVER);
    p->srv = DC_PLUG_new(p->c2, 0);
    return p->cli && p->srv;
}

static void free_pair(struct pair *p)
{
    /* The plugs own their connections. */
    CHECK(DC_PLUG_free(p->cli));
    CHECK(DC_PLUG_free(p->srv));
}

/* One select round; returns non-zero if both plugs' io succeeded. */
static int step(NAL_SELECTOR *sel, DC_PLUG *a, DC_PLUG *b)
{
    int ok = 1;
    if (!DC_PLUG_to_select(a, sel) || !DC_PLUG_to_select(b, sel))
        return 0;
    if (NAL_SELECTOR_select(sel, 100000, 1) < 0)
        return 0;
    if (!DC_PLUG_io(a))
        ok = 0;
    if (!DC_PLUG_io(b))
        ok = 0;
    return ok;
}

/* Wait until `reader` has a complete message; returns 1 and fills out. */
static int wait_read(NAL_SELECTOR *sel, DC_PLUG *writer, DC_PLUG *reader,
                     unsigned long *uid, DC_CMD *cmd,
                     const unsigned char **data, unsigned int *len)
{
    int i;
    for (i = 0; i < 200; i++) {
        if (DC_PLUG_read(reader, 0, uid, cmd, data, len))
            return 1;
        if (!step(sel, writer, reader))
            return 0;
    }
    return 0;
}

static void fill(unsigned char *buf, unsigned int len, unsigned int seed)
{
    unsigned int i;
    for (i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 31 + seed);
}

static void test_multi_frame(NAL_SELECTOR *sel)
{
    struct pair p;
    static unsigned char big[DC_MAX_TOTAL_DATA];
    unsigned long uid;
    DC_CMD cmd;
    const unsigned char *data;
    unsigned int len, off;
    unsigned int sizes[] = { 0, 1, 2047, 2048, 2049, 20000, DC_MAX_TOTAL_DATA };
    unsigned int i;

    /* Buffers smaller than one frame. */
    CHECK(make_pair(&p, 1000));
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill(big, sizes[i], i);
        /* The first 100 bytes with write, the rest in 3000-byte pieces. */
        off = sizes[i] < 100 ? sizes[i] : 100;
        CHECK(DC_PLUG_write(p.cli, 0, 100 + i, DC_CMD_ADD, off ? big : NULL, off));
        while (off < sizes[i]) {
            unsigned int n = sizes[i] - off > 3000 ? 3000 : sizes[i] - off;
            CHECK(DC_PLUG_write_more(p.cli, big + off, n));
            off += n;
        }
        if (sizes[i] == DC_MAX_TOTAL_DATA)
            CHECK(!DC_PLUG_write_more(p.cli, big, 1)); /* 32769: refused */
        CHECK(DC_PLUG_commit(p.cli));
        CHECK(wait_read(sel, p.cli, p.srv, &uid, &cmd, &data, &len));
        CHECK(uid == 100 + i);
        CHECK(cmd == DC_CMD_ADD);
        CHECK(len == sizes[i]);
        CHECK(len == sizes[i] && (len == 0 || memcmp(data, big, len) == 0));
        CHECK(DC_PLUG_consume(p.srv));
    }
    /* And a big answer back. */
    fill(big, 30000, 77);
    CHECK(DC_PLUG_write(p.srv, 0, 0xFFFFFFFFUL, DC_CMD_GET, big, 30000));
    CHECK(DC_PLUG_commit(p.srv));
    CHECK(wait_read(sel, p.srv, p.cli, &uid, &cmd, &data, &len));
    CHECK(uid == 0xFFFFFFFFUL && cmd == DC_CMD_GET && len == 30000);
    CHECK(len == 30000 && memcmp(data, big, len) == 0);
    CHECK(DC_PLUG_consume(p.cli));
    free_pair(&p);
}

static void test_pipelined_and_resume(NAL_SELECTOR *sel)
{
    struct pair p;
    unsigned long uid, uid2;
    DC_CMD cmd, cmd2;
    const unsigned char *data, *data2;
    unsigned int len, len2;
    int i;

    CHECK(make_pair(&p, 4096));
    CHECK(DC_PLUG_write(p.cli, 0, 1, DC_CMD_ADD, (const unsigned char *)"one", 3));
    CHECK(DC_PLUG_commit(p.cli));
    CHECK(DC_PLUG_write(p.cli, 0, 2, DC_CMD_GET, (const unsigned char *)"two", 3));
    CHECK(DC_PLUG_commit(p.cli));
    CHECK(DC_PLUG_write(p.cli, 0, 3, DC_CMD_REMOVE, (const unsigned char *)"three", 5));
    CHECK(DC_PLUG_commit(p.cli));
    CHECK(DC_PLUG_write(p.cli, 0, 4, DC_CMD_HAVE, NULL, 0));
    CHECK(DC_PLUG_commit(p.cli));
    for (i = 0; i < 5; i++)
        step(sel, p.cli, p.srv);

    CHECK(DC_PLUG_read(p.srv, 0, &uid, &cmd, &data, &len));
    CHECK(uid == 1 && cmd == DC_CMD_ADD && len == 3 && memcmp(data, "one", 3) == 0);
    /* Already open: a plain read fails, resume re-opens the same one. */
    CHECK(!DC_PLUG_read(p.srv, 0, &uid2, &cmd2, &data2, &len2));
    CHECK(DC_PLUG_read(p.srv, 1, &uid2, &cmd2, &data2, &len2));
    CHECK(uid2 == 1 && cmd2 == DC_CMD_ADD && data2 == data && len2 == 3);
    CHECK(DC_PLUG_consume(p.srv));
    CHECK(!DC_PLUG_consume(p.srv));
    CHECK(DC_PLUG_read(p.srv, 0, &uid, &cmd, &data, &len));
    CHECK(uid == 2 && cmd == DC_CMD_GET && len == 3 && memcmp(data, "two", 3) == 0);
    CHECK(DC_PLUG_consume(p.srv));
    CHECK(DC_PLUG_read(p.srv, 0, &uid, &cmd, &data, &len));
    CHECK(uid == 3 && cmd == DC_CMD_REMOVE && len == 5);
    CHECK(DC_PLUG_consume(p.srv));
    CHECK(DC_PLUG_read(p.srv, 0, &uid, &cmd, &data, &len));
    CHECK(uid == 4 && cmd == DC_CMD_HAVE && len == 0);
    CHECK(DC_PLUG_consume(p.srv));
    CHECK(!DC_PLUG_read(p.srv, 0, &uid, &cmd, &data, &len));

    /* Write resume replaces the open message. */
    CHECK(DC_PLUG_write(p.srv, 0, 7, DC_CMD_GET, (const unsigned char *)"old", 3));
    CHECK(!DC_PLUG_write(p.srv, 0, 8, DC_CMD_GET, (const unsigned char *)"x", 1));
    CHECK(DC_PLUG_write(p.srv, 1, 9, DC_CMD_HAVE, (const unsigned char *)"ne", 2));
    CHECK(DC_PLUG_write_more(p.srv, (const unsigned char *)"w", 1));
    CHECK(DC_PLUG_commit(p.srv));
    CHECK(wait_read(sel, p.srv, p.cli, &uid, &cmd, &data, &len));
    CHECK(uid == 9 && cmd == DC_CMD_HAVE && len == 3 && memcmp(data, "new", 3) == 0);
    CHECK(DC_PLUG_consume(p.cli));
    free_pair(&p);
}

static void test_rollback(NAL_SELECTOR *sel)
{
    struct pair p;
    unsigned long uid;
    DC_CMD cmd;
    const unsigned char *data;
    unsigned int len;
    int i;

    CHECK(make_pair(&p, 4096));
    CHECK(!DC_PLUG_rollback(p.cli)); /* nothing open */
    CHECK(!DC_PLUG_commit(p.cli));
    CHECK(!DC_PLUG_write_more(p.cli, (const unsigned char *)"x", 1));
    CHECK(DC_PLUG_write(p.cli, 0, 1, DC_CMD_ADD, (const unsigned char *)"dropped", 7));
    CHECK(DC_PLUG_write_more(p.cli, (const unsigned char *)"!", 1));
    CHECK(DC_PLUG_rollback(p.cli));
    CHECK(!DC_PLUG_commit(p.cli));
    CHECK(DC_PLUG_write(p.cli, 0, 2, DC_CMD_HAVE, (const unsigned char *)"kept", 4));
    CHECK(DC_PLUG_commit(p.cli));
    CHECK(wait_read(sel, p.cli, p.srv, &uid, &cmd, &data, &len));
    CHECK(uid == 2 && cmd == DC_CMD_HAVE && len == 4 && memcmp(data, "kept", 4) == 0);
    CHECK(DC_PLUG_consume(p.srv));
    for (i = 0; i < 3; i++)
        step(sel, p.cli, p.srv);
    CHECK(!DC_PLUG_read(p.srv, 0, &uid, &cmd, &data, &len));
    free_pair(&p);
}

static void test_corrupt_stream(NAL_SELECTOR *sel)
{
    struct pair good, bad;
    unsigned long uid;
    DC_CMD cmd;
    const unsigned char *data;
    unsigned int len;
    int i, bad_failed = 0, got = 0;
    static const unsigned char http[] = "GET / HTTP/1.0\r\n\r\n";

    CHECK(make_pair(&good, 4096));
    CHECK(make_pair(&bad, 4096));
    /* Raw bytes behind the client plug's back. */
    CHECK(NAL_BUFFER_write(NAL_CONNECTION_get_send(bad.c1), http, sizeof(http) - 1)
          == sizeof(http) - 1);
    CHECK(DC_PLUG_write(good.cli, 0, 5, DC_CMD_GET, (const unsigned char *)"id", 2));
    CHECK(DC_PLUG_commit(good.cli));
    for (i = 0; i < 20 && !(bad_failed && got); i++) {
        CHECK(DC_PLUG_to_select(good.cli, sel) && DC_PLUG_to_select(good.srv, sel));
        CHECK(DC_PLUG_to_select(bad.cli, sel));
        if (!bad_failed)
            CHECK(DC_PLUG_to_select(bad.srv, sel));
        CHECK(NAL_SELECTOR_select(sel, 100000, 1) >= 0);
        CHECK(DC_PLUG_io(good.cli) && DC_PLUG_io(good.srv) && DC_PLUG_io(bad.cli));
        if (!bad_failed && !DC_PLUG_io(bad.srv))
            bad_failed = 1;
        if (!got && DC_PLUG_read(good.srv, 0, &uid, &cmd, &data, &len))
            got = 1;
    }
    CHECK(bad_failed);
    CHECK(got && uid == 5 && cmd == DC_CMD_GET && len == 2);
    /* Bound to one selector, a plug is refused by another until it leaves
     * the first. */
    {
        NAL_SELECTOR *other = NAL_SELECTOR_new();
        CHECK(other != NULL);
        CHECK(DC_PLUG_to_select(good.cli, sel));
        CHECK(!DC_PLUG_to_select(good.cli, other));
        DC_PLUG_from_select(good.cli);
        CHECK(DC_PLUG_to_select(good.cli, other));
        DC_PLUG_from_select(good.cli);
        NAL_SELECTOR_free(other);
    }
    /* The dead plug keeps failing. */
    CHECK(!DC_PLUG_io(bad.srv));
    CHECK(!DC_PLUG_read(bad.srv, 0, &uid, &cmd, &data, &len));
    CHECK(!DC_PLUG_to_select(bad.srv, sel));
    DC_PLUG_from_select(bad.srv);
    free_pair(&bad);
    free_pair(&good);
}

static void test_wrong_direction(NAL_SELECTOR *sel)
{
    /* Two TO_SERVER plugs: each one's request is the other's protocol error. */
    NAL_CONNECTION *c1 = NAL_CONNECTION_new(), *c2 = NAL_CONNECTION_new();
    DC_PLUG *a, *b;
    int i, failed = 0;
    CHECK(NAL_CONNECTION_create_pair(c1, c2, 4096));
    a = DC_PLUG_new(c1, DC_PLUG_FLAG_TO_SERVER);
    b = DC_PLUG_new(c2, DC_PLUG_FLAG_TO_SERVER);
    CHECK(DC_PLUG_write(a, 0, 1, DC_CMD_HAVE, (const unsigned char *)"x", 1));
    CHECK(DC_PLUG_commit(a));
    for (i = 0; i < 10 && !failed; i++)
        failed = !step(sel, a, b);
    CHECK(failed);
    DC_PLUG_free(a);
    DC_PLUG_free(b);
}

static void test_nofree_and_args(void)
{
    NAL_CONNECTION *c1 = NAL_CONNECTION_new(), *c2 = NAL_CONNECTION_new();
    DC_PLUG *p;
    unsigned long uid;
    DC_CMD cmd;
    const unsigned char *data;
    unsigned int len;
    static unsigned char big[DC_MAX_TOTAL_DATA + 1];

    CHECK(DC_PLUG_new(NULL, 0) == NULL);
    CHECK(NAL_CONNECTION_create_pair(c1, c2, 4096));
    p = DC_PLUG_new(c1, DC_PLUG_FLAG_TO_SERVER | DC_PLUG_FLAG_NOFREE_CONN);
    CHECK(p != NULL);
    /* Bad commands and sizes. */
    CHECK(!DC_PLUG_write(p, 0, 1, DC_CMD_ERROR, NULL, 0));
    CHECK(!DC_PLUG_write(p, 0, 1, (DC_CMD)5, NULL, 0));
    CHECK(!DC_PLUG_write(p, 0, 1, (DC_CMD)-1, NULL, 0));
    CHECK(!DC_PLUG_write(p, 0, 1, DC_CMD_ADD, big, DC_MAX_TOTAL_DATA + 1));
    CHECK(!DC_PLUG_write(p, 0, 1, DC_CMD_ADD, NULL, 5));
    CHECK(DC_PLUG_write(p, 0, 1, DC_CMD_ADD, big, DC_MAX_TOTAL_DATA));
    CHECK(!DC_PLUG_write_more(p, big, 1));
    CHECK(!DC_PLUG_write_more(p, NULL, 1));
    CHECK(DC_PLUG_rollback(p));
    /* NULL everything. */
    CHECK(!DC_PLUG_read(p, 0, NULL, &cmd, &data, &len));
    CHECK(!DC_PLUG_read(p, 0, &uid, NULL, &data, &len));
    CHECK(!DC_PLUG_read(p, 0, &uid, &cmd, NULL, &len));
    CHECK(!DC_PLUG_read(p, 0, &uid, &cmd, &data, NULL));
    CHECK(!DC_PLUG_read(NULL, 0, &uid, &cmd, &data, &len));
    CHECK(!DC_PLUG_free(NULL));
    CHECK(!DC_PLUG_to_select(NULL, NULL));
    CHECK(!DC_PLUG_to_select(p, NULL));
    CHECK(!DC_PLUG_io(NULL));
    CHECK(!DC_PLUG_consume(NULL));
    CHECK(!DC_PLUG_write(NULL, 0, 1, DC_CMD_ADD, NULL, 0));
    CHECK(!DC_PLUG_write_more(NULL, NULL, 0));
    CHECK(!DC_PLUG_commit(NULL));
    CHECK(!DC_PLUG_rollback(NULL));
    DC_PLUG_from_select(NULL);
    /* Not bound to a selector: io fails (as NAL_CONNECTION_io does). */
    CHECK(!DC_PLUG_io(p));
    /* NOFREE_CONN: the connection survives the plug. */
    CHECK(DC_PLUG_free(p));
    CHECK(NAL_CONNECTION_is_established(c1));
    CHECK(NAL_BUFFER_write(NAL_CONNECTION_get_send(c1), (const unsigned char *)"x", 1) == 1);
    NAL_CONNECTION_free(c1);
    NAL_CONNECTION_free(c2);
}

int main(void)
{
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    CHECK(sel != NULL);
    test_multi_frame(sel);
    test_pipelined_and_resume(sel);
    test_rollback(sel);
    test_corrupt_stream(sel);
    test_wrong_direction(sel);
    test_nofree_and_args();
    NAL_SELECTOR_free(sel);
    return check_done("dc_plug");
}
