/*
 * sendcount: an LD_PRELOAD shim for the hand-off's picture (test/bench,
 * handoff_trace.go). In a vde_plug, it counts the frames vde_send(3) gives
 * the connection opened on the VNL $MFBENCH_PEER, in the
 * first 8 bytes of $MFBENCH_COUNT (a file the bench made and reads while
 * the link runs), so that the bench sees how many frames each link gave
 * the far multilink. The same count for multifs and for vde_plug multi://,
 * at the cost of one relaxed atomic add per frame.
 *
 * It wraps libvdeplug's API (vde_open_real, vde_send), which vde_plug's
 * own code calls: libvdeplug opens its plugins with RTLD_DEEPBIND, so a
 * shim on libc's send(2) would never see the plugins' sends.
 *
 *   gcc -O2 -Wall -shared -fPIC -o sendcount.so sendcount.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

typedef struct vdeconn VDECONN;
struct vde_open_args;

static unsigned long long *counter;
static void *counted; /* the connection to the far multilink */

VDECONN *vde_open_real(char *vnl, char *descr, int interface_version, struct vde_open_args *open_args)
{
	VDECONN *(*real)(char *, char *, int, struct vde_open_args *) =
		(VDECONN * (*)(char *, char *, int, struct vde_open_args *)) dlsym(RTLD_NEXT, "vde_open_real");
	if (real == NULL)
		return NULL;
	VDECONN *conn = real(vnl, descr, interface_version, open_args);
	const char *peer = getenv("MFBENCH_PEER");
	const char *file = getenv("MFBENCH_COUNT");
	if (conn != NULL && vnl != NULL && peer != NULL && *peer != '\0' && file != NULL &&
	    strcmp(vnl, peer) == 0 && counted == NULL) {
		int fd = open(file, O_RDWR | O_CLOEXEC);
		if (fd >= 0) {
			void *p = mmap(NULL, sizeof *counter, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (p != MAP_FAILED) {
				counter = p;
				counted = conn;
			}
			close(fd);
		}
	}
	return conn;
}

ssize_t vde_send(VDECONN *conn, const void *buf, size_t len, int flags)
{
	static ssize_t (*real)(VDECONN *, const void *, size_t, int);
	if (real == NULL)
		real = (ssize_t (*)(VDECONN *, const void *, size_t, int))dlsym(RTLD_NEXT, "vde_send");
	if (real == NULL)
		return -1;
	ssize_t n = real(conn, buf, len, flags);
	if (n >= 0 && counter != NULL && (void *)conn == counted)
		__atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
	return n;
}
