/*
 * nal_echo_server: a small echo server written only against the documented
 * libnal API, in the state-machine style of the NAL_LISTENER_new(2) manual:
 * one selector, one listener, up to MAX_CONNS connections kept left-aligned
 * in an array, and per-connection "user logic" run on the buffers after
 * each round of network I/O.
 *
 * usage: nal_echo_server <address> [<connections to serve>]
 *   <address> is a libnal address such as UNIX:/tmp/echo.sock or IP:9001.
 *   With a count, the server exits once that many connections have come
 *   and gone; without one it runs forever.
 *
 * Build: cc nal_echo_server.c $(pkg-config --cflags --libs libnal)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libnal/nal.h>

#define MAX_CONNS 10
#define BUF_SIZE 4096

/* The per-connection logic: echo whatever arrived. Returns zero to drop
 * the connection. */
static int do_user_logic(NAL_CONNECTION *conn)
{
    NAL_BUFFER *c_read = NAL_CONNECTION_get_read(conn);
    NAL_BUFFER *c_send = NAL_CONNECTION_get_send(conn);
    NAL_BUFFER_transfer(c_send, c_read, NAL_BUFFER_used(c_read));
    return 1;
}

int main(int argc, char *argv[])
{
    NAL_CONNECTION *conn[MAX_CONNS];
    NAL_ADDRESS *addr;
    NAL_LISTENER *list;
    NAL_SELECTOR *sel;
    int loop, conns_used = 0, ret = 1;
    long served = 0, to_serve = -1;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s <address> [<connections to serve>]\n", argv[0]);
        return 1;
    }
    if (argc == 3)
        to_serve = atol(argv[2]);

    /* Setup */
    addr = NAL_ADDRESS_new();
    sel = NAL_SELECTOR_new();
    list = NAL_LISTENER_new();
    for (loop = 0; loop < MAX_CONNS; loop++)
        conn[loop] = NAL_CONNECTION_new();
    if (!NAL_ADDRESS_create(addr, argv[1], BUF_SIZE) || !NAL_ADDRESS_can_listen(addr)) {
        fprintf(stderr, "%s: cannot listen on '%s'\n", argv[0], argv[1]);
        goto done;
    }
    if (!NAL_LISTENER_create(list, addr)) {
        fprintf(stderr, "%s: cannot create a listener on '%s'\n", argv[0], argv[1]);
        goto done;
    }

    while (to_serve < 0 || served < to_serve) {
        /* Select for the listener only while we want more connections. */
        if (conns_used < MAX_CONNS && (to_serve < 0 || served + conns_used < to_serve))
            NAL_LISTENER_add_to_selector(list, sel);
        else
            NAL_LISTENER_del_from_selector(list);
        /* Connections stay registered once added; adding again is refused
         * harmlessly. */
        for (loop = 0; loop < conns_used; loop++)
            NAL_CONNECTION_add_to_selector(conn[loop], sel);
        /* Block on (relevant) network events. */
        if (NAL_SELECTOR_select(sel, 0, 0) < 0) {
            fprintf(stderr, "%s: select failed\n", argv[0]);
            goto done;
        }
        /* Process active connections. */
        for (loop = 0; loop < conns_used; loop++) {
            if (!NAL_CONNECTION_io(conn[loop]) || !do_user_logic(conn[loop])) {
                /* Connection broken (or dropped by the user logic). */
                NAL_CONNECTION_free(conn[loop]);
                served++;
                /* Shift the array left if necessary. */
                if (loop < --conns_used)
                    memmove(conn + loop, conn + loop + 1,
                            (conns_used - loop) * sizeof(NAL_CONNECTION *));
                /* Recreate the empty slot; don't advance past the shifted
                 * entry. */
                conn[conns_used] = NAL_CONNECTION_new();
                loop--;
            }
        }
        /* Process incoming connections. */
        if (conns_used < MAX_CONNS && NAL_CONNECTION_accept(conn[conns_used], list))
            conns_used++;
    }
    ret = 0;
done:
    for (loop = 0; loop < MAX_CONNS; loop++)
        NAL_CONNECTION_free(conn[loop]);
    NAL_LISTENER_free(list);
    NAL_SELECTOR_free(sel);
    NAL_ADDRESS_free(addr);
    return ret;
}
