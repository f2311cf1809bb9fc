/* A program written only against the original's documented libnal API:
 * the example server examples-c/nal_echo_server.c (the NAL_LISTENER_new(2)
 * state-machine style) runs in a forked child on a UNIX socket, and the
 * parent drives clients in the NAL_CONNECTION_new(2) state-machine style
 * ("process buffers; add to selector; select; loop while io succeeds").
 * Needs no running server. */
#define main nal_echo_server_main
#include "../examples-c/nal_echo_server.c"
#undef main

#include <sys/wait.h>
#include <unistd.h>
#include "check.h"

#define NCLIENTS 4
#define MSG_LEN 9000

static unsigned char msg[NCLIENTS][MSG_LEN], echoed[NCLIENTS][MSG_LEN];

/* Connect, retrying while the server starts up. */
static NAL_CONNECTION *connect_to(const NAL_ADDRESS *addr)
{
    int tries;
    for (tries = 0; tries < 500; tries++) {
        NAL_CONNECTION *conn = NAL_CONNECTION_new();
        if (NAL_CONNECTION_create(conn, addr))
            return conn;
        NAL_CONNECTION_free(conn);
        usleep(10000);
    }
    return NULL;
}

/* Several clients at once on one selector, each in the manual's loop
 * style; returns how many got their whole message echoed intact. */
static int run_clients(const NAL_ADDRESS *addr)
{
    NAL_SELECTOR *sel = NAL_SELECTOR_new();
    NAL_CONNECTION *conn[NCLIENTS];
    unsigned int sent[NCLIENTS], got[NCLIENTS];
    int i, alive = 0, good = 0, rounds = 0;

    for (i = 0; i < NCLIENTS; i++) {
        conn[i] = connect_to(addr);
        sent[i] = got[i] = 0;
        if (conn[i])
            alive++;
    }
    while (alive > 0 && rounds++ < 10000) {
        /* user code: produce output, consume input */
        for (i = 0; i < NCLIENTS; i++) {
            NAL_BUFFER *c_read, *c_send;
            if (!conn[i])
                continue;
            c_read = NAL_CONNECTION_get_read(conn[i]);
            c_send = NAL_CONNECTION_get_send(conn[i]);
            sent[i] += NAL_BUFFER_write(c_send, msg[i] + sent[i], MSG_LEN - sent[i]);
            got[i] += NAL_BUFFER_read(c_read, echoed[i] + got[i], MSG_LEN - got[i]);
            if (got[i] == MSG_LEN) {
                /* done: disconnect */
                if (memcmp(echoed[i], msg[i], MSG_LEN) == 0)
                    good++;
                NAL_CONNECTION_free(conn[i]);
                conn[i] = NULL;
                alive--;
                continue;
            }
            /* block on (relevant) network events for 'conn' */
            NAL_CONNECTION_add_to_selector(conn[i], sel);
        }
        if (!alive)
            break;
        NAL_SELECTOR_select(sel, 0, 0);
        for (i = 0; i < NCLIENTS; i++)
            if (conn[i] && !NAL_CONNECTION_io(conn[i])) {
                NAL_CONNECTION_free(conn[i]);
                conn[i] = NULL;
                alive--;
            }
    }
    for (i = 0; i < NCLIENTS; i++)
        NAL_CONNECTION_free(conn[i]);
    NAL_SELECTOR_free(sel);
    return good;
}

int main(void)
{
    char dir[] = "/tmp/nal_docstyle.XXXXXX", astr[200], count[16];
    char *args[4];
    NAL_ADDRESS *addr;
    int i, j, status = -1;
    pid_t pid;

    for (i = 0; i < NCLIENTS; i++)
        for (j = 0; j < MSG_LEN; j++)
            msg[i][j] = (unsigned char)(i * 57 + j * 13 + (j >> 7));
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(astr, sizeof(astr), "UNIX:%s/echo.sock", dir);
    /* The server exits after serving two rounds of clients. */
    snprintf(count, sizeof(count), "%d", 2 * NCLIENTS);
    args[0] = "nal_echo_server";
    args[1] = astr;
    args[2] = count;
    args[3] = NULL;
    pid = fork();
    if (pid == 0)
        _exit(nal_echo_server_main(3, args));
    CHECK(pid > 0);

    addr = NAL_ADDRESS_new();
    CHECK(NAL_ADDRESS_create(addr, astr, 1024));
    CHECK(NAL_ADDRESS_can_connect(addr));
    CHECK(run_clients(addr) == NCLIENTS);
    CHECK(run_clients(addr) == NCLIENTS);
    NAL_ADDRESS_free(addr);

    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    snprintf(astr, sizeof(astr), "%s/echo.sock", dir);
    unlink(astr);
    rmdir(dir);
    /* Usage errors are reported, not crashed on. */
    args[1] = "not-an-address";
    args[2] = NULL;
    CHECK(nal_echo_server_main(2, args) == 1);
    return check_done("nal_docstyle");
}
