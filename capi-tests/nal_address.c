/* NAL_ADDRESS functions and NAL_config_set_nagle: good and bad address
 * strings, can_connect/can_listen rules, default buffer sizes, NULLs.
 * No server needed. */
#include <string.h>
#include <libnal/nal.h>
#include "check.h"

static int parses(const char *s)
{
    NAL_ADDRESS *a = NAL_ADDRESS_new();
    int r = NAL_ADDRESS_create(a, s, 1024);
    NAL_ADDRESS_free(a);
    return r;
}

/* Parse `s` and report can_connect / can_listen as 2 bits (-1: no parse). */
static int rules(const char *s)
{
    NAL_ADDRESS *a = NAL_ADDRESS_new();
    int r = -1;
    if (NAL_ADDRESS_create(a, s, 1024))
        r = (NAL_ADDRESS_can_connect(a) ? 2 : 0) | (NAL_ADDRESS_can_listen(a) ? 1 : 0);
    NAL_ADDRESS_free(a);
    return r;
}

int main(void)
{
    static const char *good[] = {
        "UNIX:/tmp/some.sock", "unix:/x", "IP:9001", "IP:1", "IP:65535", "IP:0", "IP::80", "IP: 9001",
        "IP:127.0.0.1:9001", "IPv4:127.0.0.1:9001", "IP:localhost:80",
        "IPv4:localhost:80", "IPv6:[::1]:443", "IPv6:8443", NULL
    };
    static const char *bad[] = {
        "", "garbage", "UNIX:", "IP:", "IP:65536", "IP:-1", "IP:99999999999",
        "IP:127.0.0.1:", "IP:127.0.0.1:0", "IP:127.0.0.1:65536", "IP:abc",
        "TCP:127.0.0.1:80", "127.0.0.1:80", "IP:12 34", "IP:host name:80",
        "IPv6:[::1]", "IPv6:[zz]:80", "IPv6:[::1:80", ":", "UNIX", "\x01\x02\xff",
        NULL
    };
    char longpath[300];
    NAL_ADDRESS *a;
    int i;

    for (i = 0; good[i]; i++) {
        int ok = parses(good[i]);
        CHECK(ok);
        if (!ok)
            fprintf(stderr, "  refused good address '%s'\n", good[i]);
    }
    for (i = 0; bad[i]; i++) {
        int ok = parses(bad[i]);
        CHECK(!ok);
        if (ok)
            fprintf(stderr, "  accepted bad address '%s'\n", bad[i]);
    }
    /* UNIX paths: sun_path holds 107 characters plus the NUL. */
    strcpy(longpath, "UNIX:/");
    memset(longpath + 6, 'a', 106);
    longpath[6 + 106] = '\0';
    CHECK(parses(longpath));
    memset(longpath + 6, 'a', 200);
    longpath[6 + 200] = '\0';
    CHECK(!parses(longpath));

    /* can_connect / can_listen: IP:port alone can only listen. */
    CHECK(rules("IP:9001") == 1);
    CHECK(rules("IP:127.0.0.1:9001") == 3);
    CHECK(rules("IPv4:localhost:9001") == 3);
    CHECK(rules("UNIX:/tmp/x") == 3);
    CHECK(rules("IPv6:9001") == 1);
    CHECK(rules("IPv6:[::1]:9001") == 3);

    /* Default buffer sizes. */
    a = NAL_ADDRESS_new();
    CHECK(a != NULL);
    CHECK(NAL_ADDRESS_get_def_buffer_size(a) > 0);
    CHECK(!NAL_ADDRESS_can_connect(a) && !NAL_ADDRESS_can_listen(a));
    CHECK(!NAL_ADDRESS_create(a, "IP:127.0.0.1:80", 32769));
    CHECK(!NAL_ADDRESS_can_connect(a));
    CHECK(NAL_ADDRESS_create(a, "IP:127.0.0.1:80", 32768));
    CHECK(NAL_ADDRESS_get_def_buffer_size(a) == 32768);
    /* A created address must be reset before being created again. */
    CHECK(!NAL_ADDRESS_create(a, "IP:127.0.0.1:81", 100));
    CHECK(NAL_ADDRESS_set_def_buffer_size(a, 1));
    CHECK(NAL_ADDRESS_get_def_buffer_size(a) == 1);
    CHECK(!NAL_ADDRESS_set_def_buffer_size(a, 32769));
    CHECK(NAL_ADDRESS_get_def_buffer_size(a) == 1);
    NAL_ADDRESS_reset(a);
    CHECK(!NAL_ADDRESS_can_connect(a));
    CHECK(NAL_ADDRESS_create(a, "UNIX:/tmp/y", 4096));
    CHECK(NAL_ADDRESS_get_def_buffer_size(a) == 4096);
    CHECK(NAL_ADDRESS_can_connect(a) && NAL_ADDRESS_can_listen(a));
    /* A failed create leaves a reset address unset. */
    NAL_ADDRESS_reset(a);
    CHECK(!NAL_ADDRESS_create(a, "IP:", 100));
    CHECK(!NAL_ADDRESS_can_listen(a));
    NAL_ADDRESS_free(a);

    /* NULL arguments. */
    a = NAL_ADDRESS_new();
    CHECK(!NAL_ADDRESS_create(a, NULL, 100));
    CHECK(!NAL_ADDRESS_create(NULL, "IP:80", 100));
    CHECK(NAL_ADDRESS_get_def_buffer_size(NULL) == 0);
    CHECK(!NAL_ADDRESS_set_def_buffer_size(NULL, 100));
    CHECK(!NAL_ADDRESS_can_connect(NULL) && !NAL_ADDRESS_can_listen(NULL));
    NAL_ADDRESS_reset(NULL);
    NAL_ADDRESS_free(NULL);
    NAL_ADDRESS_free(a);

    /* Global nagle switch: only observable on sockets (see nal_echo). */
    NAL_config_set_nagle(0);
    NAL_config_set_nagle(1);
    return check_done("nal_address");
}
