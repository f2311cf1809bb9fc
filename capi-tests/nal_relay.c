/* The loop the original distcache's libnal test programs run (an echo
 * server and a proxy), written against the public API: NAL_SELECTOR_select,
 * NAL_CONNECTION_io on each connection, NAL_BUFFER_transfer(send, read, 0)
 * from one connection's read buffer into a send buffer (its own for the
 * echo, the peer's for the proxy), select again. The echo server and the
 * proxy run in child processes; the parent drives several clients at once
 * through the echo server directly and through the proxy, over UNIX and
 * TCP, and checks every byte comes back. Bounded: a phase fails after a
 * few seconds without progress, and alarm() ends every process that hangs.
 * Needs no running server. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <libnal/nal.h>
#include "check.h"

#define CLIENTS 4
#define DATA_LEN 30000
#define MAX_CONNS 16

static int slow;            /* under valgrind: longer bounds */
static char tmpdir[] = "/tmp/nal_relay.XXXXXX";

static unsigned char byte_at(int client, unsigned int i)
{
    return (unsigned char)(i * 13 + (i >> 9) + client * 71);
}

static NAL_ADDRESS *make_addr(const char *s, unsigned int size)
{
    NAL_ADDRESS *a = NAL_ADDRESS_new();
    if (!NAL_ADDRESS_create(a, s, size)) {
        NAL_ADDRESS_free(a);
        return NULL;
    }
    return a;
}

/* Listen on a UNIX path in tmpdir or a free TCP port on 127.0.0.1; the
 * address string is left in astr. */
static NAL_LISTENER *listen_on(int tcp, const char *name, unsigned int size, char *astr,
                               size_t len)
{
    NAL_LISTENER *l = NAL_LISTENER_new();
    NAL_ADDRESS *a;
    int port;
    if (!tcp) {
        snprintf(astr, len, "UNIX:%s/%s.sock", tmpdir, name);
        a = make_addr(astr, size);
        if (a && NAL_LISTENER_create(l, a)) {
            NAL_ADDRESS_free(a);
            return l;
        }
        NAL_ADDRESS_free(a);
        NAL_LISTENER_free(l);
        return NULL;
    }
    for (port = 21000 + (getpid() % 300) * 40; port < 64000; port++) {
        snprintf(astr, len, "IP:127.0.0.1:%d", port);
        a = make_addr(astr, size);
        if (a && NAL_LISTENER_create(l, a)) {
            NAL_ADDRESS_free(a);
            return l;
        }
        NAL_ADDRESS_free(a);
    }
    NAL_LISTENER_free(l);
    return NULL;
}

/* A child's loop: an echo server (upstream NULL) or a proxy to upstream.
 * ctl is a pair connection to the parent; its closing ends the loop.
 * Returns the exit status: 0 when ended by the parent. */
static int serve(NAL_LISTENER *list, NAL_CONNECTION *ctl, const NAL_ADDRESS *upstream)
{
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    NAL_CONNECTION *down[MAX_CONNS], *up[MAX_CONNS];
    NAL_CONNECTION *spare = NAL_CONNECTION_new();
    int n = 0, i, rc = -1;

    if (!NAL_LISTENER_add_to_selector(list, sel) || !NAL_CONNECTION_add_to_selector(ctl, sel))
        rc = 2;
    while (rc < 0) {
        if (NAL_SELECTOR_select(sel, 0, 0) < 0) {
            rc = 3;
            break;
        }
        if (!NAL_CONNECTION_io(ctl)) {
            rc = 0; /* the parent is done */
            break;
        }
        if (n < MAX_CONNS && NAL_CONNECTION_accept(spare, list)) {
            down[n] = spare;
            spare = NAL_CONNECTION_new();
            up[n] = NULL;
            if (!NAL_CONNECTION_add_to_selector(down[n], sel))
                rc = 4;
            if (upstream) {
                up[n] = NAL_CONNECTION_new();
                if (!NAL_CONNECTION_create(up[n], upstream) ||
                    !NAL_CONNECTION_add_to_selector(up[n], sel))
                    rc = 5;
            }
            n++;
        }
        for (i = 0; i < n; i++) {
            int alive = NAL_CONNECTION_io(down[i]) && (!up[i] || NAL_CONNECTION_io(up[i]));
            if (!alive) {
                /* Peer gone: drop this connection (and its upstream). */
                NAL_CONNECTION_free(down[i]);
                NAL_CONNECTION_free(up[i]);
                down[i] = down[n - 1];
                up[i] = up[n - 1];
                n--;
                i--;
                continue;
            }
            if (up[i]) {
                NAL_BUFFER_transfer(NAL_CONNECTION_get_send(up[i]),
                                    NAL_CONNECTION_get_read(down[i]), 0);
                NAL_BUFFER_transfer(NAL_CONNECTION_get_send(down[i]),
                                    NAL_CONNECTION_get_read(up[i]), 0);
            } else {
                NAL_BUFFER_transfer(NAL_CONNECTION_get_send(down[i]),
                                    NAL_CONNECTION_get_read(down[i]), 0);
            }
        }
    }
    for (i = 0; i < n; i++) {
        NAL_CONNECTION_free(down[i]);
        NAL_CONNECTION_free(up[i]);
    }
    NAL_CONNECTION_free(spare);
    NAL_CONNECTION_free(ctl);
    NAL_LISTENER_free(list);
    NAL_SELECTOR_free(sel);
    return rc;
}

struct child {
    pid_t pid;
    NAL_CONNECTION *ctl; /* the parent's end */
};

/* Fork a child serving `list`; `other` is the parent's end of an earlier
 * child's control pair, closed in this child so that only the parent
 * holds it. */
static struct child spawn(NAL_LISTENER *list, const NAL_ADDRESS *upstream, NAL_CONNECTION *other)
{
    struct child c;
    NAL_CONNECTION *theirs = NAL_CONNECTION_new();
    c.ctl = NAL_CONNECTION_new();
    c.pid = -1;
    if (!NAL_CONNECTION_create_pair(c.ctl, theirs, 64)) {
        NAL_CONNECTION_free(theirs);
        return c;
    }
    c.pid = fork();
    if (c.pid == 0) {
        int rc;
        alarm(slow ? 300 : 60);
        NAL_CONNECTION_free(c.ctl);
        NAL_CONNECTION_free(other);
        rc = serve(list, theirs, upstream);
        NAL_ADDRESS_free((NAL_ADDRESS *)upstream);
        _exit(rc);
    }
    NAL_CONNECTION_free(theirs);
    NAL_LISTENER_free(list);
    return c;
}

static int reap(struct child *c)
{
    int status = -1;
    NAL_CONNECTION_free(c->ctl);
    if (c->pid <= 0)
        return 0;
    if (waitpid(c->pid, &status, 0) != c->pid)
        return 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "  child %d: status %#x\n", (int)c->pid, status);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* CLIENTS connections to `target`, each sending DATA_LEN bytes of its own
 * and reading them back, all on one selector. */
static void run_clients(const char *label, const char *target, unsigned int size)
{
    NAL_ADDRESS *addr = make_addr(target, size);
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    NAL_CONNECTION *c[CLIENTS];
    static unsigned char got[CLIENTS][DATA_LEN];
    unsigned int sent[CLIENTS], recvd[CLIENTS];
    int i, idle = 0, ok = 1, done = 0, selects = 0, bad = 0;
    unsigned int j, total = 0;

    CHECK(addr != NULL);
    for (i = 0; i < CLIENTS; i++) {
        c[i] = NAL_CONNECTION_new();
        sent[i] = recvd[i] = 0;
        CHECK(addr && NAL_CONNECTION_create(c[i], addr));
        CHECK(NAL_CONNECTION_add_to_selector(c[i], sel));
    }
    /* Stop after 5 s (30 s under valgrind) without a byte moving. */
    while (ok && !done && idle++ < (slow ? 30 : 5) * 10) {
        for (i = 0; i < CLIENTS; i++) {
            NAL_BUFFER *s = NAL_CONNECTION_get_send(c[i]);
            while (sent[i] < DATA_LEN && NAL_BUFFER_notfull(s)) {
                unsigned char chunk[512];
                unsigned int k, n = DATA_LEN - sent[i];
                if (n > sizeof(chunk))
                    n = sizeof(chunk);
                if (n > NAL_BUFFER_unused(s))
                    n = NAL_BUFFER_unused(s);
                for (k = 0; k < n; k++)
                    chunk[k] = byte_at(i, sent[i] + k);
                n = NAL_BUFFER_write(s, chunk, n);
                if (n)
                    idle = 0;
                sent[i] += n;
            }
        }
        selects++;
        if (NAL_SELECTOR_select(sel, 100000, 1) < 0)
            break;
        done = 1;
        for (i = 0; i < CLIENTS; i++) {
            unsigned int n;
            if (!NAL_CONNECTION_io(c[i])) {
                fprintf(stderr, "  %s: client %d: io failed\n", label, i);
                ok = 0;
            }
            n = NAL_BUFFER_read(NAL_CONNECTION_get_read(c[i]), got[i] + recvd[i],
                                DATA_LEN - recvd[i]);
            if (n)
                idle = 0;
            recvd[i] += n;
            if (recvd[i] < DATA_LEN)
                done = 0;
        }
    }
    for (i = 0; i < CLIENTS; i++) {
        for (j = 0; j < recvd[i]; j++)
            bad += got[i][j] != byte_at(i, j);
        total += recvd[i];
        CHECK(recvd[i] == DATA_LEN);
    }
    CHECK(ok && done && bad == 0);
    printf("  %s: %d clients, %u of %u bytes back, %d wrong, %d selects\n", label, CLIENTS, total,
           CLIENTS * DATA_LEN, bad, selects);
    for (i = 0; i < CLIENTS; i++)
        NAL_CONNECTION_free(c[i]);
    NAL_SELECTOR_free(sel);
    NAL_ADDRESS_free(addr);
}

/* An echo server and a proxy to it on one transport; clients through each.
 * `size` is the servers' buffer size (0: the default). */
static void run_transport(int tcp, unsigned int size)
{
    char echo_str[200], proxy_str[200], label[64];
    NAL_LISTENER *le = listen_on(tcp, "echo", size, echo_str, sizeof(echo_str));
    NAL_LISTENER *lp = listen_on(tcp, "proxy", size, proxy_str, sizeof(proxy_str));
    NAL_ADDRESS *upstream = make_addr(echo_str, size);
    struct child echo, proxy;

    CHECK(le != NULL && lp != NULL && upstream != NULL);
    if (!le || !lp || !upstream) {
        NAL_LISTENER_free(le);
        NAL_LISTENER_free(lp);
        NAL_ADDRESS_free(upstream);
        return;
    }
    echo = spawn(le, NULL, NULL);
    proxy = spawn(lp, upstream, echo.ctl);
    NAL_ADDRESS_free(upstream);
    CHECK(echo.pid > 0 && proxy.pid > 0);

    snprintf(label, sizeof(label), "%s echo (size %u)", tcp ? "TCP" : "UNIX", size);
    run_clients(label, echo_str, 1024);
    snprintf(label, sizeof(label), "%s proxy (size %u)", tcp ? "TCP" : "UNIX", size);
    run_clients(label, proxy_str, 1024);
    /* Again through the proxy, which dropped the first clients and their
     * upstream connections: new ones work as well. */
    snprintf(label, sizeof(label), "%s proxy again", tcp ? "TCP" : "UNIX");
    run_clients(label, proxy_str, 4096);

    CHECK(reap(&proxy));
    CHECK(reap(&echo));
    if (!tcp) {
        snprintf(echo_str, sizeof(echo_str), "%s/echo.sock", tmpdir);
        unlink(echo_str);
        snprintf(proxy_str, sizeof(proxy_str), "%s/proxy.sock", tmpdir);
        unlink(proxy_str);
    }
}

int main(void)
{
    slow = getenv("DCRS_UNDER_VALGRIND") != NULL;
    alarm(slow ? 500 : 100);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    run_transport(0, 0);
    run_transport(1, 1000);
    rmdir(tmpdir);
    return check_done("nal_relay");
}
