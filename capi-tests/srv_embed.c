/* A C program embedding DC_SERVER: once with the built-in cache and once
 * with a DC_CACHE_cb written here, each driven through NAL connection pairs
 * with a DC_PLUG (TO_SERVER) on the application end. Time is a fake `now`
 * passed by the test, so expiry is deterministic. Also checks the
 * DC_CACHE_cb layout, caller-driven clients (process_client), dropping of
 * corrupt clients, and bad arguments. No server process needed. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <libnal/nal.h>
#include <distcache/dc_plug.h>
#include <distcache/dc_server.h>
#include "check.h"

/* ---- the application side ---------------------------------------------- */

struct rig {
    NAL_SELECTOR *sel;
    DC_SERVER *srv;
    struct timeval now;
};

static void set_now(struct rig *r, long ms)
{
    r->now.tv_sec = ms / 1000;
    r->now.tv_usec = (ms % 1000) * 1000;
}

/* A new in-server client of r->srv; returns the application's plug. */
static DC_PLUG *connect_client(struct rig *r, DC_CLIENT **out)
{
    NAL_CONNECTION *a = NAL_CONNECTION_new(), *b = NAL_CONNECTION_new();
    DC_CLIENT *c;
    if (!NAL_CONNECTION_create_pair(a, b, 4096))
        return NULL;
    /* The server end is bound once; DC_SERVER_clients_io does its I/O. */
    if (!NAL_CONNECTION_add_to_selector(b, r->sel))
        return NULL;
    c = DC_SERVER_new_client(r->srv, b, DC_CLIENT_FLAG_IN_SERVER);
    if (!c)
        return NULL;
    if (out)
        *out = c;
    return DC_PLUG_new(a, DC_PLUG_FLAG_TO_SERVER);
}

static void step(struct rig *r, DC_PLUG *p)
{
    CHECK(DC_PLUG_to_select(p, r->sel));
    CHECK(NAL_SELECTOR_select(r->sel, 100000, 1) >= 0);
    DC_PLUG_io(p);
    CHECK(DC_SERVER_clients_io(r->srv, &r->now));
}

/* One request, one answer. Returns the answer length (or -1) and copies
 * the answer into out. */
static int call(struct rig *r, DC_PLUG *p, unsigned long uid, DC_CMD cmd,
                const void *payload, unsigned int len, unsigned char *out)
{
    unsigned long ruid;
    DC_CMD rcmd;
    const unsigned char *data;
    unsigned int dlen;
    int i;
    if (!DC_PLUG_write(p, 0, uid, cmd, payload, len) || !DC_PLUG_commit(p))
        return -1;
    for (i = 0; i < 100; i++) {
        step(r, p);
        if (DC_PLUG_read(p, 0, &ruid, &rcmd, &data, &dlen)) {
            CHECK(ruid == uid && rcmd == cmd);
            memcpy(out, data, dlen);
            DC_PLUG_consume(p);
            return (int)dlen;
        }
    }
    return -1;
}

static unsigned int add_payload(unsigned char *buf, unsigned long timeout,
                                const char *id, const unsigned char *data,
                                unsigned int dlen)
{
    unsigned char *p = buf;
    unsigned int left = 8 + 64 + DC_MAX_DATA_LEN;
    unsigned int idlen = (unsigned int)strlen(id);
    NAL_encode_uint32(&p, &left, timeout);
    NAL_encode_uint32(&p, &left, idlen);
    NAL_encode_bin(&p, &left, (const unsigned char *)id, idlen);
    NAL_encode_bin(&p, &left, data, dlen);
    return (unsigned int)(p - buf);
}

static unsigned char reqbuf[8 + 64 + DC_MAX_DATA_LEN];
static unsigned char ans[DC_MAX_DATA_LEN];
static unsigned char sess[DC_MAX_DATA_LEN];

/* The same scenario for any cache. */
static void exercise(struct rig *r, const char *label)
{
    DC_PLUG *p = connect_client(r, NULL);
    unsigned int n;
    unsigned int i;
    CHECK(p != NULL);
    if (!p)
        return;
    for (i = 0; i < sizeof(sess); i++)
        sess[i] = (unsigned char)(i * 7 + 1);
    DC_SERVER_reset_operations(r->srv);
    set_now(r, 1000000);
    /* A multi-frame session of 10000 bytes living 5 s. */
    n = add_payload(reqbuf, 5000, "session-A", sess, 10000);
    CHECK(call(r, p, 1, DC_CMD_ADD, reqbuf, n, ans) == 1 && ans[0] == 0);
    /* Duplicate id: 101. */
    CHECK(call(r, p, 2, DC_CMD_ADD, reqbuf, n, ans) == 1 && ans[0] == 101);
    /* Timeout over 7 days: 102; id over 64 bytes: 103. */
    n = add_payload(reqbuf, DC_MAX_EXPIRY + 1, "x", sess, 10);
    CHECK(call(r, p, 3, DC_CMD_ADD, reqbuf, n, ans) == 1 && ans[0] == 102);
    n = add_payload(reqbuf, 1000,
                    "0123456789012345678901234567890123456789012345678901234567890123456789",
                    sess, 10);
    CHECK(call(r, p, 4, DC_CMD_ADD, reqbuf, n, ans) == 1 && ans[0] == 103);
    CHECK(call(r, p, 5, DC_CMD_GET, "session-A", 9, ans) == 10000);
    CHECK(memcmp(ans, sess, 10000) == 0);
    CHECK(call(r, p, 6, DC_CMD_HAVE, "session-A", 9, ans) == 1 && ans[0] == 0);
    CHECK(call(r, p, 7, DC_CMD_GET, "nope", 4, ans) == 1 && ans[0] == 1);
    n = add_payload(reqbuf, 60000, "session-B", sess + 5, 300);
    CHECK(call(r, p, 8, DC_CMD_ADD, reqbuf, n, ans) == 1 && ans[0] == 0);
    CHECK(DC_SERVER_items_stored(r->srv, &r->now) == 2);
    /* 4.999 s later A is alive, at 5 s it has expired. */
    set_now(r, 1004999);
    CHECK(call(r, p, 9, DC_CMD_HAVE, "session-A", 9, ans) == 1 && ans[0] == 0);
    set_now(r, 1005000);
    CHECK(call(r, p, 10, DC_CMD_HAVE, "session-A", 9, ans) == 1 && ans[0] == 1);
    CHECK(call(r, p, 11, DC_CMD_GET, "session-A", 9, ans) == 1 && ans[0] == 1);
    CHECK(DC_SERVER_items_stored(r->srv, &r->now) == 1);
    CHECK(call(r, p, 12, DC_CMD_GET, "session-B", 9, ans) == 300);
    CHECK(memcmp(ans, sess + 5, 300) == 0);
    CHECK(call(r, p, 13, DC_CMD_REMOVE, "session-B", 9, ans) == 1 && ans[0] == 0);
    CHECK(call(r, p, 14, DC_CMD_REMOVE, "session-B", 9, ans) == 1 && ans[0] == 1);
    CHECK(DC_SERVER_items_stored(r->srv, &r->now) == 0);
    CHECK(DC_SERVER_num_operations(r->srv) == 14);
    DC_SERVER_reset_operations(r->srv);
    CHECK(DC_SERVER_num_operations(r->srv) == 0);
    /* The application hangs up: clients_io drops the client. */
    CHECK(!DC_SERVER_clients_empty(r->srv));
    DC_PLUG_free(p);
    for (i = 0; i < 10 && !DC_SERVER_clients_empty(r->srv); i++) {
        CHECK(NAL_SELECTOR_select(r->sel, 100000, 1) >= 0);
        CHECK(DC_SERVER_clients_io(r->srv, &r->now));
    }
    CHECK(DC_SERVER_clients_empty(r->srv));
    printf("%s: scenario done\n", label);
}

/* ---- a cache written in C ---------------------------------------------- */

struct entry {
    int used;
    unsigned char id[DC_MAX_ID_LEN];
    unsigned int id_len;
    unsigned char *data;
    unsigned int data_len;
    long expiry_ms;
};

struct st_DC_CACHE {
    unsigned int max;
    struct entry *e;
};

static struct {
    int news, frees, adds, gets_len, gets_data, removes, haves, nums;
    long last_now_ms;
} calls;

static long tv_ms(const struct timeval *tv)
{
    return (long)tv->tv_sec * 1000 + tv->tv_usec / 1000;
}

static DC_CACHE *my_new(unsigned int max)
{
    DC_CACHE *c = malloc(sizeof(*c));
    calls.news++;
    if (!c)
        return NULL;
    c->max = max;
    c->e = calloc(max, sizeof(struct entry));
    return c;
}

static void my_free(DC_CACHE *c)
{
    unsigned int i;
    calls.frees++;
    for (i = 0; i < c->max; i++)
        free(c->e[i].data);
    free(c->e);
    free(c);
}

/* Live entry with this id, or NULL; expired ones are dropped on the way. */
static struct entry *lookup(DC_CACHE *c, const struct timeval *now,
                            const unsigned char *id, unsigned int id_len)
{
    unsigned int i;
    calls.last_now_ms = tv_ms(now);
    for (i = 0; i < c->max; i++) {
        struct entry *e = &c->e[i];
        if (!e->used)
            continue;
        if (e->expiry_ms <= tv_ms(now)) {
            free(e->data);
            memset(e, 0, sizeof(*e));
            continue;
        }
        if (e->id_len == id_len && memcmp(e->id, id, id_len) == 0)
            return e;
    }
    return NULL;
}

static int my_add(DC_CACHE *c, const struct timeval *now, unsigned long timeout,
                  const unsigned char *id, unsigned int id_len,
                  const unsigned char *data, unsigned int data_len)
{
    unsigned int i;
    calls.adds++;
    if (lookup(c, now, id, id_len))
        return 0;
    for (i = 0; i < c->max; i++) {
        struct entry *e = &c->e[i];
        if (e->used)
            continue;
        e->data = malloc(data_len);
        if (!e->data)
            return 0;
        e->used = 1;
        memcpy(e->id, id, id_len);
        e->id_len = id_len;
        memcpy(e->data, data, data_len);
        e->data_len = data_len;
        e->expiry_ms = tv_ms(now) + (long)timeout;
        return 1;
    }
    return 0;
}

static unsigned int my_get(DC_CACHE *c, const struct timeval *now,
                           const unsigned char *id, unsigned int id_len,
                           unsigned char *store, unsigned int size)
{
    struct entry *e = lookup(c, now, id, id_len);
    if (!store) {
        calls.gets_len++;
        return e ? e->data_len : 0;
    }
    calls.gets_data++;
    if (!e || size < e->data_len)
        return 0;
    memcpy(store, e->data, e->data_len);
    return e->data_len;
}

static int my_remove(DC_CACHE *c, const struct timeval *now,
                     const unsigned char *id, unsigned int id_len)
{
    struct entry *e = lookup(c, now, id, id_len);
    calls.removes++;
    if (!e)
        return 0;
    free(e->data);
    memset(e, 0, sizeof(*e));
    return 1;
}

static int my_have(DC_CACHE *c, const struct timeval *now,
                   const unsigned char *id, unsigned int id_len)
{
    calls.haves++;
    return lookup(c, now, id, id_len) != NULL;
}

static unsigned int my_num(DC_CACHE *c, const struct timeval *now)
{
    unsigned int i, n = 0;
    calls.nums++;
    lookup(c, now, (const unsigned char *)"", 0);
    for (i = 0; i < c->max; i++)
        n += c->e[i].used ? 1 : 0;
    return n;
}

static const DC_CACHE_cb my_cache = {
    my_new, my_free, my_add, my_get, my_remove, my_have, my_num
};

/* ---- tests ------------------------------------------------------------- */

static void test_layout(void)
{
    const size_t p = sizeof(void (*)(void));
    CHECK(sizeof(DC_CACHE_cb) == 7 * p);
    CHECK(offsetof(DC_CACHE_cb, cache_new) == 0 * p);
    CHECK(offsetof(DC_CACHE_cb, cache_free) == 1 * p);
    CHECK(offsetof(DC_CACHE_cb, cache_add) == 2 * p);
    CHECK(offsetof(DC_CACHE_cb, cache_get) == 3 * p);
    CHECK(offsetof(DC_CACHE_cb, cache_remove) == 4 * p);
    CHECK(offsetof(DC_CACHE_cb, cache_have) == 5 * p);
    CHECK(offsetof(DC_CACHE_cb, cache_num_items) == 6 * p);
}

static void test_default_cache(NAL_SELECTOR *sel)
{
    struct rig r;
    r.sel = sel;
    CHECK(DC_SERVER_set_default_cache());
    r.srv = DC_SERVER_new(1000);
    CHECK(r.srv != NULL);
    if (!r.srv)
        return;
    exercise(&r, "default cache");
    DC_SERVER_free(r.srv);
}

static void test_custom_cache(NAL_SELECTOR *sel)
{
    struct rig r;
    DC_CACHE_cb incomplete = my_cache;
    DC_SERVER *other;
    r.sel = sel;
    incomplete.cache_have = NULL;
    CHECK(!DC_SERVER_set_cache(NULL));
    CHECK(!DC_SERVER_set_cache(&incomplete));
    CHECK(DC_SERVER_set_cache(&my_cache));
    memset(&calls, 0, sizeof(calls));
    r.srv = DC_SERVER_new(100);
    CHECK(r.srv != NULL && calls.news == 1);
    if (!r.srv)
        return;
    exercise(&r, "custom cache");
    /* Every callback was used; get asks for the length first (store NULL). */
    /* ADDs refused by validation (102, 103) never reach the cache. */
    CHECK(calls.adds == 3 && calls.removes == 2 && calls.haves == 3 && calls.nums == 3);
    CHECK(calls.gets_len == 4 && calls.gets_data == 2);
    /* The callbacks saw the caller's clock. */
    CHECK(calls.last_now_ms == 1005000);
    DC_SERVER_free(r.srv);
    CHECK(calls.frees == 1);
    /* The choice applies to servers created later: back to the default. */
    CHECK(DC_SERVER_set_default_cache());
    other = DC_SERVER_new(100);
    CHECK(other != NULL && calls.news == 1);
    DC_SERVER_free(other);
    CHECK(calls.frees == 1);
}

static void test_caller_driven(NAL_SELECTOR *sel)
{
    struct rig r;
    NAL_CONNECTION *a = NAL_CONNECTION_new(), *b = NAL_CONNECTION_new();
    NAL_SELECTOR *mine = NAL_SELECTOR_new();
    DC_CLIENT *c;
    DC_PLUG *p;
    unsigned long uid;
    DC_CMD cmd;
    const unsigned char *data;
    unsigned int len, n;
    int i, got = 0;

    r.sel = sel;
    CHECK(DC_SERVER_set_default_cache());
    r.srv = DC_SERVER_new(64);
    set_now(&r, 500);
    CHECK(NAL_CONNECTION_create_pair(a, b, 4096));
    /* Caller-driven client, and the caller keeps the connection. */
    c = DC_SERVER_new_client(r.srv, b, DC_CLIENT_FLAG_NOFREE_CONN);
    CHECK(c != NULL);
    CHECK(NAL_CONNECTION_add_to_selector(b, mine));
    p = DC_PLUG_new(a, DC_PLUG_FLAG_TO_SERVER);
    n = add_payload(reqbuf, 1000, "k", (const unsigned char *)"value", 5);
    CHECK(DC_PLUG_write(p, 0, 40, DC_CMD_ADD, reqbuf, n) && DC_PLUG_commit(p));
    CHECK(DC_PLUG_write(p, 0, 41, DC_CMD_GET, (const unsigned char *)"k", 1) && DC_PLUG_commit(p));
    for (i = 0; i < 50 && got < 2; i++) {
        CHECK(DC_PLUG_to_select(p, sel));
        CHECK(NAL_SELECTOR_select(sel, 20000, 1) >= 0);
        CHECK(DC_PLUG_io(p));
        CHECK(NAL_SELECTOR_select(mine, 20000, 1) >= 0);
        CHECK(NAL_CONNECTION_io(b));
        CHECK(DC_SERVER_process_client(c, &r.now));
        /* clients_io leaves it alone. */
        CHECK(DC_SERVER_clients_io(r.srv, &r.now));
        while (DC_PLUG_read(p, 0, &uid, &cmd, &data, &len)) {
            if (got == 0)
                CHECK(uid == 40 && cmd == DC_CMD_ADD && len == 1 && data[0] == 0);
            else
                CHECK(uid == 41 && cmd == DC_CMD_GET && len == 5 && !memcmp(data, "value", 5));
            got++;
            DC_PLUG_consume(p);
        }
    }
    CHECK(got == 2);

    CHECK(!DC_SERVER_clients_empty(r.srv));
    CHECK(DC_SERVER_del_client(c));
    CHECK(DC_SERVER_clients_empty(r.srv));
    /* NOFREE_CONN: b is still ours. */
    CHECK(NAL_CONNECTION_is_established(b));
    NAL_CONNECTION_free(b);
    DC_PLUG_free(p);
    NAL_SELECTOR_free(mine);
    DC_SERVER_free(r.srv);
}

static void test_corrupt_client(NAL_SELECTOR *sel)
{
    struct rig r;
    NAL_CONNECTION *a = NAL_CONNECTION_new(), *b = NAL_CONNECTION_new();
    DC_PLUG *good;
    int i;
    static const unsigned char http[] = "GET / HTTP/1.0\r\n\r\n";
    unsigned char out[8];

    r.sel = sel;
    CHECK(DC_SERVER_set_default_cache());
    r.srv = DC_SERVER_new(64);
    set_now(&r, 0);
    good = connect_client(&r, NULL);
    CHECK(NAL_CONNECTION_create_pair(a, b, 4096));
    CHECK(NAL_CONNECTION_add_to_selector(b, sel));
    CHECK(DC_SERVER_new_client(r.srv, b, DC_CLIENT_FLAG_IN_SERVER) != NULL);
    CHECK(NAL_CONNECTION_add_to_selector(a, sel));
    CHECK(NAL_BUFFER_write(NAL_CONNECTION_get_send(a), http, sizeof(http) - 1)
          == sizeof(http) - 1);
    /* The corrupt client goes away (its end sees the close)... */
    for (i = 0; i < 20; i++) {
        CHECK(NAL_SELECTOR_select(sel, 50000, 1) >= 0);
        DC_SERVER_clients_io(r.srv, &r.now);
        if (!NAL_CONNECTION_io(a))
            break;
    }
    CHECK(i < 20);
    /* ...while the good one keeps getting answers. */
    CHECK(call(&r, good, 1, DC_CMD_HAVE, "id", 2, out) == 1 && out[0] == 1);
    NAL_CONNECTION_free(a);
    DC_PLUG_free(good);
    DC_SERVER_free(r.srv); /* frees the remaining in-server client too */
}

static void test_args(void)
{
    struct timeval now = { 0, 0 };
    DC_SERVER *s;
    NAL_CONNECTION *c = NAL_CONNECTION_new();
    CHECK(DC_SERVER_set_default_cache());
    CHECK(DC_SERVER_new(0) == NULL);
    s = DC_SERVER_new(64);
    CHECK(s != NULL);
    DC_SERVER_free(NULL);
    DC_SERVER_reset_operations(NULL);
    CHECK(DC_SERVER_items_stored(NULL, &now) == 0);
    CHECK(DC_SERVER_items_stored(s, NULL) == 0);
    CHECK(DC_SERVER_num_operations(NULL) == 0);
    CHECK(DC_SERVER_new_client(NULL, c, 0) == NULL);
    CHECK(DC_SERVER_new_client(s, NULL, 0) == NULL);
    CHECK(!DC_SERVER_del_client(NULL));
    CHECK(!DC_SERVER_process_client(NULL, &now));
    CHECK(!DC_SERVER_clients_io(NULL, &now));
    CHECK(!DC_SERVER_clients_io(s, NULL));
    CHECK(!DC_SERVER_clients_empty(NULL));
    CHECK(DC_SERVER_clients_empty(s));
    /* process_client needs a clock. */
    {
        DC_CLIENT *cl = DC_SERVER_new_client(s, c, 0);
        CHECK(cl != NULL);
        CHECK(!DC_SERVER_process_client(cl, NULL));
        CHECK(DC_SERVER_process_client(cl, &now)); /* nothing to do */
    }
    DC_SERVER_free(s); /* frees c with its client */
}

int main(void)
{
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    test_layout();
    test_default_cache(sel);
    test_custom_cache(sel);
    test_caller_driven(sel);
    test_corrupt_client(sel);
    test_args();
    NAL_SELECTOR_free(sel);
    return check_done("srv_embed");
}
