/* DC_CTX argument checks: NULL pointers, zero and oversized lengths.
 * Needs no server: the contexts target a UNIX path that does not exist,
 * with flags 0 (or PERSISTENT_LATE), so DC_CTX_new succeeds without
 * connecting and every call must return its failure value, never crash. */
#include <stdlib.h>
#include <string.h>
#include <distcache/dc_client.h>
#include "check.h"

#define NOWHERE "UNIX:/nonexistent/dcrs-dc_ctx_args.sock"

static void check_ctx(DC_CTX *ctx)
{
    static unsigned char big[40000];
    unsigned char id[] = "session-id";
    unsigned char data[] = "session data";
    unsigned char buf[64];
    unsigned int used;

    /* add_session: 0 on failure. */
    CHECK(DC_CTX_add_session(ctx, NULL, 4, data, 4, 1000) == 0);
    CHECK(DC_CTX_add_session(ctx, id, 0, data, 4, 1000) == 0);
    CHECK(DC_CTX_add_session(ctx, big, 65, data, 4, 1000) == 0);
    CHECK(DC_CTX_add_session(ctx, big, 0xffffffffu, data, 4, 1000) == 0);
    CHECK(DC_CTX_add_session(ctx, id, 4, NULL, 4, 1000) == 0);
    CHECK(DC_CTX_add_session(ctx, id, 4, data, 0, 1000) == 0);
    CHECK(DC_CTX_add_session(ctx, id, 4, big, 32768, 1000) == 0);
    CHECK(DC_CTX_add_session(ctx, id, 4, big, sizeof(big), 1000) == 0);
    CHECK(DC_CTX_add_session(ctx, id, 4, big, 0xffffffffu, 1000) == 0);
    /* Timeouts below DC_MIN_TIMEOUT are not an argument error (the original
     * asserted); here it still fails because nothing listens. */
    CHECK(DC_CTX_add_session(ctx, id, 4, data, 4, 0) == 0);
    CHECK(DC_CTX_add_session(ctx, id, 4, data, 4, 1) == 0);
    /* Valid arguments: fails only because there is no server. */
    CHECK(DC_CTX_add_session(ctx, id, 4, data, 4, 300000) == 0);

    /* remove_session: 0 on failure. */
    CHECK(DC_CTX_remove_session(ctx, NULL, 4) == 0);
    CHECK(DC_CTX_remove_session(ctx, id, 0) == 0);
    CHECK(DC_CTX_remove_session(ctx, big, 65) == 0);
    CHECK(DC_CTX_remove_session(ctx, id, 4) == 0);

    /* has_session: -1 on error. */
    CHECK(DC_CTX_has_session(ctx, NULL, 4) == -1);
    CHECK(DC_CTX_has_session(ctx, id, 0) == -1);
    CHECK(DC_CTX_has_session(ctx, big, 65) == -1);
    CHECK(DC_CTX_has_session(ctx, id, 4) == -1);

    /* get_session / reget_session: 0 on failure, result_used untouched. */
    CHECK(DC_CTX_get_session(ctx, NULL, 4, buf, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_get_session(ctx, id, 0, buf, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_get_session(ctx, big, 65, buf, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_get_session(ctx, id, 4, NULL, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_get_session(ctx, id, 4, buf, sizeof(buf), NULL) == 0);
    used = 77;
    CHECK(DC_CTX_get_session(ctx, id, 4, buf, sizeof(buf), &used) == 0);
    CHECK(used == 77);
    CHECK(DC_CTX_get_session(ctx, id, 4, NULL, 0, &used) == 0);

    CHECK(DC_CTX_reget_session(ctx, NULL, 4, buf, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_reget_session(ctx, id, 0, buf, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_reget_session(ctx, big, 65, buf, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_reget_session(ctx, id, 4, NULL, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_reget_session(ctx, id, 4, buf, sizeof(buf), NULL) == 0);
    used = 77;
    CHECK(DC_CTX_reget_session(ctx, id, 4, buf, sizeof(buf), &used) == 0);
    CHECK(used == 77);
}

int main(void)
{
    DC_CTX *ctx;
    unsigned char id[] = "id";
    unsigned char buf[8];
    unsigned int used = 0;

    /* DC_CTX_new: NULL for NULL, unparsable or listen-only targets, and for
     * PERSISTENT when the server cannot be reached. */
    CHECK(DC_CTX_new(NULL, 0) == NULL);
    CHECK(DC_CTX_new("", 0) == NULL);
    CHECK(DC_CTX_new("not an address", 0) == NULL);
    CHECK(DC_CTX_new("IP:9001", 0) == NULL);
    CHECK(DC_CTX_new("UNIX:", 0) == NULL);
    CHECK(DC_CTX_new(NOWHERE, DC_CTX_FLAG_PERSISTENT) == NULL);
    CHECK(DC_CTX_new(NOWHERE, DC_CTX_FLAG_PERSISTENT |
                                  DC_CTX_FLAG_PERSISTENT_RETRY |
                                  DC_CTX_FLAG_PERSISTENT_PIDCHECK) == NULL);

    /* A NULL context everywhere. */
    DC_CTX_free(NULL);
    CHECK(DC_CTX_add_session(NULL, id, 2, id, 2, 1000) == 0);
    CHECK(DC_CTX_remove_session(NULL, id, 2) == 0);
    CHECK(DC_CTX_has_session(NULL, id, 2) == -1);
    CHECK(DC_CTX_get_session(NULL, id, 2, buf, sizeof(buf), &used) == 0);
    CHECK(DC_CTX_reget_session(NULL, id, 2, buf, sizeof(buf), &used) == 0);

    /* flags 0: no connection until an operation. */
    ctx = DC_CTX_new(NOWHERE, 0);
    CHECK(ctx != NULL);
    if (ctx) {
        check_ctx(ctx);
        DC_CTX_free(ctx);
    }
    /* PERSISTENT_LATE: connects on first use, which fails. */
    ctx = DC_CTX_new(NOWHERE, DC_CTX_FLAG_PERSISTENT | DC_CTX_FLAG_PERSISTENT_LATE |
                                  DC_CTX_FLAG_PERSISTENT_RETRY |
                                  DC_CTX_FLAG_PERSISTENT_PIDCHECK);
    CHECK(ctx != NULL);
    if (ctx) {
        check_ctx(ctx);
        DC_CTX_free(ctx);
    }
    return check_done("dc_ctx_args");
}
