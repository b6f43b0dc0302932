package engine

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The hot loop: one thread serves every busy receiver of the daemon.
//
// A receiver that waits for its next frames in poll(2) on a thread of its
// own sleeps whenever its queue is empty and is woken for the next frame:
// with the host and a link busy at once (a TCP stream through a tap: data
// one way, acks the other), each daemon made many times the context
// switches of the reference's single loop, which finds one descriptor or
// the other ready nearly every time it looks (figures: docs/performance.md).
// So a receiver that just had frames joins the loop, which waits for all
// its members in one epoll_wait, receives from whichever is ready and
// forwards the batch right there (Receiver.Deliver); a member that stays empty for
// hotIdle goes back to its own goroutine, which parks it in the poller
// (poller.go). Waiting to send still happens in the sender's own goroutine.
//
// The loop forwards on its own thread, so a host that makes a sender wait
// (HostWait) holds the other members too, as it holds the reference's
// loop; the host's wait is bounded, and a host that keeps its socket full
// is not waited for again.

type hotMember struct {
	p    *FD // delivers to p.rx.r
	last time.Time
	back chan error // the member's goroutine waits here while served
	// again: p's turn ended with frames already read, waiting in its
	// buffer (a stream's); it is in the loop's again list. The loop's
	// thread only.
	again bool
}

type hotLoop struct {
	epollSet // woken when a member joins a loop asleep, or to stop
	mu       sync.Mutex
	members  map[int32]*hotMember // by token, the epoll data
	next     int32
	asleep   bool // waiting with no member, for long
	stopped  bool // stop was called: no more members
	done     chan struct{}
	// again are the members whose turn ended with frames read and not
	// yet delivered (a stream's buffer): epoll does not report those, so
	// the loop serves them again after the next look at the others.
	// spare is again's other slice. The loop's thread only.
	again, spare []int32
}

func newHotLoop() (*hotLoop, error) {
	l := &hotLoop{members: make(map[int32]*hotMember), done: make(chan struct{})}
	var err error
	if l.epollSet, err = newEpollSet("hot loop"); err != nil {
		return nil, err
	}
	go l.run()
	return l, nil
}

// stop hands every member back (closed) and ends the loop; serve refuses
// new members afterwards.
func (l *hotLoop) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	l.wake()
	<-l.done
	l.free()
}

// serve hands p to the loop until p stays idle for hotIdle (nil: park it)
// or its receive ends (the error: EOF, closed, failed).
func (l *hotLoop) serve(p *FD) error {
	if !p.enter() {
		return os.ErrClosed
	}
	m := &hotMember{p: p, last: time.Now(), back: make(chan error, 1)}
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		p.leave()
		return errEngineClosed
	}
	l.next++
	if l.next <= 0 { // tokens stay positive: wakeToken is the eventfd's
		l.next = 1
	}
	tok := l.next
	l.members[tok] = m
	// A loop asleep for want of members must wake to sweep this one
	// (idle, closed) in time.
	wake := l.asleep
	l.asleep = false
	l.mu.Unlock()
	if wake {
		l.wake()
	}
	// Level-triggered: whatever is queued keeps reporting until read.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: tok}
	// The membership holds p's descriptor open (the enter above, left at
	// release): a Close shuts the socket down, which the loop sees, and
	// the descriptor is closed when the loop lets go of it.
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, p.fd, &ev); err != nil {
		p.leave()
		l.mu.Lock()
		delete(l.members, tok)
		l.mu.Unlock()
		return nil
	}
	return <-m.back
}

func (l *hotLoop) run() {
	defer close(l.done)
	// One thread for the loop: with epollWaitKeepingP, the loop's P then
	// never changes hands, which made the slower frames faster still
	// (docs/performance.md).
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 64)
	lastSweep := time.Now()
	// Read at each sweep rather than each wait: it takes the scheduler's
	// lock, and Go may change it while running (cgroup limits).
	oneP := runtime.GOMAXPROCS(0) == 1
	const sweepMs = int(hotIdle / time.Millisecond / 5)
	for {
		// Members are swept every hotIdle/5, for idleness and for a
		// close that woke nobody (a tap's: only a socket's close shuts
		// it down, which wakes the loop). With none, the loop sleeps
		// until one joins.
		l.mu.Lock()
		asleep := len(l.members) == 0
		l.asleep = asleep
		l.mu.Unlock()
		wait := sweepMs
		if len(l.again) > 0 {
			wait = 0 // frames wait already: only look for others'
		}
		var n int
		var err error
		switch {
		case asleep:
			l.again = l.again[:0] // all released
			n, err = unix.EpollWait(l.epfd, events, -1)
		case oneP:
			n, err = unix.EpollWait(l.epfd, events, wait)
		default:
			n, err = epollWaitKeepingP(l.epfd, events, wait)
		}
		if err != nil && err != unix.EINTR {
			panic(fmt.Sprintf("epoll_wait: %v", err)) // only a bug gets here
		}
		now := time.Now()
		for _, e := range events[:max(n, 0)] {
			if e.Fd == wakeToken {
				l.drain()
				l.mu.Lock()
				stopped := l.stopped
				l.mu.Unlock()
				if stopped {
					l.releaseAll()
					return
				}
				continue
			}
			l.mu.Lock()
			m := l.members[e.Fd]
			l.mu.Unlock()
			if m != nil && !m.again { // one turn a round: its own is below
				l.step(e.Fd, m, now)
			}
		}
		l.serveAgain(now)
		if now.Sub(lastSweep) >= hotIdle/5 {
			lastSweep = now
			l.sweep(now)
			oneP = runtime.GOMAXPROCS(0) == 1
		}
	}
}

// step receives from a ready member and delivers what came, again at once
// while batches come full, up to a few: then the others get their turn.
// What is left in the socket is reported ready again anyway, but asking
// costs an epoll_wait. Frames a stream has read already the socket,
// maybe empty, would not report: the member goes on the again list.
func (l *hotLoop) step(tok int32, m *hotMember, now time.Time) {
	p := m.p
	for round := 0; round < 4; round++ {
		if p.closing.Load() {
			l.release(tok, m, os.ErrClosed)
			return
		}
		if !p.attempt(p.rxOp) {
			return // nothing after all
		}
		b, k, err := p.finishRecv(nil)
		if err != nil {
			l.release(tok, m, err)
			return
		}
		m.last = now
		p.rx.r.Deliver(b, k)
		if p.rx.drained {
			return
		}
	}
	if p.rxMore() && !m.again {
		m.again = true
		l.again = append(l.again, tok)
	}
}

// serveAgain gives each member on the again list (step) its next turn,
// once every ready member has had one: a stream that floods takes its
// turn with the others, not the loop for as long as it floods.
func (l *hotLoop) serveAgain(now time.Time) {
	if len(l.again) == 0 {
		return
	}
	turn := l.again
	l.again = l.spare[:0]
	for _, tok := range turn {
		l.mu.Lock()
		m := l.members[tok]
		l.mu.Unlock()
		if m != nil { // not released since: tokens are not reused
			m.again = false
			l.step(tok, m, now)
		}
	}
	l.spare = turn[:0]
}

// sweep hands back the members idle for hotIdle, and closed ones.
func (l *hotLoop) sweep(now time.Time) {
	type out struct {
		tok int32
		m   *hotMember
	}
	var done []out
	l.mu.Lock()
	for tok, m := range l.members {
		if now.Sub(m.last) >= hotIdle || m.p.closing.Load() {
			done = append(done, out{tok, m})
		}
	}
	l.mu.Unlock()
	for _, d := range done {
		var err error
		if d.m.p.closing.Load() {
			err = os.ErrClosed
		}
		l.release(d.tok, d.m, err)
	}
}

// releaseAll hands every member back, closed: the loop stops.
func (l *hotLoop) releaseAll() {
	l.mu.Lock()
	all := make(map[int32]*hotMember, len(l.members))
	for tok, m := range l.members {
		all[tok] = m
	}
	l.mu.Unlock()
	for tok, m := range all {
		l.release(tok, m, errEngineClosed)
	}
}

// has reports whether p is a member now.
func (l *hotLoop) has(p *FD) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.members {
		if m.p == p {
			return true
		}
	}
	return false
}

// count is how many members the loop has now.
func (l *hotLoop) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.members)
}

// release takes m out of the loop, lets go of its descriptor and wakes its
// goroutine with err.
func (l *hotLoop) release(tok int32, m *hotMember, err error) {
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, m.p.fd, nil)
	m.p.leave()
	l.mu.Lock()
	delete(l.members, tok)
	l.mu.Unlock()
	m.back <- err
}

// epollWaitKeepingP is epoll_wait without telling Go's scheduler, so the
// loop keeps its P (its right to run Go code) while it waits. With the
// ordinary call, the P was often handed to another thread during the wait
// (idle Ps, as GODEBUG=schedtrace showed), and the loop had to get one
// back on waking: the latency link→host had a second, slower mode, a large
// share of the frames; keeping the P made it one mode again (the figures
// are in docs/performance.md).
// The price is a P busy while the loop waits, so the loop waits so only
// while it has members, for at most hotIdle/5, and never when it would
// hold the daemon's only P (GOMAXPROCS 1). A preemption signal (the
// garbage collector's, the scheduler's) interrupts the wait (EINTR), and
// the loop then yields at its next function call as any goroutine does.
func epollWaitKeepingP(epfd int, events []unix.EpollEvent, msec int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
