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

// The table is bounded per uid (of the closed peer, from SO_PEERCRED) and
// in all, and neither bound lets one user's closes undo another's:
//
//   - maxRefusedPerUID: a uid holding that many drops its own oldest to
//     make room for its next. Under mode=0666 anyone can join and close
//     links: a user closing a thousand processes of its own forgets only
//     its own, never root's closed ptp client.
//   - maxRefused bounds the pidfds held in all, or a quarter of the
//     daemon's descriptor limit if that is less (never below
//     maxRefusedPerUID), so that closed processes cannot take the
//     descriptors links need. Only several uids together can fill it (one
//     reaches maxRefusedPerUID first, unless the limit is that low).
//     When it is full the entry that goes is the oldest of the uid holding
//     the most, and only if that uid keeps at least as many as the uid
//     adding will hold: a uid's share can be cut down only by a uid
//     holding fewer, so a uid's newest entry is never taken by another
//     uid. If no such entry exists (every uid holds as few as the one
//     adding), the uid adding drops its own oldest, or, holding none, its
//     close is not recorded (add reports false): thousands of uids, each
//     with a live closed process, can crowd out a newcomer, never an entry
//     already held.
//
// An entry also goes when its process exits (its pidfd is readable); the
// dead are pruned at each add, before any live entry is dropped for room.
const (
	maxRefusedPerUID = 1024
	maxRefused       = 16 * maxRefusedPerUID
)

// noPidfdTTL is how long an entry lasts without a pidfd (a kernel before
// 5.3, which has neither SO_PEERPIDFD nor pidfd_open): long enough for the
// reconnect, which comes at once, too short for the pid to come round
// again.
const noPidfdTTL = 10 * time.Second

type refusal struct {
	host  bool
	pid   int32
	uid   uint32 // the closed peer's
	pidfd int    // -1: none, the entry expires after noPidfdTTL
	link  uint64
	added time.Time
	seq   uint64 // order of adds
}

type refKey struct {
	host bool
	pid  int32
}

func (e *refusal) key() refKey { return refKey{e.host, e.pid} }

// refusals is the table of closed-for-good processes. The zero value is
// ready, with the bounds above.
//
// A connect looks its process up in a map. The pidfds are watched by an
// epoll instance, so that pruning the dead costs what exited, not what is
// held: a full table is 16,384 pidfds, and asking each of them at every
// close took 9 ms.
type refusals struct {
	mu     sync.Mutex
	byKey  map[refKey]*refusal
	byUID  map[uint32][]*refusal // each uid's, oldest first
	n      int
	seq    uint64
	noFD   []*refusal // the entries without a pidfd, oldest first (some already dropped)
	ep     int        // the epoll instance watching the pidfds; 0: not made yet, -1: none to be had
	closed bool
	// Bounds; zero means maxRefusedPerUID and defaultCapAll() (tests
	// make them small).
	capUID, capAll int
}

// add remembers that process pid of user uid (pidfd, if not -1, refers to
// the process) may not rejoin the entry host says. It takes over pidfd.
// It reports false only if there was no room: the table is full of other
// uids' entries, none of which may go for it (see maxRefused). A process
// already gone, or an add once closeAll ran, keeps nothing and is no
// failure.
func (r *refusals) add(host bool, pid int32, uid uint32, pidfd int, link uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	e := &refusal{host: host, pid: pid, uid: uid, pidfd: pidfd, link: link, added: now}
	// A process already gone (a client that handed its socket to another
	// and exited) leaves nothing to refuse, and its pidfd is not held.
	if r.closed || gone(*e, now) {
		closeFD(pidfd)
		return true
	}
	if r.byKey == nil {
		r.byKey = make(map[refKey]*refusal)
		r.byUID = make(map[uint32][]*refusal)
	}
	if old := r.byKey[e.key()]; old != nil {
		r.dropLocked(old)
	}
	// The only place the table grows: drop the dead here, before any live
	// entry is dropped for room.
	r.pruneLocked(now)
	capUID, capAll := r.bounds()
	switch own := len(r.byUID[uid]); {
	case own >= capUID:
		r.dropLocked(r.byUID[uid][0])
	case r.n >= capAll:
		if v, n := r.largestLocked(); n > own+1 {
			r.dropLocked(r.byUID[v][0])
		} else if own > 0 {
			r.dropLocked(r.byUID[uid][0])
		} else {
			closeFD(pidfd)
			return false
		}
	}
	r.seq++
	e.seq = r.seq
	r.byKey[e.key()] = e
	r.byUID[uid] = append(r.byUID[uid], e)
	r.n++
	if pidfd < 0 {
		r.noFD = append(r.noFD, e)
	} else if ep := r.epollLocked(); ep >= 0 {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: pid}
		if host {
			ev.Pad = 1
		}
		// Should this fail (the user's epoll watches used up), the entry
		// is still held and checked at each reconnect; only its pruning
		// waits for its uid's bound or a reconnect.
		unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, pidfd, &ev)
	}
	return true
}

func (r *refusals) bounds() (capUID, capAll int) {
	if r.capUID == 0 {
		r.capUID = maxRefusedPerUID
	}
	if r.capAll == 0 {
		r.capAll = defaultCapAll()
	}
	return r.capUID, r.capAll
}

// defaultCapAll is maxRefused, or a quarter of RLIMIT_NOFILE (which Go
// raises to the hard limit at start) if that is less, but at least
// maxRefusedPerUID.
func defaultCapAll() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur/4 >= maxRefused {
		return maxRefused
	}
	return max(int(lim.Cur/4), maxRefusedPerUID)
}

func (r *refusals) epollLocked() int {
	if r.ep == 0 {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			ep = -1
		}
		r.ep = ep
	}
	return r.ep
}

// largestLocked returns the uid holding the most entries and how many;
// among uids holding as many, the one with the oldest entry.
func (r *refusals) largestLocked() (uid uint32, n int) {
	var oldest uint64
	for u, q := range r.byUID {
		if len(q) > n || len(q) == n && q[0].seq < oldest {
			uid, n, oldest = u, len(q), q[0].seq
		}
	}
	return uid, n
}

// refuses reports whether the process pid, connecting to the entry host
// says, is one closed for good that still runs.
func (r *refusals) refuses(host bool, pid int32) (refusal, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byKey[refKey{host, pid}]
	if e == nil {
		return refusal{}, false
	}
	if gone(*e, time.Now()) {
		r.dropLocked(e)
		r.idleLocked()
		return refusal{}, false
	}
	return *e, true
}

// len is how many entries are held, the dead ones pruned first.
func (r *refusals) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(time.Now())
	return r.n
}

// lenUID is how many entries uid holds, the dead ones pruned first.
func (r *refusals) lenUID(uid uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(time.Now())
	return len(r.byUID[uid])
}

// closeAll drops every entry; later adds are ignored.
func (r *refusals) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.byKey {
		closeFD(e.pidfd)
	}
	r.byKey, r.byUID, r.noFD, r.n = nil, nil, nil, 0
	if r.ep > 0 {
		unix.Close(r.ep)
	}
	r.ep = -1
	r.closed = true
}

// pruneLocked drops the entries of processes that exited (their pidfds
// are readable: epoll says which) and those without a pidfd whose time is
// up.
func (r *refusals) pruneLocked(now time.Time) {
	if r.n == 0 {
		return
	}
	if r.ep > 0 {
		var evs [64]unix.EpollEvent
		for {
			k, err := unix.EpollWait(r.ep, evs[:], 0)
			if err == unix.EINTR {
				continue
			}
			for _, ev := range evs[:max(k, 0)] {
				e := r.byKey[refKey{host: ev.Pad == 1, pid: ev.Fd}]
				if e != nil && e.pidfd >= 0 && gone(*e, now) {
					r.dropLocked(e) // closing its pidfd ends the watch
				}
			}
			if err != nil || k < len(evs) {
				break
			}
		}
	} else if r.ep < 0 {
		// No epoll: ask every pidfd.
		for _, e := range r.byKey {
			if e.pidfd >= 0 && gone(*e, now) {
				r.dropLocked(e)
			}
		}
	}
	for len(r.noFD) > 0 {
		e := r.noFD[0]
		if r.byKey[e.key()] == e && !gone(*e, now) {
			break
		}
		if r.byKey[e.key()] == e {
			r.dropLocked(e)
		}
		r.noFD[0] = nil
		r.noFD = r.noFD[1:]
	}
	r.idleLocked()
}

// idleLocked closes the epoll instance of an empty table: the daemon holds
// no descriptor for a record of nothing. The next add makes another.
func (r *refusals) idleLocked() {
	if r.n == 0 && r.ep > 0 {
		unix.Close(r.ep)
		r.ep = 0
	}
}

// dropLocked forgets e, which is held, and closes its pidfd.
func (r *refusals) dropLocked(e *refusal) {
	closeFD(e.pidfd)
	delete(r.byKey, e.key())
	q := r.byUID[e.uid]
	for i, o := range q {
		if o == e {
			q = append(q[:i], q[i+1:]...)
			q[len(q) : len(q)+1][0] = nil
			break
		}
	}
	if len(q) == 0 {
		delete(r.byUID, e.uid)
	} else {
		r.byUID[e.uid] = q
	}
	r.n--
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
