/*
 * dcops: a fixed number of cache operations through libdistcache, for
 * counting what each one costs (system calls under `strace -c`,
 * instructions under callgrind) rather than timing them.
 *
 *   dcops ADDR OPS perconn|persistent [CLIENTS]
 *
 * CLIENTS forked processes (default 1, at most 64) each open one DC_CTX
 * (flags 0 for perconn: a new connection per operation, as Apache's
 * mod_socache_dc does; DC_CTX_FLAG_PERSISTENT for persistent), add one
 * 200-byte session under their own 32-byte id and then GET it OPS times;
 * every GET must hit with the same 200 bytes. The ADD is one more
 * operation per client: OPS+1 per client in all.
 *
 * Last line: dcops mode=... clients=N ops=TOTAL seconds=... errors=E
 * Exit 1 on any failed or wrong answer, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <distcache/dc_client.h>

#include "benchutil.h"

#define MAX_CLIENTS 64
#define SIZE 200
#define IDLEN 32

static int worker(const char *addr, unsigned long ops, unsigned int flags, int n)
{
	unsigned char id[IDLEN], data[SIZE], got[SIZE + 1];
	unsigned int used = 0;
	unsigned long i;
	DC_CTX *ctx;
	int errors = 0;

	memset(id, 'a' + n, sizeof(id));
	snprintf((char *)id, sizeof(id), "dcops-%d-%d", n, (int)getpid());
	for (i = 0; i < SIZE; i++)
		data[i] = (unsigned char)(i * 7 + n);
	ctx = DC_CTX_new(addr, flags);
	if (!ctx) {
		fprintf(stderr, "dcops: DC_CTX_new(%s) failed\n", addr);
		return 1;
	}
	if (!DC_CTX_add_session(ctx, id, IDLEN, data, SIZE, 3600000)) {
		fprintf(stderr, "dcops: worker %d: ADD failed\n", n);
		errors++;
	}
	for (i = 0; i < ops && errors < 10; i++) {
		if (!DC_CTX_get_session(ctx, id, IDLEN, got, sizeof(got), &used)
		    || used != SIZE || memcmp(got, data, SIZE) != 0) {
			fprintf(stderr, "dcops: worker %d: GET %lu missed or wrong\n", n, i);
			errors++;
		}
	}
	DC_CTX_free(ctx);
	return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
	unsigned long ops;
	unsigned int flags;
	int clients = 1, i, status, failed = 0;
	double t0;

	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: dcops ADDR OPS perconn|persistent [CLIENTS]\n");
		return 2;
	}
	ops = strtoul(argv[2], NULL, 10);
	if (ops == 0 || ops > 100000000UL) {
		fprintf(stderr, "dcops: OPS must be 1..100000000\n");
		return 2;
	}
	if (strcmp(argv[3], "perconn") == 0)
		flags = 0;
	else if (strcmp(argv[3], "persistent") == 0)
		flags = DC_CTX_FLAG_PERSISTENT;
	else {
		fprintf(stderr, "dcops: mode must be perconn or persistent\n");
		return 2;
	}
	if (argc == 5) {
		clients = atoi(argv[4]);
		if (clients < 1 || clients > MAX_CLIENTS) {
			fprintf(stderr, "dcops: CLIENTS must be 1..%d\n", MAX_CLIENTS);
			return 2;
		}
	}
	t0 = now_s();
	for (i = 0; i < clients; i++) {
		pid_t p = fork();
		if (p < 0) {
			perror("dcops: fork");
			return 1;
		}
		if (p == 0)
			_exit(worker(argv[1], ops, flags, i));
	}
	for (i = 0; i < clients; i++) {
		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
	}
	printf("dcops mode=%s clients=%d ops=%lu seconds=%.3f errors=%d\n", argv[3],
	       clients, (ops + 1) * (unsigned long)clients, now_s() - t0, failed);
	return failed ? 1 : 0;
}
