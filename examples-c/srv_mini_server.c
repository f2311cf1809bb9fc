/*
 * srv_mini_server: a complete distcache server in a page of C, on the
 * DC_SERVER and libnal APIs: one listener, one selector, every client driven
 * by DC_SERVER_clients_io().
 *
 *   srv_mini_server <listen-address> [max-sessions] [max-seconds]
 *
 * Build: cc -o srv_mini_server srv_mini_server.c $(pkg-config --cflags --libs distcacheserver)
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <libnal/nal.h>
#include <distcache/dc_plug.h>
#include <distcache/dc_server.h>

int main(int argc, char **argv)
{
    NAL_ADDRESS *addr = NAL_ADDRESS_new();
    NAL_LISTENER *listener = NAL_LISTENER_new();
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    NAL_CONNECTION *conn = NULL;
    DC_SERVER *server = NULL;
    unsigned int max_sessions = argc > 2 ? (unsigned int)atoi(argv[2]) : 512;
    long max_seconds = argc > 3 ? atol(argv[3]) : 0;
    time_t start = time(NULL);
    int ret = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: srv_mini_server <listen-address> [max-sessions] [max-seconds]\n");
        return 2;
    }
    if (!addr || !listener || !sel)
        goto out;
    if (!NAL_ADDRESS_create(addr, argv[1], 4096) || !NAL_ADDRESS_can_listen(addr)) {
        fprintf(stderr, "srv_mini_server: bad listen address '%s'\n", argv[1]);
        goto out;
    }
    if (!NAL_LISTENER_create(listener, addr) || !NAL_LISTENER_add_to_selector(listener, sel)) {
        fprintf(stderr, "srv_mini_server: cannot listen on '%s'\n", argv[1]);
        goto out;
    }
    if (!DC_SERVER_set_default_cache() || !(server = DC_SERVER_new(max_sessions)))
        goto out;
    printf("srv_mini_server: listening on %s\n", argv[1]);
    fflush(stdout);
    for (;;) {
        struct timeval now;
        if (max_seconds && time(NULL) - start >= max_seconds)
            break;
        /* Wait at most a second so the time limit is honoured. */
        if (NAL_SELECTOR_select(sel, 1000000, 1) < 0)
            break;
        gettimeofday(&now, NULL);
        if (!conn && !(conn = NAL_CONNECTION_new()))
            break;
        while (NAL_CONNECTION_accept(conn, listener)) {
            if (!NAL_CONNECTION_add_to_selector(conn, sel) ||
                !DC_SERVER_new_client(server, conn, DC_CLIENT_FLAG_IN_SERVER)) {
                NAL_CONNECTION_free(conn);
            }
            /* The server owns the accepted connection now. */
            if (!(conn = NAL_CONNECTION_new()))
                goto out;
        }
        /* Reads, answers and writes for every client; dead ones are dropped. */
        if (!DC_SERVER_clients_io(server, &now))
            break;
    }
    ret = 0;
out:
    if (conn)
        NAL_CONNECTION_free(conn);
    if (server)
        DC_SERVER_free(server);
    if (listener)
        NAL_LISTENER_free(listener);
    if (sel)
        NAL_SELECTOR_free(sel);
    if (addr)
        NAL_ADDRESS_free(addr);
    return ret;
}
