/*
 * floor: what the kernel alone charges for the socket traffic of a session
 * cache on this machine, with no cache, no protocol and no library in the
 * way. `make bench` runs it next to dcbench so the report can say how much
 * of dc_server's and dc_client's CPU per operation is ours and how much is
 * the operating system's.
 *
 *   floor persistent|perconn SOCKET_PATH CLIENTS SECONDS [REQ_BYTES REPLY_BYTES]
 *
 * A responder process (one thread, epoll, non-blocking sockets, level
 * triggered: the shape of dc_server's and dc_client's loops) answers every
 * REQ_BYTES-byte request with REPLY_BYTES bytes taken from a static buffer.
 * CLIENTS forked processes send one request at a time and wait for the
 * answer with poll(2) then recv(2), as libdistcache does:
 *   persistent: one connection per client for the whole run;
 *   perconn:    socket, connect, send, poll, recv, close per operation,
 *               the responder accepts, reads, answers, reads EOF and closes
 *               (Apache's mod_socache_dc mode, minus the upstream hop).
 * Defaults: 46-byte requests and 214-byte replies (a GET of a 32-byte id
 * answered with 200 bytes of session, frame headers included).
 *
 * Last line: floor mode=... clients=N ops_per_s=... server_cpu_us_per_op=...
 * clients_cpu_us_per_op=...  (CPU from /proc/PID/stat over the window).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#define MAXFD 65536

static size_t req_len = 46, reply_len = 214;
static char reply[65536];
static struct sockaddr_un addr;

static void die(const char *what)
{
	fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
	exit(2);
}


/* The responder: answers whole requests, one reply each. */
static void serve(int lfd)
{
	static size_t have[MAXFD];
	static char buf[65536];
	struct epoll_event evs[256], ev;
	int ep = epoll_create1(0), i, n;

	if (ep < 0)
		die("epoll_create1");
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		die("epoll_ctl");
	for (;;) {
		n = epoll_wait(ep, evs, 256, -1);
		for (i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			ssize_t r;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					if (c >= MAXFD) {
						close(c);
						continue;
					}
					have[c] = 0;
					ev.events = EPOLLIN;
					ev.data.fd = c;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
						die("epoll_ctl");
				}
				continue;
			}
			r = recv(fd, buf, sizeof(buf), 0);
			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				close(fd);
				continue;
			}
			have[fd] += (size_t)r;
			while (have[fd] >= req_len) {
				have[fd] -= req_len;
				if (send(fd, reply, reply_len, MSG_NOSIGNAL) != (ssize_t)reply_len) {
					close(fd);
					break;
				}
			}
		}
	}
}

static int dial(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect");
	return fd;
}

/* One request and its whole answer on fd; 0 on success. */
static int exchange(int fd)
{
	static char req[65536], in[65536];
	size_t got = 0;

	if (send(fd, req, req_len, MSG_NOSIGNAL) != (ssize_t)req_len)
		return -1;
	while (got < reply_len) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t r;
		if (poll(&p, 1, 2000) != 1)
			return -1;
		r = recv(fd, in, sizeof(in), MSG_DONTWAIT);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static void client(int perconn, volatile unsigned long *count)
{
	int fd = perconn ? -1 : dial();
	for (;;) {
		if (perconn)
			fd = dial();
		if (exchange(fd) < 0) {
			fprintf(stderr, "floor: client exchange failed\n");
			exit(1);
		}
		if (perconn)
			close(fd);
		__atomic_add_fetch(count, 1, __ATOMIC_RELAXED);
	}
}

int main(int argc, char **argv)
{
	int perconn, nclients, lfd, i, dead = 0;
	double secs, t0, t1, s0, s1, c0 = 0, c1 = 0;
	unsigned long *counts, ops0 = 0, ops1 = 0;
	pid_t srv, *kids;

	if (argc != 5 && argc != 7) {
		fprintf(stderr, "usage: floor persistent|perconn SOCKET_PATH CLIENTS SECONDS [REQ_BYTES REPLY_BYTES]\n");
		return 2;
	}
	if (!strcmp(argv[1], "persistent"))
		perconn = 0;
	else if (!strcmp(argv[1], "perconn"))
		perconn = 1;
	else {
		fprintf(stderr, "floor: unknown mode '%s'\n", argv[1]);
		return 2;
	}
	nclients = atoi(argv[3]);
	secs = atof(argv[4]);
	if (argc == 7) {
		req_len = (size_t)atol(argv[5]);
		reply_len = (size_t)atol(argv[6]);
	}
	if (nclients < 1 || nclients > 1024 || secs <= 0 || req_len < 1 ||
	    req_len > 65536 || reply_len < 1 || reply_len > sizeof(reply)) {
		fprintf(stderr, "floor: bad CLIENTS, SECONDS or sizes\n");
		return 2;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	if (strlen(argv[2]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "floor: socket path too long\n");
		return 2;
	}
	strcpy(addr.sun_path, argv[2]);
	unlink(argv[2]);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1024) < 0)
		die("bind/listen");
	counts = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counts == MAP_FAILED)
		die("mmap");
	srv = fork();
	if (srv < 0)
		die("fork");
	if (srv == 0) {
		serve(lfd);
		_exit(0);
	}
	kids = calloc((size_t)nclients, sizeof(*kids));
	if (!kids)
		die("calloc");
	for (i = 0; i < nclients; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork");
		if (kids[i] == 0) {
			close(lfd);
			client(perconn, counts);
			_exit(0);
		}
	}
	sleep_s(0.5); /* warm-up */
	t0 = now_s();
	s0 = cpu_s(srv);
	for (i = 0; i < nclients; i++)
		c0 += cpu_s(kids[i]);
	ops0 = __atomic_load_n(counts, __ATOMIC_RELAXED);
	sleep_s(secs);
	ops1 = __atomic_load_n(counts, __ATOMIC_RELAXED);
	t1 = now_s();
	s1 = cpu_s(srv);
	for (i = 0; i < nclients; i++)
		c1 += cpu_s(kids[i]);
	/* A client or the responder that died early would make the figure
	 * silently low: refuse to report one. */
	for (i = 0; i < nclients; i++)
		if (waitpid(kids[i], NULL, WNOHANG) != 0)
			dead++;
	if (waitpid(srv, NULL, WNOHANG) != 0)
		dead++;
	for (i = 0; i < nclients; i++)
		kill(kids[i], SIGKILL);
	kill(srv, SIGKILL);
	while (wait(NULL) > 0)
		;
	unlink(argv[2]);
	if (dead) {
		fprintf(stderr, "floor: %d process(es) ended during the run\n", dead);
		return 1;
	}
	if (ops1 == ops0) {
		fprintf(stderr, "floor: no operations completed\n");
		return 1;
	}
	printf("floor mode=%s clients=%d ops_per_s=%.0f server_cpu_us_per_op=%.2f clients_cpu_us_per_op=%.2f\n",
	       argv[1], nclients, (ops1 - ops0) / (t1 - t0),
	       (s1 - s0) * 1e6 / (double)(ops1 - ops0),
	       (c1 - c0) * 1e6 / (double)(ops1 - ops0));
	return 0;
}
