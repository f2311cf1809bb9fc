/*
 * DC_CTX against a live server (NEEDS-SERVER: the address comes as argv[1]
 * or $DC_TEST_ADDR; capi-tests/run.sh starts our dc_server).
 *
 * - every flag combination: add, duplicate add, get (short buffer + reget),
 *   has, remove, has after remove;
 * - 16 threads hammering ONE persistent DC_CTX (and one per-operation
 *   DC_CTX), each with its own ids, checking every answer and the data of
 *   every hit;
 * - PERSISTENT_PIDCHECK across fork(): the child works on its own
 *   connection and the parent's keeps working afterwards;
 * - timeouts below DC_MIN_TIMEOUT are accepted (raised to a floor).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <libnal/nal.h>
#include <distcache/dc_client.h>
#include "check.h"

static const char *addr;
static int under_valgrind;

static void make_id(unsigned char *id, unsigned int *len, int a, int b, int c)
{
    *len = (unsigned int)snprintf((char *)id, 64, "ctx-live-%d-%d-%d-%ld", a, b, c, (long)getpid());
}

static void make_data(unsigned char *d, unsigned int len, int seed)
{
    unsigned int i;
    for (i = 0; i < len; i++)
        d[i] = (unsigned char)(seed * 31 + i * 7 + 1);
}

static void basic(unsigned int flags, int tag)
{
    DC_CTX *ctx = DC_CTX_new(addr, flags);
    unsigned char id[64], data[3000], out[3000], tiny[4];
    unsigned int id_len, used = 0;

    CHECK(ctx != NULL);
    if (!ctx)
        return;
    make_id(id, &id_len, tag, (int)flags, 0);
    make_data(data, sizeof(data), tag);
    CHECK(DC_CTX_has_session(ctx, id, id_len) == 0);
    CHECK(DC_CTX_add_session(ctx, id, id_len, data, sizeof(data), 60000) == 1);
    /* A live session with the same id is refused. */
    CHECK(DC_CTX_add_session(ctx, id, id_len, data, 10, 60000) == 0);
    CHECK(DC_CTX_has_session(ctx, id, id_len) == 1);
    CHECK(DC_CTX_get_session(ctx, id, id_len, out, sizeof(out), &used) == 1);
    CHECK(used == sizeof(data) && memcmp(out, data, used) == 0);
    /* Short buffer: full length reported, prefix copied, reget completes. */
    used = 0;
    CHECK(DC_CTX_get_session(ctx, id, id_len, tiny, sizeof(tiny), &used) == 1);
    CHECK(used == sizeof(data) && memcmp(tiny, data, sizeof(tiny)) == 0);
    memset(out, 0, sizeof(out));
    used = 0;
    CHECK(DC_CTX_reget_session(ctx, id, id_len, out, sizeof(out), &used) == 1);
    CHECK(used == sizeof(data) && memcmp(out, data, used) == 0);
    CHECK(DC_CTX_remove_session(ctx, id, id_len) == 1);
    CHECK(DC_CTX_remove_session(ctx, id, id_len) == 0);
    CHECK(DC_CTX_has_session(ctx, id, id_len) == 0);
    CHECK(DC_CTX_get_session(ctx, id, id_len, out, sizeof(out), &used) == 0);
    /* Apache 2.4 sends sub-second timeouts; they must not fail. */
    CHECK(DC_CTX_add_session(ctx, id, id_len, data, 100, 1) == 1);
    CHECK(DC_CTX_get_session(ctx, id, id_len, out, sizeof(out), &used) == 1 && used == 100);
    CHECK(DC_CTX_remove_session(ctx, id, id_len) == 1);
    DC_CTX_free(ctx);
}

struct worker {
    DC_CTX *ctx;
    int index;
    int ops;
    int errors;
    int hits;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    unsigned char id[64], data[1500], out[1500];
    unsigned int id_len, used;
    int i, present[8] = {0};

    /* Each of the 8 ids cycles through: add, get, get or has, then remove
     * (odd ids) or has (even ids, which then see a refused duplicate add). */
    for (i = 0; i < w->ops; i++) {
        int k = i % 8, phase = (i / 8) % 4;
        unsigned int len = 100 + (unsigned int)((w->index * 13 + k * 17) % 1300);
        make_id(id, &id_len, 1000 + w->index, k, 0);
        make_data(data, len, w->index * 8 + k);
        switch (phase) {
        case 0:
            if (DC_CTX_add_session(w->ctx, id, id_len, data, len, 60000) != !present[k])
                w->errors++;
            present[k] = 1;
            break;
        case 1:
        case 2:
            if (phase == 2 && k % 2 == 0) {
                if (DC_CTX_has_session(w->ctx, id, id_len) != present[k])
                    w->errors++;
                break;
            }
            used = 0;
            if (DC_CTX_get_session(w->ctx, id, id_len, out, sizeof(out), &used) != present[k]) {
                w->errors++;
            } else if (present[k]) {
                if (used != len || memcmp(out, data, len) != 0)
                    w->errors++;
                else
                    w->hits++;
            }
            break;
        default:
            if (k % 2 == 1) {
                if (DC_CTX_remove_session(w->ctx, id, id_len) != present[k])
                    w->errors++;
                present[k] = 0;
            } else if (DC_CTX_has_session(w->ctx, id, id_len) != present[k]) {
                w->errors++;
            }
        }
    }
    for (i = 0; i < 8; i++) {
        make_id(id, &id_len, 1000 + w->index, i, 0);
        if (present[i])
            DC_CTX_remove_session(w->ctx, id, id_len);
    }
    return NULL;
}

static void threads(unsigned int flags)
{
    enum { NT = 16 };
    pthread_t t[NT];
    struct worker w[NT];
    DC_CTX *ctx = DC_CTX_new(addr, flags);
    int i, errors = 0, hits = 0, ops = under_valgrind ? 40 : 2000;

    CHECK(ctx != NULL);
    if (!ctx)
        return;
    for (i = 0; i < NT; i++) {
        w[i].ctx = ctx;
        w[i].index = i + (int)flags * 100;
        w[i].ops = ops;
        w[i].errors = 0;
        w[i].hits = 0;
        CHECK(pthread_create(&t[i], NULL, hammer, &w[i]) == 0);
    }
    for (i = 0; i < NT; i++) {
        pthread_join(t[i], NULL);
        errors += w[i].errors;
        hits += w[i].hits;
    }
    printf("dc_ctx_live: flags=%u: %d threads x %d ops, %d verified hits, %d wrong answers\n",
           flags, NT, ops, hits, errors);
    CHECK(errors == 0);
    CHECK(hits > 0);
    DC_CTX_free(ctx);
}

static void pidcheck_fork(void)
{
    DC_CTX *ctx = DC_CTX_new(addr, DC_CTX_FLAG_PERSISTENT | DC_CTX_FLAG_PERSISTENT_PIDCHECK);
    unsigned char id[64], data[200], out[200];
    unsigned int id_len, used;
    pid_t pid;
    int status = -1;

    CHECK(ctx != NULL);
    if (!ctx)
        return;
    make_id(id, &id_len, 77, 0, 0);
    make_data(data, sizeof(data), 77);
    CHECK(DC_CTX_add_session(ctx, id, id_len, data, sizeof(data), 60000) == 1);
    pid = fork();
    if (pid == 0) {
        /* Child: the inherited context must reconnect on its own socket. */
        int ok = 1, i;
        for (i = 0; i < 50 && ok; i++) {
            used = 0;
            ok = DC_CTX_get_session(ctx, id, id_len, out, sizeof(out), &used) == 1 &&
                 used == sizeof(data) && memcmp(out, data, used) == 0;
        }
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0);
    /* Parent keeps using its connection at the same time. */
    {
        int i, ok = 1;
        for (i = 0; i < 50 && ok; i++) {
            used = 0;
            ok = DC_CTX_get_session(ctx, id, id_len, out, sizeof(out), &used) == 1 &&
                 used == sizeof(data) && memcmp(out, data, used) == 0;
        }
        CHECK(ok);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* And the parent still works after the child exited. */
    CHECK(DC_CTX_remove_session(ctx, id, id_len) == 1);
    DC_CTX_free(ctx);
}

int main(int argc, char **argv)
{
    static const unsigned int combos[] = {
        0,
        DC_CTX_FLAG_PERSISTENT,
        DC_CTX_FLAG_PERSISTENT | DC_CTX_FLAG_PERSISTENT_PIDCHECK,
        DC_CTX_FLAG_PERSISTENT | DC_CTX_FLAG_PERSISTENT_RETRY,
        DC_CTX_FLAG_PERSISTENT | DC_CTX_FLAG_PERSISTENT_LATE,
        DC_CTX_FLAG_PERSISTENT | DC_CTX_FLAG_PERSISTENT_PIDCHECK |
            DC_CTX_FLAG_PERSISTENT_RETRY | DC_CTX_FLAG_PERSISTENT_LATE,
    };
    size_t i;

    addr = argc > 1 ? argv[1] : getenv("DC_TEST_ADDR");
    under_valgrind = getenv("DCRS_UNDER_VALGRIND") != NULL;
    if (!addr) {
        fprintf(stderr, "dc_ctx_live: needs a server address (argv[1] or DC_TEST_ADDR)\n");
        return 2;
    }
    for (i = 0; i < sizeof(combos) / sizeof(combos[0]); i++)
        basic(combos[i], (int)i);
    threads(DC_CTX_FLAG_PERSISTENT);
    threads(DC_CTX_FLAG_PERSISTENT | DC_CTX_FLAG_PERSISTENT_RETRY | DC_CTX_FLAG_PERSISTENT_PIDCHECK);
    threads(0);
    pidcheck_fork();
    return check_done("dc_ctx_live");
}
