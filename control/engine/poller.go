package engine

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Waiting for descriptors, without Go's network poller.
//
// Go's poller registers a descriptor for every readiness edge, whether or
// not anyone waits: each frame that arrives on a data socket, and each
// frame the peer takes off one, wakes the thread sleeping in epoll_wait,
// which finds nothing to do. On a two-CPU machine those wake-ups, one or
// two per frame, took more time than forwarding the frame (the latency
// with and without them is in docs/performance.md).
//
// So the daemon's descriptors are not in Go's poller, and they wait in one
// of three ways:
//
//   - a busy receiver is served by the hot loop (hotloop.go);
//   - a busy sender, or a receiver kept out of the loop (a host's socket),
//     waits in poll(2) on its own thread right after it did I/O, which the
//     kernel wakes directly, as it wakes the reference's loop. Only hotIdle
//     long, and at most maxHot threads at once, so a thousand links cost
//     no thread;
//   - idle: the goroutine parks on a channel, and the descriptor is armed,
//     one-shot, in the poller's own epoll instance, watched by one
//     goroutine. One-shot means an idle descriptor is woken at most once,
//     and a busy one, which is not armed, never.
const (
	hotIdle = 50 * time.Millisecond
	maxHot  = 8
)

// hotWait waits in poll(2) for ev and attempts o, until o is over (true),
// the deadline passes (os.ErrDeadlineExceeded), the descriptor closes, or
// nothing came for hotIdle or no thread may be held (false, nil: the
// caller parks). tried says whether the caller attempted o since the
// descriptor last waited. The caller has entered p.
func (p *FD) hotWait(o op, ev uint32, deadline time.Time, tried bool) (bool, error) {
	hot := &p.e.hotWaiters
	if hot.Add(1) > maxHot {
		hot.Add(-1)
		if !tried {
			return p.attempt(o), nil
		}
		return false, nil
	}
	defer hot.Add(-1)
	p.waitState.Store(uint32(waitingHot))
	defer p.waitState.Store(uint32(notWaiting))
	events := int16(unix.POLLIN)
	if ev == unix.EPOLLOUT {
		events = unix.POLLOUT
	}
	pfd := []unix.PollFd{{Fd: int32(p.fd), Events: events}}
	for !p.closing.Load() {
		wait := hotIdle
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return false, os.ErrDeadlineExceeded
			}
			wait = min(wait, left)
		}
		ms := int((wait + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.Poll(pfd, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, err
		}
		if n == 0 && (deadline.IsZero() || time.Until(deadline) > 0) {
			return false, nil // idle: give the thread back
		}
		if p.attempt(o) {
			return true, nil
		}
	}
	return false, nil // closing: park sees it
}

// park waits in the shared epoll until fd reports ev, the deadline passes
// or the descriptor closes. A wake-up may be spurious: the caller retries
// its system call.
func (p *FD) park(ev uint32, deadline time.Time) error {
	ch := p.readable
	if ev == unix.EPOLLOUT {
		ch = p.writable
	}
	select { // a token left from an earlier wait
	case <-ch:
	default:
	}
	if err := p.e.poller.arm(p, ev); err != nil {
		return err
	}
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	p.waitState.Store(uint32(waitingParked))
	defer p.waitState.Store(uint32(notWaiting))
	select {
	case <-ch:
		return nil
	case <-p.gone:
		return os.ErrClosed
	case <-expired:
		return os.ErrDeadlineExceeded
	}
}

// poller is the epoll instance of idle descriptors and its one watcher.
type poller struct {
	epollSet // woken by close: it stops the watcher
	mu       sync.Mutex
	fds      map[int32]*FD
	closed   bool          // closeFDs ran: no more adds
	done     chan struct{} // closed when watch has returned
}

func newPoller() (*poller, error) {
	pl := &poller{fds: make(map[int32]*FD), done: make(chan struct{})}
	var err error
	if pl.epollSet, err = newEpollSet("poller"); err != nil {
		return nil, err
	}
	go pl.watch()
	return pl, nil
}

// closeFDs refuses further adds and returns the descriptors registered,
// for the engine to close.
func (pl *poller) closeFDs() []*FD {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.closed = true
	fds := make([]*FD, 0, len(pl.fds))
	for _, p := range pl.fds {
		fds = append(fds, p)
	}
	return fds
}

// close stops the watcher, once every descriptor is removed, and releases
// the epoll instance.
func (pl *poller) close() {
	pl.mu.Lock()
	pl.closed = true
	pl.mu.Unlock()
	pl.wake()
	<-pl.done
	pl.free()
}

// add registers p, armed for nothing yet.
func (pl *poller) add(p *FD) error {
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return errEngineClosed
	}
	pl.fds[int32(p.fd)] = p
	pl.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(p.fd)}
	if err := unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_ADD, p.fd, &ev); err != nil {
		pl.mu.Lock()
		delete(pl.fds, int32(p.fd))
		pl.mu.Unlock()
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// remove unregisters p before its descriptor is closed, so that the number
// can be reused safely.
func (pl *poller) remove(p *FD) {
	p.wait.Lock()
	p.wait.closed = true
	unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_DEL, p.fd, nil)
	p.wait.Unlock()
	pl.mu.Lock()
	if pl.fds[int32(p.fd)] == p {
		delete(pl.fds, int32(p.fd))
	}
	pl.mu.Unlock()
}

// arm asks for one wake-up when p reports ev. If p is ready already, the
// kernel reports it at once: no wake-up is lost between a receive that
// found nothing and the arming.
func (pl *poller) arm(p *FD, ev uint32) error {
	p.wait.Lock()
	defer p.wait.Unlock()
	if p.wait.closed {
		return os.ErrClosed
	}
	p.wait.armed |= ev
	return pl.rearm(p)
}

func (pl *poller) rearm(p *FD) error {
	events := p.wait.armed | unix.EPOLLONESHOT
	if events&unix.EPOLLIN != 0 {
		// A hang-up is news for a reader only; a writer would be woken
		// by it over and over.
		events |= unix.EPOLLRDHUP
	}
	e := unix.EpollEvent{Events: events, Fd: int32(p.fd)}
	if err := unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_MOD, p.fd, &e); err != nil {
		return fmt.Errorf("epoll_ctl mod: %w", err)
	}
	return nil
}

// watch wakes the goroutines whose descriptors became ready. It spends its
// life in epoll_wait, until close.
func (pl *poller) watch() {
	defer close(pl.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(pl.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			panic(fmt.Sprintf("epoll_wait: %v", err)) // only a bug gets here
		}
		for _, e := range events[:n] {
			if e.Fd == wakeToken {
				return
			}
			pl.mu.Lock()
			p := pl.fds[e.Fd]
			pl.mu.Unlock()
			if p != nil {
				pl.fire(p, e.Events)
			}
		}
	}
}

// fire hands the events to whoever waits for them and re-arms what is
// still awaited (one-shot disarmed all of it).
func (pl *poller) fire(p *FD, got uint32) {
	p.wait.Lock()
	defer p.wait.Unlock()
	if p.wait.closed {
		return
	}
	const broken = unix.EPOLLHUP | unix.EPOLLERR
	if p.wait.armed&unix.EPOLLIN != 0 && got&(unix.EPOLLIN|unix.EPOLLRDHUP|broken) != 0 {
		p.wait.armed &^= unix.EPOLLIN
		wake(p.readable)
	}
	if p.wait.armed&unix.EPOLLOUT != 0 && got&(unix.EPOLLOUT|broken) != 0 {
		p.wait.armed &^= unix.EPOLLOUT
		wake(p.writable)
	}
	if p.wait.armed != 0 {
		pl.rearm(p)
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
