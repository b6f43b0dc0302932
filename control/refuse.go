package control

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A close through a link's close file must end the link. Newer vdeplug4's
// ptp client (libvdeplug_ptp.c) reconnects the moment its connection is
// hung up, so the close alone would only renumber it and a ptp hand-off
// could never finish. Its reconnect waits for our one-byte ack: a nonzero
// one fails it, and vde_plug then exits. So the process whose seqpacket
// port was closed for good is remembered, per entry (links, host), and its
// connections there get the ack ackRefused while it lives.
//
// SO_PEERCRED names the process by pid, and a pid is given to another
// process once the first is gone. Each entry therefore holds a pidfd of
// the process itself (SO_PEERPIDFD of the closed connection, so not even a
// pid reused before the close can be mistaken for it) and is dropped as
// soon as the pidfd says the process exited: a later process with that
// pid is admitted.

// ackRefused is the ack byte for a refused reconnect. ECONNREFUSED says
// what happened (the daemon refuses this client) without suggesting a
// permission to fix, as EPERM would, or a duplicate, as the second host's
// EISCONN does; the reconnect fails with it and the daemon's log says why.
const ackRefused = unix.ECONNREFUSED

// maxRefused bounds the table, and the pidfds it holds: beyond it the
// oldest entry goes.
const maxRefused = 1024

// noPidfdTTL is how long an entry lasts without a pidfd (a kernel before
// 5.3, which has neither SO_PEERPIDFD nor pidfd_open): long enough for the
// reconnect, which comes at once, too short for the pid to come round
// again.
const noPidfdTTL = 10 * time.Second

type refusal struct {
	host  bool
	pid   int32
	pidfd int // -1: none, the entry expires after noPidfdTTL
	link  uint64
	added time.Time
}

// refusals is the table of closed-for-good processes. The zero value is
// ready.
type refusals struct {
	mu     sync.Mutex
	list   []refusal // oldest first
	closed bool
}

// add remembers that process pid (pidfd, if not -1, refers to it) may not
// rejoin the entry host says. It takes over pidfd.
func (r *refusals) add(host bool, pid int32, pidfd int, link uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		closeFD(pidfd)
		return
	}
	// The only place the table grows: drop the dead here, so their
	// pidfds do not pile up however many processes come and go.
	r.pruneLocked(time.Now())
	for i, e := range r.list {
		if e.host == host && e.pid == pid {
			r.dropLocked(i)
			break
		}
	}
	if len(r.list) >= maxRefused {
		r.dropLocked(0)
	}
	r.list = append(r.list, refusal{host: host, pid: pid, pidfd: pidfd, link: link, added: time.Now()})
	// A process already gone (a client that handed its socket to another
	// and exited) leaves nothing to refuse: its entry goes now, not at
	// the next add, so its pidfd is not held meanwhile.
	r.pruneLocked(time.Now())
}

// refuses reports whether the process pid, connecting to the entry host
// says, is one closed for good that still runs.
func (r *refusals) refuses(host bool, pid int32) (refusal, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range r.list {
		if e.host != host || e.pid != pid {
			continue
		}
		if gone(e, time.Now()) {
			r.dropLocked(i)
			return refusal{}, false
		}
		return e, true
	}
	return refusal{}, false
}

// len is how many entries are held, the dead ones pruned first.
func (r *refusals) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(time.Now())
	return len(r.list)
}

// closeAll drops every entry; later adds are ignored.
func (r *refusals) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.list {
		closeFD(e.pidfd)
	}
	r.list = nil
	r.closed = true
}

// pruneLocked drops the entries of processes that exited, asking all the
// pidfds in one poll(2).
func (r *refusals) pruneLocked(now time.Time) {
	if len(r.list) == 0 {
		return
	}
	fds := make([]unix.PollFd, len(r.list))
	for i, e := range r.list {
		fds[i] = unix.PollFd{Fd: int32(e.pidfd), Events: unix.POLLIN} // a negative fd is skipped
	}
	for {
		if _, err := unix.Poll(fds, 0); err != unix.EINTR {
			break
		}
	}
	keep := r.list[:0]
	for i, e := range r.list {
		if e.pidfd >= 0 && fds[i].Revents != 0 || e.pidfd < 0 && now.Sub(e.added) > noPidfdTTL {
			closeFD(e.pidfd)
			continue
		}
		keep = append(keep, e)
	}
	clear(r.list[len(keep):])
	r.list = keep
}

func (r *refusals) dropLocked(i int) {
	closeFD(r.list[i].pidfd)
	r.list = append(r.list[:i], r.list[i+1:]...)
}

// gone reports whether e's process has exited: its pidfd is readable (a
// zombie counts, and its pid cannot be reused before it is reaped).
func gone(e refusal, now time.Time) bool {
	if e.pidfd < 0 {
		return now.Sub(e.added) > noPidfdTTL
	}
	fds := []unix.PollFd{{Fd: int32(e.pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		// An error or POLLNVAL would be our bug; err on the side of
		// admitting.
		return err != nil || n > 0
	}
}

// peerPidfd returns a pidfd of the process at the other end of the
// connected socket fd, whose SO_PEERCRED pid is pid, or -1 if there is none
// to be had; gone is true if that process has already exited.
func peerPidfd(fd int, pid int32) (pidfd int, exited bool) {
	// Linux 6.5: the process that connected, whatever became of its pid.
	pidfd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if err == nil {
		return pidfd, false
	}
	if err == unix.ESRCH {
		return -1, true
	}
	// Linux 5.3: the pid as it is now. The connection is still open, so
	// unless it was handed to another process, its peer still runs and
	// holds the pid.
	pidfd, err = unix.PidfdOpen(int(pid), 0)
	if err == nil {
		return pidfd, false
	}
	return -1, err == unix.ESRCH
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
