/* NEEDS-SERVER (address in argv[1] or $DC_TEST_ADDR).
 * DC_PLUG (TO_SERVER) against a running dc_server, whose address comes
 * from argv[1] or env DC_TEST_ADDR (e.g. UNIX:/tmp/dc.sock; the Makefile
 * starts one). Pipelines multi-frame ADDs, GETs, HAVEs and REMOVEs on one
 * connection and checks every answer in order. Ids are made unique per
 * process so a shared server can be reused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libnal/nal.h>
#include <distcache/dc_plug.h>
#include "check.h"

#define N 20

static unsigned char sess[DC_MAX_TOTAL_DATA];
static unsigned char req[DC_MAX_TOTAL_DATA];

static unsigned int sess_len(int i)
{
    /* 1 byte up to multi-frame sizes; an ADD carries 8 + id + data bytes. */
    static const unsigned int sizes[] = { 1, 100, 2000, 2040, 2041, 5000, 20000, 32700 };
    return sizes[i % 8];
}

static void make_id(char *id, int i)
{
    sprintf(id, "plugtest-%ld-%d", (long)getpid(), i);
}

int main(int argc, char **argv)
{
    const char *addr_s = argc > 1 ? argv[1] : getenv("DC_TEST_ADDR");
    NAL_ADDRESS *addr = NAL_ADDRESS_new();
    NAL_CONNECTION *conn = NAL_CONNECTION_new();
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    DC_PLUG *plug;
    char id[64];
    int i, answers = 0, rounds;
    unsigned long uid;
    DC_CMD cmd;
    const unsigned char *data;
    unsigned int len;

    if (!addr_s) {
        fprintf(stderr, "dc_plug_server: give the dc_server address as argv[1] or DC_TEST_ADDR\n");
        CHECK(addr_s != NULL);
        return check_done("dc_plug_server");
    }
    for (i = 0; i < (int)sizeof(sess); i++)
        sess[i] = (unsigned char)(i * 13 + 5);
    CHECK(NAL_ADDRESS_create(addr, addr_s, 4096));
    CHECK(NAL_CONNECTION_create(conn, addr));
    plug = DC_PLUG_new(conn, DC_PLUG_FLAG_TO_SERVER);
    CHECK(plug != NULL);
    if (!plug)
        return check_done("dc_plug_server");

    /* Per session: ADD, GET, HAVE, REMOVE, HAVE: 5 pipelined requests. */
    for (i = 0; i < N; i++) {
        unsigned char *p = req;
        unsigned int left = sizeof(req), idlen, dlen = sess_len(i);
        make_id(id, i);
        idlen = (unsigned int)strlen(id);
        if (8 + idlen + dlen > DC_MAX_TOTAL_DATA)
            dlen = DC_MAX_TOTAL_DATA - 8 - idlen;
        NAL_encode_uint32(&p, &left, 60000);
        NAL_encode_uint32(&p, &left, idlen);
        NAL_encode_bin(&p, &left, (const unsigned char *)id, idlen);
        CHECK(DC_PLUG_write(plug, 0, 5 * i, DC_CMD_ADD, req, (unsigned int)(p - req)));
        CHECK(DC_PLUG_write_more(plug, sess, dlen));
        CHECK(DC_PLUG_commit(plug));
        CHECK(DC_PLUG_write(plug, 0, 5 * i + 1, DC_CMD_GET, (const unsigned char *)id, idlen));
        CHECK(DC_PLUG_commit(plug));
        CHECK(DC_PLUG_write(plug, 0, 5 * i + 2, DC_CMD_HAVE, (const unsigned char *)id, idlen));
        CHECK(DC_PLUG_commit(plug));
        CHECK(DC_PLUG_write(plug, 0, 5 * i + 3, DC_CMD_REMOVE, (const unsigned char *)id, idlen));
        CHECK(DC_PLUG_commit(plug));
        CHECK(DC_PLUG_write(plug, 0, 5 * i + 4, DC_CMD_HAVE, (const unsigned char *)id, idlen));
        CHECK(DC_PLUG_commit(plug));
    }
    for (rounds = 0; rounds < 2000 && answers < 5 * N; rounds++) {
        if (!DC_PLUG_to_select(plug, sel) || NAL_SELECTOR_select(sel, 500000, 1) < 0
            || !DC_PLUG_io(plug)) {
            CHECK(!"network failure");
            break;
        }
        while (DC_PLUG_read(plug, 0, &uid, &cmd, &data, &len)) {
            int s = answers / 5, k = answers % 5;
            unsigned int dlen = sess_len(s);
            make_id(id, s);
            if (8 + strlen(id) + dlen > DC_MAX_TOTAL_DATA)
                dlen = DC_MAX_TOTAL_DATA - 8 - (unsigned int)strlen(id);
            CHECK(uid == (unsigned long)answers);
            switch (k) {
            case 0: /* ADD: OK */
                CHECK(cmd == DC_CMD_ADD && len == 1 && data[0] == 0);
                break;
            case 1: /* GET: the data */
                CHECK(cmd == DC_CMD_GET && len == dlen && memcmp(data, sess, dlen) == 0);
                break;
            case 2: /* HAVE: yes */
                CHECK(cmd == DC_CMD_HAVE && len == 1 && data[0] == 0);
                break;
            case 3: /* REMOVE: done */
                CHECK(cmd == DC_CMD_REMOVE && len == 1 && data[0] == 0);
                break;
            default: /* HAVE: gone */
                CHECK(cmd == DC_CMD_HAVE && len == 1 && data[0] == 1);
            }
            CHECK(DC_PLUG_consume(plug));
            answers++;
        }
    }
    CHECK(answers == 5 * N);
    DC_PLUG_from_select(plug);
    CHECK(DC_PLUG_free(plug)); /* frees conn */
    NAL_SELECTOR_free(sel);
    NAL_ADDRESS_free(addr);
    return check_done("dc_plug_server");
}
