/*
 * dc_session_tool: store, fetch, test and remove one session through the
 * DC_CTX API, the way a TLS server does.
 *
 *   dc_session_tool UNIX:/tmp/scache add  <id> <data> [timeout_ms]
 *   dc_session_tool UNIX:/tmp/scache get  <id>
 *   dc_session_tool UNIX:/tmp/scache has  <id>
 *   dc_session_tool UNIX:/tmp/scache del  <id>
 *
 * Build: cc -o dc_session_tool dc_session_tool.c $(pkg-config --cflags --libs distcache)
 * Exit status: 0 success/hit/present, 1 miss/absent/refused, 2 error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libnal/nal.h>
#include <distcache/dc_client.h>

#if !defined(DISTCACHE_CLIENT_API) || (DISTCACHE_CLIENT_API < 0x0001)
#error "this program needs the DC_CTX API"
#endif

static int usage(void)
{
    fprintf(stderr, "usage: dc_session_tool <address> add <id> <data> [timeout_ms]\n"
                    "       dc_session_tool <address> get|has|del <id>\n");
    return 2;
}

int main(int argc, char **argv)
{
    DC_CTX *ctx;
    const unsigned char *id;
    unsigned int id_len;
    int ret = 2;

    if (argc < 4)
        return usage();
    id = (const unsigned char *)argv[3];
    id_len = (unsigned int)strlen(argv[3]);
    /* No flags: a fresh connection per operation, as Apache does. */
    ctx = DC_CTX_new(argv[1], 0);
    if (!ctx) {
        fprintf(stderr, "dc_session_tool: cannot use address '%s'\n", argv[1]);
        return 2;
    }
    if (strcmp(argv[2], "add") == 0 && (argc == 5 || argc == 6)) {
        unsigned long timeout = argc == 6 ? strtoul(argv[5], NULL, 10) : 300000UL;
        ret = DC_CTX_add_session(ctx, id, id_len, (const unsigned char *)argv[4],
                                 (unsigned int)strlen(argv[4]), timeout) ? 0 : 1;
        printf("add: %s\n", ret == 0 ? "stored" : "refused");
    } else if (strcmp(argv[2], "get") == 0 && argc == 4) {
        unsigned char small[16];
        unsigned int used = 0;
        if (!DC_CTX_get_session(ctx, id, id_len, small, sizeof(small), &used)) {
            printf("get: miss\n");
            ret = 1;
        } else if (used <= sizeof(small)) {
            printf("get: %.*s\n", (int)used, (const char *)small);
            ret = 0;
        } else {
            /* The first buffer was too short: fetch again from the copy the
             * library kept, without another round trip. */
            unsigned char *big = malloc(used);
            unsigned int used2 = 0;
            if (big && DC_CTX_reget_session(ctx, id, id_len, big, used, &used2) && used2 == used) {
                printf("get: %.*s\n", (int)used, (const char *)big);
                ret = 0;
            } else {
                printf("get: reget failed\n");
            }
            free(big);
        }
    } else if (strcmp(argv[2], "has") == 0 && argc == 4) {
        int r = DC_CTX_has_session(ctx, id, id_len);
        printf("has: %s\n", r > 0 ? "yes" : r == 0 ? "no" : "error");
        ret = r > 0 ? 0 : r == 0 ? 1 : 2;
    } else if (strcmp(argv[2], "del") == 0 && argc == 4) {
        ret = DC_CTX_remove_session(ctx, id, id_len) ? 0 : 1;
        printf("del: %s\n", ret == 0 ? "removed" : "not found");
    } else {
        ret = usage();
    }
    DC_CTX_free(ctx);
    return ret;
}
