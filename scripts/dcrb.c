/*
 * dcrb: redis-benchmark's load model for the distcache protocol, so that
 * dc_server and redis-server can be compared with the same kind of client.
 *
 *   dcrb -h HOST -p PORT [-c CONNS] [-n REQUESTS] [-r KEYSPACE] [-d BYTES] [-pid PID]
 *
 * Like `redis-benchmark -t set,get -P 1`: one process, one thread, CONNS
 * non-blocking TCP connections driven by epoll, each with exactly one
 * request in flight (no pipelining). Two tests run in turn, REQUESTS
 * requests each, on keys drawn at random from KEYSPACE (32-byte ids):
 *   set: ADD of a BYTES-byte session (an id already stored is answered
 *        MATCHING_SESSION, as the server would for any client);
 *   get: GET.
 * Every answer is decoded (uid and operation checked); a GET hit must carry
 * BYTES bytes. Prints one line per test:
 *   dcrb test=get conns=N requests=R ops_per_s=... server_cpu_us_per_op=...
 * (server CPU from /proc/PID/stat over that test's window, when -pid is
 * given). BYTES is at most 2008, so that an ADD fits one 2048-byte frame.
 * Exit 1 on any error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#define HDR 14
#define IDLEN 32
#define MAXC 1024

struct conn {
	int fd;
	uint32_t uid;
	int op;
	size_t need;		/* bytes of the answer still expected */
	size_t have;
	unsigned char in[4096];
};

static unsigned long long seed = 88172645463325252ULL;
static unsigned keyspace = 100000, datalen = 200;
static unsigned char data[2048];

static unsigned long long rnd(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 7;
	seed ^= seed << 17;
	return seed;
}


static int fcntl_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		fprintf(stderr, "dcrb: fcntl: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void make_id(unsigned char *id, unsigned key)
{
	unsigned i;
	for (i = 0; i < IDLEN; i++)
		id[i] = (unsigned char)(key * 2654435761u >> (i % 24)) ^ (unsigned char)i;
	put32(id, key);
}

/* Send one request of operation op (0 ADD, 1 GET) on c. */
static int send_req(struct conn *c, int op)
{
	unsigned char buf[HDR + 8 + IDLEN + sizeof(data)];
	unsigned char *p = buf + HDR;
	unsigned key = (unsigned)(rnd() % keyspace);
	size_t len;
	ssize_t w;

	if (op == 0) {
		put32(p, 3600000);
		put32(p + 4, IDLEN);
		make_id(p + 8, key);
		memcpy(p + 8 + IDLEN, data, datalen);
		len = 8 + IDLEN + datalen;
	} else {
		make_id(p, key);
		len = IDLEN;
	}
	c->uid++;
	put32(buf, 0x00110000);
	buf[4] = 0;
	put32(buf + 5, c->uid);
	buf[9] = 0;
	buf[10] = (unsigned char)op;
	buf[11] = 1;
	buf[12] = (unsigned char)(len >> 8);
	buf[13] = (unsigned char)len;
	c->op = op;
	c->have = 0;
	c->need = HDR;
	w = send(c->fd, buf, HDR + len, MSG_NOSIGNAL);
	if (w != (ssize_t)(HDR + len)) {
		fprintf(stderr, "dcrb: short send: %s\n", w < 0 ? strerror(errno) : "partial");
		return -1;
	}
	return 0;
}

/* Read what is there; 1 when the answer is complete, 0 for more, -1 error. */
static int read_answer(struct conn *c)
{
	for (;;) {
		ssize_t r = recv(c->fd, c->in + c->have, c->need - c->have, 0);
		if (r < 0 && errno == EAGAIN)
			return 0;
		if (r <= 0) {
			fprintf(stderr, "dcrb: connection lost: %s\n", r < 0 ? strerror(errno) : "EOF");
			return -1;
		}
		c->have += (size_t)r;
		if (c->have < c->need)
			continue;
		if (c->need == HDR) {
			size_t dl = ((size_t)c->in[12] << 8) | c->in[13];
			uint32_t uid = ((uint32_t)c->in[5] << 24) | ((uint32_t)c->in[6] << 16) |
				       ((uint32_t)c->in[7] << 8) | c->in[8];
			if (c->in[4] != 1 || uid != c->uid || c->in[10] != c->op || c->in[11] != 1 ||
			    dl == 0 || dl > sizeof(c->in) - HDR) {
				fprintf(stderr, "dcrb: unexpected answer header\n");
				return -1;
			}
			c->need = HDR + dl;
			if (c->have < c->need)
				continue;
		}
		if (c->op == 1 && c->need != HDR + 1 && c->need != HDR + datalen) {
			fprintf(stderr, "dcrb: GET answer of %zu bytes\n", c->need - HDR);
			return -1;
		}
		if (c->op == 0 && (c->need != HDR + 1 || (c->in[HDR] != 0 && c->in[HDR] != 101))) {
			fprintf(stderr, "dcrb: ADD refused\n");
			return -1;
		}
		return 1;
	}
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = 0, nconn = 16, pid = 0, i, ep, t;
	unsigned long requests = 100000;
	static struct conn conns[MAXC];
	struct sockaddr_in sa;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "dcrb: %s needs a value\nusage: dcrb -h HOST -p PORT [-c CONNS] [-n REQUESTS] [-r KEYSPACE] [-d BYTES] [-pid PID]\n", a);
			return 2;
		}
		if (!strcmp(a, "-h"))
			host = v;
		else if (!strcmp(a, "-p"))
			port = atoi(v);
		else if (!strcmp(a, "-c"))
			nconn = atoi(v);
		else if (!strcmp(a, "-n"))
			requests = strtoul(v, NULL, 10);
		else if (!strcmp(a, "-r"))
			keyspace = (unsigned)strtoul(v, NULL, 10);
		else if (!strcmp(a, "-d"))
			datalen = (unsigned)strtoul(v, NULL, 10);
		else if (!strcmp(a, "-pid"))
			pid = atoi(v);
		else {
			fprintf(stderr, "dcrb: unknown option %s\n", a);
			return 2;
		}
		i++;
	}
	if (port <= 0 || port > 65535 || nconn < 1 || nconn > MAXC || requests < (unsigned long)nconn ||
	    keyspace < 1 || datalen < 5 || datalen > 2048 - 8 - IDLEN) {
		fprintf(stderr, "dcrb: bad -p, -c, -n, -r or -d\n");
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "dcrb: -h wants an IPv4 address\n");
		return 2;
	}
	for (i = 0; i < (int)datalen; i++)
		data[i] = (unsigned char)(i * 7 + 3);
	ep = epoll_create1(0);
	for (i = 0; i < nconn; i++) {
		int one = 1;
		struct epoll_event ev;
		conns[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (conns[i].fd < 0 || connect(conns[i].fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			fprintf(stderr, "dcrb: connect: %s\n", strerror(errno));
			return 1;
		}
		setsockopt(conns[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (fcntl_nonblock(conns[i].fd) < 0)
			return 1;
		ev.events = EPOLLIN;
		ev.data.u32 = (uint32_t)i;
		epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
	}
	for (t = 0; t < 2; t++) {
		int op = t == 0 ? 0 : 1;
		unsigned long sent = 0, done = 0;
		double t0 = now_s(), c0 = cpu_s(pid), t1, c1;
		for (i = 0; i < nconn; i++) {
			if (send_req(&conns[i], op) < 0)
				return 1;
			sent++;
		}
		while (done < requests) {
			struct epoll_event evs[MAXC];
			int n = epoll_wait(ep, evs, MAXC, 5000), k;
			if (n <= 0) {
				fprintf(stderr, "dcrb: no answers for 5 s\n");
				return 1;
			}
			for (k = 0; k < n; k++) {
				struct conn *c = &conns[evs[k].data.u32];
				int r = read_answer(c);
				if (r < 0)
					return 1;
				if (r == 0)
					continue;
				done++;
				if (sent < requests) {
					if (send_req(c, op) < 0)
						return 1;
					sent++;
				}
			}
		}
		t1 = now_s();
		c1 = cpu_s(pid);
		printf("dcrb test=%s conns=%d requests=%lu ops_per_s=%.0f server_cpu_us_per_op=%.2f\n",
		       op == 0 ? "set" : "get", nconn, requests, requests / (t1 - t0),
		       pid > 0 ? (c1 - c0) * 1e6 / requests : 0.0);
	}
	return 0;
}
