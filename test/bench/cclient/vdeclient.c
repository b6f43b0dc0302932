/*
 * vdeclient: the benchmark's real client, a generator or a sink built on
 * libvdeplug, moving one frame per vde_send/vde_recv call as qemu and
 * vde_plug do (a sink waits in poll(2) on vde_datafd, then takes one frame,
 * as vde_plug's loop does). test/bench compiles it at start:
 *
 *	gcc -O2 -o vdeclient vdeclient.c -lvdeplug
 *
 *	vdeclient gen  URL -i RUN [-s SIZE] [-r RATE] [-t SECONDS] [-n MAXFRAMES]
 *	vdeclient sink URL -i RUN [-n MAXSEQ] [-l] [-w IDLE_MS] [-T HARD_SECONDS]
 *
 * URL is any vdeplug URL: vde://DIR to join a switch, a multilink or
 * multifs, hub://DIR to be a hub that others join (the ceiling: the hub is
 * then inside this process, one socket hop from its peers).
 *
 * The conversation with the bench is line by line on stdin/stdout:
 *  - both print "ready" once vde_open has returned (the peer is joined);
 *  - gen waits for "go", sends, prints its result line, and leaves at the
 *    next line or at EOF (so that it stays joined until the sinks are done);
 *  - sink counts what arrives; a line with a number is the count the
 *    generator sent: the sink stops when it has that many distinct frames
 *    or none came for IDLE_MS (default 150), or HARD_SECONDS (default 30)
 *    after it started, and prints its result line.
 * Result lines are "result key=value ..." with times from CLOCK_MONOTONIC
 * in nanoseconds (one clock for every process on the machine).
 *
 * A frame is the bench's test frame (test/bench/traffic.go): a broadcast
 * Ethernet header with EtherType 0x88b5, then "mfbn", the run id (u32),
 * the sequence number (u64) and the send time (i64 ns), big-endian. gen
 * sends as fast as vde_send takes frames (a full socket is waited for in
 * poll(2)) or, with -r, RATE frames/s in small bursts after each wake-up.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <libvdeplug.h>

#define HDR 14
#define MIN_FRAME (HDR + 4 + 4 + 8 + 8)
#define MAX_FRAME 9216
#define MAX_LAT (1u << 22) /* latencies kept: 32 MiB at most */

static const unsigned char magic[4] = {'m', 'f', 'b', 'n'};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "vdeclient: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: vdeclient gen URL -i RUN [-s SIZE] [-r RATE] [-t SECONDS] [-n MAXFRAMES]\n"
			"       vdeclient sink URL -i RUN [-n MAXSEQ] [-l] [-w IDLE_MS] [-T HARD_SECONDS]\n");
	exit(2);
}

/* Reads one line from stdin (at most len-1 bytes); 0 at EOF. */
static int read_line(char *buf, size_t len)
{
	size_t n = 0;
	while (n + 1 < len) {
		ssize_t r = read(0, buf + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = 0;
	return 1;
}

/* Waits for the line "go" on stdin; frames (and, for a hub, joins) that
 * arrive meanwhile are taken by vde_recv so that a hub can accept its
 * peers. */
static void wait_go(VDECONN *conn)
{
	char line[64], buf[MAX_FRAME];
	struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = vde_datafd(conn), .events = POLLIN}};
	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (p[1].revents & POLLIN)
			vde_recv(conn, buf, sizeof(buf), 0);
		if (p[0].revents & (POLLIN | POLLHUP)) {
			if (!read_line(line, sizeof(line)))
				exit(1); /* the bench went away */
			if (strcmp(line, "go") == 0)
				return;
		}
	}
}

static void fill(unsigned char *f, int size)
{
	memset(f, 0xff, 6);
	memcpy(f + 6, "\x02\x00\x00\x6d\x66\x63", 6);
	f[12] = 0x88;
	f[13] = 0xb5;
	memcpy(f + HDR, magic, 4);
	for (int i = MIN_FRAME; i < size; i++)
		f[i] = (unsigned char)i;
}

static void stamp(unsigned char *f, uint32_t run, uint64_t seq, int64_t t)
{
	uint32_t r = htobe32(run);
	uint64_t s = htobe64(seq), ts = htobe64((uint64_t)t);
	memcpy(f + HDR + 4, &r, 4);
	memcpy(f + HDR + 8, &s, 8);
	memcpy(f + HDR + 16, &ts, 8);
}

/* Sends one frame; a full socket (EAGAIN, ENOBUFS) is waited for. */
static void send_one(VDECONN *conn, unsigned char *f, int size, uint64_t *waits)
{
	for (;;) {
		if (vde_send(conn, f, size, 0) >= 0)
			return;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)
			die("vde_send");
		(*waits)++;
		struct pollfd p = {.fd = vde_datafd(conn), .events = POLLOUT};
		poll(&p, 1, 10);
	}
}

static int gen(VDECONN *conn, uint32_t run, int size, long rate, double secs, uint64_t max)
{
	unsigned char f[MAX_FRAME];
	uint64_t sent = 0, waits = 0;
	fill(f, size);
	wait_go(conn);
	int64_t start = now_ns(), stop = start + (int64_t)(secs * 1e9), t = start;
	if (rate <= 0) {
		while (sent < max && t < stop) {
			stamp(f, run, sent, t);
			send_one(conn, f, size, &waits);
			sent++;
			t = now_ns();
		}
	} else {
		/* A 1 ns timer slack: the default 50 µs would make the bursts
		 * longer than the interval at these rates. */
		prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0);
		int64_t interval = 1000000000 / rate;
		uint64_t total = (uint64_t)((int64_t)(secs * 1e9) / interval);
		if (total > max)
			total = max;
		struct timespec nap = {.tv_sec = 0, .tv_nsec = interval / 2};
		while (sent < total) {
			uint64_t due = (uint64_t)((now_ns() - start) / interval) + 1;
			if (due > total)
				due = total;
			while (sent < due) {
				stamp(f, run, sent, now_ns());
				send_one(conn, f, size, &waits);
				sent++;
			}
			nanosleep(&nap, NULL);
		}
	}
	int64_t end = now_ns();
	printf("result sent=%llu start_ns=%lld end_ns=%lld waits=%llu\n", (unsigned long long)sent,
			(long long)start, (long long)end, (unsigned long long)waits);
	/* Stay joined until the bench says the sinks are done: leaving would
	 * make a hub or a multilink drop what it still holds from us. */
	char line[64];
	read_line(line, sizeof(line));
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static int64_t pct(const int64_t *sorted, size_t n, double p)
{
	return n ? sorted[(size_t)(p / 100 * (double)(n - 1))] : 0;
}

static int sink(VDECONN *conn, uint32_t run, uint64_t maxseq, int lat, int idle_ms, double hard)
{
	unsigned char f[MAX_FRAME];
	uint8_t *seen = calloc((maxseq + 7) / 8, 1);
	int64_t *lats = NULL;
	size_t nlat = 0, cap = 0;
	if (!seen)
		die("calloc");
	if (lat) {
		cap = maxseq < MAX_LAT ? maxseq : MAX_LAT;
		if (!(lats = malloc(cap * sizeof(*lats))))
			die("malloc");
	}
	uint64_t frames = 0, bytes = 0, unique = 0, dups = 0, gaps = 0, beyond = 0, want = 0;
	uint64_t prev = UINT64_MAX, first_seq = UINT64_MAX;
	int64_t first = 0, last = 0, start = now_ns(), deadline = start + (int64_t)(hard * 1e9);
	int64_t last_at = start;
	int gen_done = 0, stdin_open = 1;
	char line[64];
	struct pollfd p[2] = {{.fd = vde_datafd(conn), .events = POLLIN}, {.fd = 0, .events = POLLIN}};
	for (;;) {
		int64_t t = now_ns();
		if (gen_done && (unique + beyond >= want || t - last_at > (int64_t)idle_ms * 1000000))
			break;
		if (t > deadline)
			break;
		int r = poll(p, stdin_open ? 2 : 1, 20);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (stdin_open && (p[1].revents & (POLLIN | POLLHUP))) {
			if (!read_line(line, sizeof(line))) {
				/* The bench went away: report what we have. */
				stdin_open = 0;
				gen_done = 1;
			} else {
				want = strtoull(line, NULL, 10);
				gen_done = 1;
			}
			last_at = now_ns();
		}
		if (!(p[0].revents & POLLIN))
			continue;
		ssize_t n = vde_recv(conn, f, sizeof(f), 0);
		/* A hub's vde_recv returns 1 for a join it handled. */
		if (n < MIN_FRAME || memcmp(f + HDR, magic, 4) != 0)
			continue;
		uint32_t r32;
		uint64_t seq, ts;
		memcpy(&r32, f + HDR + 4, 4);
		if (be32toh(r32) != run)
			continue;
		memcpy(&seq, f + HDR + 8, 8);
		memcpy(&ts, f + HDR + 16, 8);
		seq = be64toh(seq);
		t = now_ns();
		frames++;
		bytes += (uint64_t)n;
		if (!first) {
			first = t;
			first_seq = seq;
		}
		last = last_at = t;
		if (prev != UINT64_MAX && seq != prev + 1)
			gaps++;
		prev = seq;
		if (seq < maxseq) {
			if (seen[seq / 8] & (1u << (seq % 8)))
				dups++;
			else {
				seen[seq / 8] |= 1u << (seq % 8);
				unique++;
			}
		} else
			beyond++;
		if (lats && nlat < cap)
			lats[nlat++] = t - (int64_t)be64toh(ts);
	}
	int64_t p50 = 0, p99 = 0, pmax = 0;
	if (nlat) {
		qsort(lats, nlat, sizeof(*lats), cmp_i64);
		p50 = pct(lats, nlat, 50);
		p99 = pct(lats, nlat, 99);
		pmax = lats[nlat - 1];
	}
	printf("result frames=%llu bytes=%llu unique=%llu dups=%llu gaps=%llu beyond=%llu first_seq=%lld last_seq=%lld first_ns=%lld last_ns=%lld"
			" lat_n=%zu p50_ns=%lld p99_ns=%lld max_ns=%lld\n",
			(unsigned long long)frames, (unsigned long long)bytes, (unsigned long long)unique,
			(unsigned long long)dups, (unsigned long long)gaps, (unsigned long long)beyond,
			(long long)first_seq, (long long)prev,
			(long long)first, (long long)last, nlat, (long long)p50, (long long)p99, (long long)pmax);
	return 0;
}

int main(int argc, char *argv[])
{
	if (argc < 3)
		usage();
	const char *mode = argv[1];
	char *url = argv[2];
	int is_gen = strcmp(mode, "gen") == 0;
	if (!is_gen && strcmp(mode, "sink") != 0)
		usage();
	uint32_t run = 0;
	int size = 64, lat = 0, idle_ms = 150, opt;
	long rate = 0;
	double secs = 1, hard = 30;
	uint64_t max = 1 << 24;
	optind = 3;
	while ((opt = getopt(argc, argv, "i:s:r:t:n:lw:T:")) != -1) {
		switch (opt) {
		case 'i': run = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 's': size = atoi(optarg); break;
		case 'r': rate = atol(optarg); break;
		case 't': secs = atof(optarg); break;
		case 'n': max = strtoull(optarg, NULL, 10); break;
		case 'l': lat = 1; break;
		case 'w': idle_ms = atoi(optarg); break;
		case 'T': hard = atof(optarg); break;
		default: usage();
		}
	}
	if (size < MIN_FRAME || size > MAX_FRAME || max == 0 || max > (1ull << 32) || secs <= 0 || hard <= 0 ||
			rate < 0 || rate > 1000000000 || idle_ms < 0) {
		fprintf(stderr, "vdeclient: -s must be %d..%d, -n 1..2^32, -r 0..10^9, -w 0 or more, -t and -T above 0\n",
				MIN_FRAME, MAX_FRAME);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	VDECONN *conn = vde_open(url, "bench vdeclient", NULL);
	if (!conn)
		die(url);
	printf("ready\n");
	int rc = is_gen ? gen(conn, run, size, rate, secs, max) : sink(conn, run, max, lat, idle_ms, hard);
	vde_close(conn);
	return rc;
}
