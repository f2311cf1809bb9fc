/* NAL_LISTENER, NAL_CONNECTION and NAL_SELECTOR over real sockets: an echo
 * server and client over UNIX and TCP 127.0.0.1 driven by one selector, a
 * connection pair across fork(), listener file-system owner/permissions,
 * stale vs live UNIX socket paths, NAL_LISTENER_finished, selector
 * num_objects/reset/timeouts/EINTR, freeing objects while registered,
 * failed non-blocking connects, and TCP_NODELAY from NAL_config_set_nagle.
 * Needs no running server (it makes its own in a temp directory). */
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <libnal/nal.h>
#include "check.h"

#define DATA_LEN 20000
static unsigned char data[DATA_LEN], got[DATA_LEN];
static char tmpdir[] = "/tmp/nal_echo.XXXXXX";

static double now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec * 1000.0 + tv.tv_usec / 1000.0;
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

/* Echo DATA_LEN bytes through a listener on `addr_str`; everything runs on
 * one selector. The server copies its read buffer to its send buffer. */
static void echo_test(const char *addr_str, NAL_LISTENER *list, NAL_ADDRESS *addr)
{
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    NAL_CONNECTION *client = NAL_CONNECTION_new();
    NAL_CONNECTION *server = NAL_CONNECTION_new();
    NAL_BUFFER *c_read, *c_send, *s_read, *s_send;
    unsigned int sent = 0, recvd = 0;
    int rounds = 0, accepted = 0, ok = 1;

    CHECK(NAL_LISTENER_add_to_selector(list, sel));
    CHECK(!NAL_LISTENER_add_to_selector(list, sel)); /* once only */
    CHECK(NAL_SELECTOR_num_objects(sel) == 1);
    CHECK(NAL_CONNECTION_create(client, addr));
    CHECK(!NAL_CONNECTION_create(client, addr)); /* needs reset first */
    CHECK(NAL_CONNECTION_add_to_selector(client, sel));
    CHECK(!NAL_CONNECTION_add_to_selector(client, sel));
    CHECK(NAL_SELECTOR_num_objects(sel) == 2);
    c_read = NAL_CONNECTION_get_read(client);
    c_send = NAL_CONNECTION_get_send(client);
    CHECK(NAL_BUFFER_size(c_read) == 1500 && NAL_BUFFER_size(c_send) == 1500);
    CHECK(NAL_CONNECTION_get_read_c(client) == c_read);
    CHECK(NAL_CONNECTION_get_send_c(client) == c_send);
    /* accept is refused until a select has shown a pending connection */
    CHECK(!NAL_CONNECTION_accept(server, list));

    while (recvd < DATA_LEN && rounds++ < 5000) {
        int n;
        sent += NAL_BUFFER_write(c_send, data + sent, DATA_LEN - sent);
        n = NAL_SELECTOR_select(sel, 2000000, 1);
        if (n < 0) {
            fprintf(stderr, "  select failed\n");
            ok = 0;
            break;
        }
        if (!accepted && NAL_CONNECTION_accept(server, list)) {
            accepted = 1;
            CHECK(NAL_CONNECTION_is_established(server));
            CHECK(NAL_CONNECTION_add_to_selector(server, sel));
            s_read = NAL_CONNECTION_get_read(server);
            s_send = NAL_CONNECTION_get_send(server);
            /* accepted connections take the listener address's size */
            CHECK(NAL_BUFFER_size(s_read) == 1500);
        }
        if (!NAL_CONNECTION_io(client)) {
            fprintf(stderr, "  client io failed (round %d)\n", rounds);
            ok = 0;
            break;
        }
        if (accepted) {
            if (!NAL_CONNECTION_io(server)) {
                fprintf(stderr, "  server io failed (round %d)\n", rounds);
                ok = 0;
                break;
            }
            NAL_BUFFER_transfer(s_send, s_read, NAL_BUFFER_used(s_read));
        }
        recvd += NAL_BUFFER_read(c_read, got + recvd, DATA_LEN - recvd);
    }
    CHECK(ok);
    CHECK(accepted);
    CHECK(recvd == DATA_LEN);
    CHECK(memcmp(got, data, DATA_LEN) == 0);
    CHECK(NAL_CONNECTION_is_established(client));
    if (recvd != DATA_LEN)
        fprintf(stderr, "  %s: echoed %u of %u bytes\n", addr_str, recvd, DATA_LEN);
    CHECK(NAL_SELECTOR_num_objects(sel) == 3);

    /* Peer closes: the client's io fails within a few selects. */
    NAL_CONNECTION_free(server);
    CHECK(NAL_SELECTOR_num_objects(sel) == 2);
    ok = 1;
    for (rounds = 0; rounds < 10 && ok; rounds++) {
        NAL_SELECTOR_select(sel, 1000000, 1);
        ok = NAL_CONNECTION_io(client);
    }
    CHECK(!ok);
    /* Unbound connections fail io. */
    NAL_CONNECTION_del_from_selector(client);
    CHECK(NAL_SELECTOR_num_objects(sel) == 1);
    CHECK(!NAL_CONNECTION_io(client));
    NAL_LISTENER_del_from_selector(list);
    CHECK(NAL_SELECTOR_num_objects(sel) == 0);
    NAL_CONNECTION_free(client);
    NAL_SELECTOR_free(sel);
}

static void test_unix(void)
{
    char path[200], astr[220];
    NAL_ADDRESS *addr;
    NAL_LISTENER *list = NAL_LISTENER_new(), *list2 = NAL_LISTENER_new();
    struct stat st;
    struct passwd *pw = getpwuid(getuid());
    struct group *gr = getgrgid(getgid());

    snprintf(path, sizeof(path), "%s/echo.sock", tmpdir);
    snprintf(astr, sizeof(astr), "UNIX:%s", path);
    addr = make_addr(astr, 1500);
    CHECK(addr != NULL);
    CHECK(NAL_LISTENER_finished(list)); /* not created: cannot accept */
    CHECK(!NAL_LISTENER_set_fs_perms(list, "600"));
    CHECK(NAL_LISTENER_create(list, addr));
    CHECK(!NAL_LISTENER_finished(list));
    CHECK(!NAL_LISTENER_create(list, addr)); /* needs reset first */
    /* A live server's path is not stolen. */
    CHECK(!NAL_LISTENER_create(list2, addr));
    CHECK(NAL_LISTENER_finished(list2));

    /* File-system owner and permissions. */
    CHECK(NAL_LISTENER_set_fs_perms(list, "640"));
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640);
    CHECK(NAL_LISTENER_set_fs_perms(list, "0777"));
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0777);
    CHECK(!NAL_LISTENER_set_fs_perms(list, "8"));
    CHECK(!NAL_LISTENER_set_fs_perms(list, "rw"));
    CHECK(!NAL_LISTENER_set_fs_perms(list, ""));
    CHECK(!NAL_LISTENER_set_fs_perms(list, NULL));
    CHECK(pw != NULL && gr != NULL);
    if (pw && gr) {
        CHECK(NAL_LISTENER_set_fs_owner(list, pw->pw_name, gr->gr_name));
        CHECK(NAL_LISTENER_set_fs_owner(list, pw->pw_name, NULL));
        CHECK(NAL_LISTENER_set_fs_owner(list, NULL, gr->gr_name));
        CHECK(stat(path, &st) == 0 && st.st_uid == pw->pw_uid && st.st_gid == gr->gr_gid);
    }
    CHECK(!NAL_LISTENER_set_fs_owner(list, "no-such-user-dcrs", NULL));
    CHECK(!NAL_LISTENER_set_fs_owner(list, NULL, "no-such-group-dcrs"));

    echo_test(astr, list, addr);

    /* The socket file left by a closed listener is stale: replaced. */
    NAL_LISTENER_reset(list);
    CHECK(NAL_LISTENER_finished(list));
    CHECK(access(path, F_OK) == 0);
    CHECK(NAL_LISTENER_create(list2, addr));
    CHECK(!NAL_LISTENER_finished(list2));
    NAL_LISTENER_free(list2);
    NAL_LISTENER_free(list);
    /* Nobody listening: a UNIX connect fails at once. */
    {
        NAL_CONNECTION *c = NAL_CONNECTION_new();
        CHECK(!NAL_CONNECTION_create(c, addr));
        CHECK(!NAL_CONNECTION_is_established(c));
        NAL_CONNECTION_free(c);
    }
    NAL_ADDRESS_free(addr);
    unlink(path);
}

/* Number of TCP sockets among our descriptors with TCP_NODELAY = `want`. */
static int count_nodelay(int want)
{
    int fd, n = 0;
    for (fd = 3; fd < 256; fd++) {
        int v = -1;
        socklen_t len = sizeof(v);
        if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v == want)
            n++;
    }
    return n;
}

static void test_tcp(void)
{
    char astr[64];
    NAL_ADDRESS *addr = NULL;
    NAL_LISTENER *list = NAL_LISTENER_new();
    int port, found = 0;

    /* Pick a free port by trying a range. */
    for (port = 20000 + (getpid() % 200) * 50; port < 65000 && !found; port++) {
        snprintf(astr, sizeof(astr), "IP:127.0.0.1:%d", port);
        addr = make_addr(astr, 1500);
        if (addr && NAL_LISTENER_create(list, addr))
            found = 1;
        else
            NAL_ADDRESS_free(addr);
    }
    CHECK(found);
    if (!found)
        return;
    /* fs owner/perms are meaningless on TCP. */
    CHECK(!NAL_LISTENER_set_fs_perms(list, "600"));
    CHECK(!NAL_LISTENER_set_fs_owner(list, "root", NULL));
    CHECK(!NAL_LISTENER_finished(list));

    echo_test(astr, list, addr);
    /* Nagle on (the default): sockets have TCP_NODELAY off. */
    {
        int before = count_nodelay(1);
        NAL_CONNECTION *c = NAL_CONNECTION_new();
        CHECK(NAL_CONNECTION_create(c, addr));
        CHECK(count_nodelay(1) == before);
        NAL_CONNECTION_free(c);
    }
    /* Nagle off: new sockets (client and accepted) get TCP_NODELAY. */
    NAL_config_set_nagle(0);
    {
        int before = count_nodelay(1);
        NAL_CONNECTION *c = NAL_CONNECTION_new();
        CHECK(NAL_CONNECTION_create(c, addr));
        CHECK(count_nodelay(1) == before + 1);
        NAL_CONNECTION_free(c);
    }
    NAL_config_set_nagle(1);
    NAL_LISTENER_free(list);

    /* A second TCP listener on the same port while the first is gone
     * succeeds (SO_REUSEADDR despite TIME_WAIT). */
    list = NAL_LISTENER_new();
    CHECK(NAL_LISTENER_create(list, addr));
    NAL_LISTENER_free(list);
    NAL_ADDRESS_free(addr);

    /* Connect to a port nobody listens on: either create fails at once, or
     * the non-blocking connect is reported by a failing io. */
    snprintf(astr, sizeof(astr), "IP:127.0.0.1:%d", port - 1);
    addr = make_addr(astr, 100);
    {
        NAL_SELECTOR *sel = NAL_SELECTOR_new();
        NAL_CONNECTION *c = NAL_CONNECTION_new();
        if (NAL_CONNECTION_create(c, addr)) {
            int ok = 1, i;
            CHECK(NAL_CONNECTION_add_to_selector(c, sel));
            for (i = 0; i < 10 && ok; i++) {
                NAL_SELECTOR_select(sel, 1000000, 1);
                ok = NAL_CONNECTION_io(c);
            }
            CHECK(!ok);
            CHECK(!NAL_CONNECTION_is_established(c));
        }
        NAL_CONNECTION_free(c);
        NAL_SELECTOR_free(sel);
    }
    NAL_ADDRESS_free(addr);
    /* IP:port alone cannot be connected to. */
    addr = make_addr("IP:9", 100);
    {
        NAL_CONNECTION *c = NAL_CONNECTION_new();
        CHECK(!NAL_CONNECTION_create(c, addr));
        NAL_CONNECTION_free(c);
    }
    NAL_ADDRESS_free(addr);
}

/* Child side of the fork test: echo everything back, byte+1, until the
 * parent closes. */
static int child_echo(NAL_CONNECTION *conn)
{
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    NAL_BUFFER *r = NAL_CONNECTION_get_read(conn), *s = NAL_CONNECTION_get_send(conn);
    int rc = 1;
    if (!NAL_CONNECTION_add_to_selector(conn, sel))
        rc = 2;
    while (rc == 1) {
        unsigned int n, i;
        unsigned char *p;
        if (NAL_SELECTOR_select(sel, 5000000, 1) <= 0)
            rc = 3;
        else if (!NAL_CONNECTION_io(conn))
            rc = 0; /* parent closed: done */
        n = NAL_BUFFER_unused(s);
        if (n > NAL_BUFFER_used(r))
            n = NAL_BUFFER_used(r);
        p = NAL_BUFFER_write_ptr(s);
        for (i = 0; i < n; i++)
            p[i] = (unsigned char)(NAL_BUFFER_data(r)[i] + 1);
        NAL_BUFFER_wrote(s, n);
        NAL_BUFFER_read(r, NULL, n);
    }
    NAL_CONNECTION_free(conn);
    NAL_SELECTOR_free(sel);
    return rc;
}

static void test_fork_pair(void)
{
    NAL_CONNECTION *to_child = NAL_CONNECTION_new(), *to_parent = NAL_CONNECTION_new();
    NAL_SELECTOR *sel;
    NAL_BUFFER *r, *s;
    unsigned int sent = 0, recvd = 0, i;
    int status = -1, rounds = 0, bad = 0;
    pid_t pid;

    CHECK(!NAL_CONNECTION_create_pair(to_child, to_child, 512));
    CHECK(!NAL_CONNECTION_create_pair(to_child, to_parent, 32769));
    CHECK(NAL_CONNECTION_create_pair(to_child, to_parent, 512));
    CHECK(!NAL_CONNECTION_create_pair(to_child, to_parent, 512));
    CHECK(NAL_CONNECTION_is_established(to_child));
    CHECK(NAL_BUFFER_size(NAL_CONNECTION_get_read(to_child)) == 512);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        NAL_CONNECTION_free(to_child);
        _exit(child_echo(to_parent));
    }
    NAL_CONNECTION_free(to_parent);
    sel = NAL_SELECTOR_new();
    CHECK(NAL_CONNECTION_add_to_selector(to_child, sel));
    r = NAL_CONNECTION_get_read(to_child);
    s = NAL_CONNECTION_get_send(to_child);
    while (recvd < DATA_LEN && rounds++ < 5000) {
        sent += NAL_BUFFER_write(s, data + sent, DATA_LEN - sent);
        if (NAL_SELECTOR_select(sel, 5000000, 1) <= 0 || !NAL_CONNECTION_io(to_child))
            break;
        recvd += NAL_BUFFER_read(r, got + recvd, DATA_LEN - recvd);
    }
    CHECK(recvd == DATA_LEN);
    for (i = 0; i < recvd; i++)
        if (got[i] != (unsigned char)(data[i] + 1))
            bad++;
    CHECK(bad == 0);
    /* Closing our end ends the child; its exit status says it saw that. */
    NAL_CONNECTION_free(to_child);
    NAL_SELECTOR_free(sel);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void on_alarm(int sig)
{
    (void)sig;
}

static void test_selector(void)
{
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    NAL_SELECTOR *sel2 = NAL_SELECTOR_new_fdselect();
    NAL_SELECTOR *sel3 = NAL_SELECTOR_new_fdpoll();
    NAL_CONNECTION *a = NAL_CONNECTION_new(), *b = NAL_CONNECTION_new();
    struct sigaction sa;
    struct itimerval it;
    double t;
    int n;

    CHECK(sel && sel2 && sel3);
    /* Timeouts are in microseconds. */
    t = now_ms();
    CHECK(NAL_SELECTOR_select(sel2, 30000, 1) == 0);
    CHECK(now_ms() - t >= 25);
    CHECK(NAL_SELECTOR_select(sel3, 0, 1) == 0);
    CHECK(NAL_SELECTOR_num_objects(sel) == 0);

    /* A fresh connection cannot be added; a paired one can, once. */
    CHECK(!NAL_CONNECTION_add_to_selector(a, sel));
    CHECK(NAL_CONNECTION_create_pair(a, b, 64));
    CHECK(NAL_CONNECTION_add_to_selector(a, sel));
    CHECK(!NAL_CONNECTION_add_to_selector(a, sel2)); /* bound elsewhere */
    CHECK(NAL_CONNECTION_add_to_selector(b, sel));
    CHECK(NAL_SELECTOR_num_objects(sel) == 2);

    /* Idle pair: nothing to wait for but readability; times out. */
    CHECK(NAL_SELECTOR_select(sel, 20000, 1) == 0);
    CHECK(NAL_CONNECTION_io(a) && NAL_CONNECTION_io(b)); /* nothing to do */

    /* A signal interrupts an infinite wait: 0 events. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    memset(&it, 0, sizeof(it));
    /* Repeating, so a signal that lands before the wait starts is not
     * the only one. */
    it.it_value.tv_usec = 50000;
    it.it_interval.tv_usec = 50000;
    setitimer(ITIMER_REAL, &it, NULL);
    CHECK(NAL_SELECTOR_select(sel, 0, 0) == 0);
    memset(&it, 0, sizeof(it));
    setitimer(ITIMER_REAL, &it, NULL);

    /* Data written on one side: both sides have events (send, read). */
    NAL_BUFFER_write(NAL_CONNECTION_get_send(a), (const unsigned char *)"hi", 2);
    n = NAL_SELECTOR_select(sel, 1000000, 1);
    CHECK(n == 1); /* only a was writable; b had nothing yet */
    CHECK(NAL_CONNECTION_io(a) && NAL_CONNECTION_io(b));
    n = NAL_SELECTOR_select(sel, 1000000, 1);
    CHECK(n == 1);
    CHECK(NAL_CONNECTION_io(a) && NAL_CONNECTION_io(b));
    CHECK(NAL_BUFFER_used(NAL_CONNECTION_get_read(b)) == 2);

    /* Full read buffer: readability is not requested. */
    CHECK(NAL_CONNECTION_set_size(b, 0)); /* 0: the default size */
    CHECK(NAL_BUFFER_size(NAL_CONNECTION_get_read(b)) == 2048);
    CHECK(!NAL_CONNECTION_set_size(b, 32769));
    CHECK(!NAL_CONNECTION_set_size(b, 1)); /* holds 2 bytes */
    CHECK(NAL_CONNECTION_set_size(b, 2));
    CHECK(NAL_BUFFER_full(NAL_CONNECTION_get_read(b)));
    NAL_BUFFER_write(NAL_CONNECTION_get_send(a), (const unsigned char *)"more", 4);
    CHECK(NAL_SELECTOR_select(sel, 1000000, 1) == 1 && NAL_CONNECTION_io(a));
    CHECK(NAL_SELECTOR_select(sel, 20000, 1) == 0);
    NAL_BUFFER_reset(NAL_CONNECTION_get_read(b));
    CHECK(NAL_SELECTOR_select(sel, 1000000, 1) == 1 && NAL_CONNECTION_io(b));
    CHECK(NAL_BUFFER_used(NAL_CONNECTION_get_read(b)) == 2);

    /* Freeing a connection while registered, then selecting again. */
    NAL_BUFFER_write(NAL_CONNECTION_get_send(b), (const unsigned char *)"x", 1);
    NAL_CONNECTION_free(b);
    CHECK(NAL_SELECTOR_num_objects(sel) == 1);
    n = NAL_SELECTOR_select(sel, 1000000, 1);
    CHECK(n == 1);
    CHECK(!NAL_CONNECTION_io(a)); /* peer gone */

    /* reset unbinds everything; objects can be added again. */
    NAL_SELECTOR_reset(sel);
    CHECK(NAL_SELECTOR_num_objects(sel) == 0);
    CHECK(!NAL_CONNECTION_io(a));
    CHECK(NAL_CONNECTION_add_to_selector(a, sel));
    CHECK(NAL_SELECTOR_num_objects(sel) == 1);
    /* Freeing the selector first leaves the connection unbound. */
    NAL_SELECTOR_free(sel);
    CHECK(!NAL_CONNECTION_io(a));
    CHECK(NAL_CONNECTION_add_to_selector(a, sel2));
    NAL_CONNECTION_reset(a);
    CHECK(NAL_SELECTOR_num_objects(sel2) == 0);
    CHECK(!NAL_CONNECTION_is_established(a));
    NAL_CONNECTION_free(a);
    NAL_SELECTOR_free(sel2);
    NAL_SELECTOR_free(sel3);

    /* NULL arguments. */
    CHECK(NAL_SELECTOR_select(NULL, 0, 1) < 0);
    CHECK(NAL_SELECTOR_num_objects(NULL) == 0);
    NAL_SELECTOR_reset(NULL);
    NAL_SELECTOR_free(NULL);
    CHECK(!NAL_CONNECTION_io(NULL));
    CHECK(!NAL_CONNECTION_add_to_selector(NULL, NULL));
    CHECK(NAL_CONNECTION_get_read(NULL) == NULL && NAL_CONNECTION_get_send_c(NULL) == NULL);
    CHECK(!NAL_CONNECTION_accept(NULL, NULL));
    CHECK(!NAL_CONNECTION_create(NULL, NULL));
    CHECK(!NAL_CONNECTION_set_size(NULL, 10));
    CHECK(!NAL_CONNECTION_is_established(NULL));
    CHECK(!NAL_CONNECTION_create_pair(NULL, NULL, 10));
    NAL_CONNECTION_del_from_selector(NULL);
    NAL_CONNECTION_reset(NULL);
    NAL_CONNECTION_free(NULL);
    CHECK(!NAL_LISTENER_create(NULL, NULL));
    CHECK(!NAL_LISTENER_add_to_selector(NULL, NULL));
    CHECK(!NAL_LISTENER_finished(NULL));
    CHECK(!NAL_LISTENER_set_fs_perms(NULL, "600"));
    CHECK(!NAL_LISTENER_set_fs_owner(NULL, NULL, NULL));
    NAL_LISTENER_del_from_selector(NULL);
    NAL_LISTENER_reset(NULL);
    NAL_LISTENER_free(NULL);
}

int main(void)
{
    unsigned int i;
    for (i = 0; i < DATA_LEN; i++)
        data[i] = (unsigned char)(i * 31 + (i >> 8));
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_fork_pair();
    test_selector();
    test_unix();
    test_tcp();
    rmdir(tmpdir);
    return check_done("nal_echo");
}
