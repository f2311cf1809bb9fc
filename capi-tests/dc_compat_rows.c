/* The corners where libnal and DC_CTX must behave as the original's
 * libraries (issue 21), one block per row of the table, plus what
 * a buffer size of 0 means for connections (the default size: they can
 * still send and receive). NEEDS-SERVER: argv[1] is a running dc_server,
 * for the DC_CTX rows. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libnal/nal.h>
#include <distcache/dc_client.h>
#include "check.h"

static unsigned char pattern[200];

static NAL_BUFFER *buffer(unsigned int size, unsigned int fill)
{
    NAL_BUFFER *b = NAL_BUFFER_new();
    CHECK(b != NULL && NAL_BUFFER_set_size(b, size));
    CHECK(NAL_BUFFER_write(b, pattern, fill) == fill);
    return b;
}

/* NAL_BUFFER_transfer: max 0 means no limit; otherwise the least of max,
 * the source's data and the destination's room. */
static void row_transfer(void)
{
    NAL_BUFFER *dest = buffer(60, 0), *src = buffer(100, 100);
    CHECK(NAL_BUFFER_transfer(dest, src, 0) == 60);
    CHECK(NAL_BUFFER_used(dest) == 60 && NAL_BUFFER_used(src) == 40);
    CHECK(memcmp(NAL_BUFFER_data(dest), pattern, 60) == 0);
    CHECK(memcmp(NAL_BUFFER_data(src), pattern + 60, 40) == 0);
    /* Destination full: nothing more moves, even without a limit. */
    CHECK(NAL_BUFFER_transfer(dest, src, 0) == 0);
    /* max larger than either side: the smaller side decides. */
    NAL_BUFFER_read(dest, NULL, 50);
    CHECK(NAL_BUFFER_transfer(dest, src, 1000) == 40); /* src's 40 < room 50 */
    CHECK(NAL_BUFFER_empty(src) && NAL_BUFFER_used(dest) == 50);
    NAL_BUFFER_write(src, pattern, 100);
    CHECK(NAL_BUFFER_transfer(dest, src, 1000) == 10); /* room 10 < src's 100 */
    NAL_BUFFER_reset(dest);
    CHECK(NAL_BUFFER_transfer(dest, src, 7) == 7); /* max 7 smallest */
    CHECK(NAL_BUFFER_transfer(dest, src, 0) == 53);
    CHECK(NAL_BUFFER_full(dest) && NAL_BUFFER_used(src) == 30);
    /* An empty source moves nothing. */
    NAL_BUFFER_reset(dest);
    NAL_BUFFER_reset(src);
    CHECK(NAL_BUFFER_transfer(dest, src, 0) == 0);
    NAL_BUFFER_free(dest);
    NAL_BUFFER_free(src);
}

/* NAL_BUFFER_set_size: 0 is a size; shrinking below the data held gives
 * the new size holding nothing. */
static void row_set_size(void)
{
    NAL_BUFFER *b = NAL_BUFFER_new();
    CHECK(NAL_BUFFER_set_size(b, 0) == 1);
    CHECK(NAL_BUFFER_size(b) == 0 && NAL_BUFFER_empty(b) && NAL_BUFFER_full(b));
    CHECK(NAL_BUFFER_write(b, pattern, 1) == 0);
    CHECK(NAL_BUFFER_set_size(b, 100) && NAL_BUFFER_write(b, pattern, 100) == 100);
    CHECK(NAL_BUFFER_set_size(b, 40) == 1);
    CHECK(NAL_BUFFER_size(b) == 40 && NAL_BUFFER_used(b) == 0 && NAL_BUFFER_unused(b) == 40);
    /* The buffer works at its new size. */
    CHECK(NAL_BUFFER_write(b, pattern, 100) == 40);
    CHECK(memcmp(NAL_BUFFER_data(b), pattern, 40) == 0);
    CHECK(NAL_BUFFER_set_size(b, 0) == 1 && NAL_BUFFER_used(b) == 0);
    CHECK(!NAL_BUFFER_set_size(b, 32769));
    NAL_BUFFER_free(b);
}

/* NAL_ADDRESS_create with default buffer size 0, and
 * NAL_ADDRESS_set_def_buffer_size(0). */
static void row_def_size_zero(void)
{
    NAL_ADDRESS *a = NAL_ADDRESS_new();
    CHECK(NAL_ADDRESS_create(a, "UNIX:/tmp/y", 0) == 1);
    CHECK(NAL_ADDRESS_get_def_buffer_size(a) == 0);
    CHECK(NAL_ADDRESS_can_connect(a) && NAL_ADDRESS_can_listen(a));
    CHECK(NAL_ADDRESS_set_def_buffer_size(a, 100) == 1);
    CHECK(NAL_ADDRESS_set_def_buffer_size(a, 0) == 1);
    CHECK(NAL_ADDRESS_get_def_buffer_size(a) == 0);
    NAL_ADDRESS_free(a);
}

/* `IP:0`, `IP::9001`, `IP: 9001`: accepted, listen-only. */
static void row_listen_forms(void)
{
    static const char *forms[] = { "IP:0", "IP::9001", "IP: 9001", NULL };
    NAL_LISTENER *l = NAL_LISTENER_new();
    NAL_ADDRESS *a;
    int i;
    for (i = 0; forms[i]; i++) {
        a = NAL_ADDRESS_new();
        CHECK(NAL_ADDRESS_create(a, forms[i], 1024) == 1);
        CHECK(NAL_ADDRESS_can_listen(a) && !NAL_ADDRESS_can_connect(a));
        NAL_ADDRESS_free(a);
    }
    /* IP:0 really listens (on a port the kernel picks). */
    a = NAL_ADDRESS_new();
    CHECK(NAL_ADDRESS_create(a, "IP:0", 0));
    CHECK(NAL_LISTENER_create(l, a) && !NAL_LISTENER_finished(l));
    NAL_LISTENER_free(l);
    NAL_ADDRESS_free(a);
}

/* NAL_ADDRESS_create with stderr captured in `out`. */
static int create_capturing(const char *s, char *out, size_t outsz)
{
    char path[] = "/tmp/dc_compat_rows.XXXXXX";
    int fd = mkstemp(path), saved, r;
    ssize_t n;
    NAL_ADDRESS *a = NAL_ADDRESS_new();
    out[0] = '\0';
    if (fd < 0)
        return -1;
    fflush(stderr);
    saved = dup(2);
    dup2(fd, 2);
    r = NAL_ADDRESS_create(a, s, 1024);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    n = read(fd, out, outsz - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    CHECK(!NAL_ADDRESS_can_connect(a) || r);
    NAL_ADDRESS_free(a);
    return r;
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Still refused (deliberately): `UNIX:` and a path longer than sun_path,
 * each with one stderr line naming the address and the reason. Ordinary
 * refusals stay silent, as in the original. */
static void row_refusals(void)
{
    char out[2048], addr[300];
    CHECK(create_capturing("UNIX:", out, sizeof(out)) == 0);
    CHECK(lines(out) == 1 && strstr(out, "'UNIX:'") && strstr(out, "empty"));
    printf("  UNIX: -> %s", out);
    strcpy(addr, "UNIX:/");
    memset(addr + 6, 'a', 200);
    addr[206] = '\0';
    CHECK(create_capturing(addr, out, sizeof(out)) == 0);
    CHECK(lines(out) == 1 && strstr(out, "UNIX:/aaaaaaaaaa") && strstr(out, "too long"));
    printf("  UNIX:/a{200} -> %.60s...\n", out);
    /* The longest path sun_path holds is accepted. */
    addr[6 + 107] = '\0';
    CHECK(create_capturing(addr, out, sizeof(out)) == 0); /* 107 + leading '/' */
    addr[6 + 106] = '\0';
    CHECK(create_capturing(addr, out, sizeof(out)) == 1 && out[0] == '\0');
    CHECK(create_capturing("IP:", out, sizeof(out)) == 0 && out[0] == '\0');
    CHECK(create_capturing("garbage", out, sizeof(out)) == 0 && out[0] == '\0');
    /* Our extensions stay. */
    CHECK(create_capturing("unix:/tmp/x", out, sizeof(out)) == 1);
    CHECK(create_capturing("IPv6:[::1]:9001", out, sizeof(out)) == 1);
    CHECK(create_capturing("IPv6:9001", out, sizeof(out)) == 1);
}

/* Buffer size 0 for connections: a pair made with 0, and a listener and a
 * connect from size-0 addresses, get the default 2048-byte buffers and
 * carry data both ways. */
static void size_zero_connections(void)
{
    char dir[] = "/tmp/dc_compat_rows.XXXXXX", astr[200];
    NAL_CONNECTION *c[4];
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    NAL_LISTENER *l = NAL_LISTENER_new();
    NAL_ADDRESS *a = NAL_ADDRESS_new();
    unsigned int got[4] = { 0, 0, 0, 0 }, sent[4] = { 0, 0, 0, 0 };
    int i, n = 3, idle = 0, ok = 1;
    for (i = 0; i < 4; i++)
        c[i] = NAL_CONNECTION_new();
    CHECK(mkdtemp(dir) != NULL);
    snprintf(astr, sizeof(astr), "UNIX:%s/zero.sock", dir);
    CHECK(NAL_ADDRESS_create(a, astr, 0));
    CHECK(NAL_LISTENER_create(l, a) && NAL_LISTENER_add_to_selector(l, sel));
    CHECK(NAL_CONNECTION_create_pair(c[0], c[1], 0));
    CHECK(NAL_CONNECTION_create(c[2], a));
    for (i = 0; i < 3; i++)
        ok &= NAL_CONNECTION_add_to_selector(c[i], sel);
    CHECK(ok);
    /* Each connection sends 3000 bytes (more than one buffer) to its peer:
     * 0 <-> 1, 2 <-> the accepted 3. Bounded: 5 idle selects end it. */
    while (ok && idle < 5) {
        int done = 1;
        for (i = 0; i < n; i++) {
            NAL_BUFFER *s = NAL_CONNECTION_get_send(c[i]);
            while (sent[i] < 3000 && NAL_BUFFER_notfull(s))
                sent[i] += NAL_BUFFER_write(s, pattern, 3000 - sent[i] < 200 ? 3000 - sent[i] : 200);
        }
        if (NAL_SELECTOR_select(sel, 1000000, 1) <= 0) {
            idle++;
            continue;
        }
        idle = 0;
        if (n == 3 && NAL_CONNECTION_accept(c[3], l)) {
            CHECK(NAL_CONNECTION_add_to_selector(c[3], sel));
            n = 4;
        }
        for (i = 0; i < n; i++) {
            if (!NAL_CONNECTION_io(c[i]))
                ok = 0;
            got[i] += NAL_BUFFER_read(NAL_CONNECTION_get_read(c[i]), NULL, 0xffff);
        }
        for (i = 0; i < 4; i++)
            done &= got[i] == 3000;
        if (done)
            break;
    }
    CHECK(ok && n == 4);
    for (i = 0; i < 4; i++) {
        CHECK(NAL_BUFFER_size(NAL_CONNECTION_get_read(c[i])) == 2048);
        CHECK(NAL_BUFFER_size(NAL_CONNECTION_get_send(c[i])) == 2048);
        CHECK(got[i] == 3000);
    }
    printf("  size-0 connections: buffers of %u bytes, %u/%u/%u/%u bytes received\n",
           NAL_BUFFER_size(NAL_CONNECTION_get_read(c[0])), got[0], got[1], got[2], got[3]);
    for (i = 0; i < 4; i++)
        NAL_CONNECTION_free(c[i]);
    NAL_LISTENER_free(l);
    NAL_SELECTOR_free(sel);
    NAL_ADDRESS_free(a);
    snprintf(astr, sizeof(astr), "%s/zero.sock", dir);
    unlink(astr);
    rmdir(dir);
}

/* DC_CTX_get_session / DC_CTX_reget_session that fail leave *result_used
 * as it was: an absent id, a reget of another id, and a session shorter
 * than the protocol's minimum. */
static void row_result_used(const char *target, unsigned int flags)
{
    DC_CTX *ctx = DC_CTX_new(target, flags);
    unsigned char out[512];
    unsigned int used;
    char id[64], id2[64], id3[64];
    snprintf(id, sizeof(id), "compat-%d-%u-a", (int)getpid(), flags);
    snprintf(id2, sizeof(id2), "compat-%d-%u-b", (int)getpid(), flags);
    snprintf(id3, sizeof(id3), "compat-%d-%u-short", (int)getpid(), flags);
    CHECK(ctx != NULL);
    if (!ctx)
        return;
    used = 4242;
    CHECK(DC_CTX_get_session(ctx, (unsigned char *)id, strlen(id), out, sizeof(out), &used) == 0);
    CHECK(used == 4242);
    CHECK(DC_CTX_add_session(ctx, (unsigned char *)id, strlen(id), pattern, 100, 60000) == 1);
    used = 4242;
    CHECK(DC_CTX_get_session(ctx, (unsigned char *)id, strlen(id), out, sizeof(out), &used) == 1);
    CHECK(used == 100 && memcmp(out, pattern, 100) == 0);
    used = 4242;
    CHECK(DC_CTX_reget_session(ctx, (unsigned char *)id2, strlen(id2), out, sizeof(out), &used) == 0);
    CHECK(used == 4242);
    /* The reget of the right id still works after the failed one... */
    CHECK(DC_CTX_reget_session(ctx, (unsigned char *)id, strlen(id), out, sizeof(out), &used) == 1);
    CHECK(used == 100);
    /* ... and a 3-byte session is a failed get. */
    CHECK(DC_CTX_add_session(ctx, (unsigned char *)id3, strlen(id3), pattern, 3, 60000) == 1);
    used = 4242;
    CHECK(DC_CTX_get_session(ctx, (unsigned char *)id3, strlen(id3), out, sizeof(out), &used) == 0);
    CHECK(used == 4242);
    used = 4242;
    CHECK(DC_CTX_reget_session(ctx, (unsigned char *)id3, strlen(id3), out, sizeof(out), &used) == 0);
    CHECK(used == 4242);
    DC_CTX_remove_session(ctx, (unsigned char *)id, strlen(id));
    DC_CTX_remove_session(ctx, (unsigned char *)id3, strlen(id3));
    DC_CTX_free(ctx);
}

int main(int argc, char **argv)
{
    unsigned int i;
    for (i = 0; i < sizeof(pattern); i++)
        pattern[i] = (unsigned char)(i * 7 + 1);
    row_transfer();
    row_set_size();
    row_def_size_zero();
    row_listen_forms();
    row_refusals();
    size_zero_connections();
    CHECK(argc > 1);
    if (argc > 1) {
        row_result_used(argv[1], 0);
        row_result_used(argv[1], DC_CTX_FLAG_PERSISTENT);
        row_result_used(argv[1], DC_CTX_FLAG_PERSISTENT | DC_CTX_FLAG_PERSISTENT_PIDCHECK);
    }
    return check_done("dc_compat_rows");
}
