package vhostuser

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A queue's waits: an epoll of its own holding the kick eventfd,
// edge-triggered, and a wake eventfd of ours. The kick eventfd is never
// read: it is the frontend's (and the guest's) as much as ours, and a
// frontend can make a shared descriptor blocking at any time, so a read
// could block a thread for good. Edge-triggered, each kick is one event
// (eventfd wakes its waiters at every write) and the counter may grow;
// at one per kick it cannot reach its 2^64 limit.
//
// The epoll and wake descriptors live until the queue is closed and no
// wait is under way (queue.waiting), so a waiter never uses a number
// that was closed and reused meanwhile.

const (
	tagWake = 0
	tagKick = 1
)

func (q *queue) initWait() error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: tagWake}); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	q.ep, q.wake, q.kick = ep, wake, -1
	return nil
}

// poke wakes the queue's waiter (state changed). Any goroutine.
func (q *queue) poke() {
	if q.wake >= 0 {
		unix.Write(q.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// setKickLocked replaces the kick descriptor (-1: none), closing the
// old one. q.mu held.
func (q *queue) setKickLocked(fd int) error {
	if q.kick >= 0 {
		if !q.freed {
			unix.EpollCtl(q.ep, unix.EPOLL_CTL_DEL, q.kick, nil)
		}
		unix.Close(q.kick)
		q.kick = -1
	}
	if fd < 0 {
		return nil
	}
	if q.freed {
		unix.Close(fd)
		return os.ErrClosed
	}
	if err := unix.EpollCtl(q.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: tagKick}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	q.kick = fd
	return nil
}

// wait blocks until a kick or a poke, or msec (< 0: no limit). q.mu not
// held. It returns os.ErrClosed once the queue is closed.
func (q *queue) wait(msec int) error {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return os.ErrClosed
	}
	q.waiting++
	ep, wake := q.ep, q.wake
	q.mu.Unlock()

	var evs [2]unix.EpollEvent
	n, err := unix.EpollWait(ep, evs[:], msec)
	for i := 0; i < n; i++ {
		if evs[i].Fd == tagWake {
			var b [8]byte
			unix.Read(wake, b[:])
		}
	}

	q.mu.Lock()
	q.waiting--
	if q.closing && q.waiting == 0 {
		q.freeLocked()
	}
	q.mu.Unlock()
	if err != nil && err != unix.EINTR {
		return fmt.Errorf("epoll_wait: %w", err)
	}
	return nil
}

// freeLocked closes the wait descriptors. q.mu held, nobody waiting.
func (q *queue) freeLocked() {
	if q.freed {
		return
	}
	q.freed = true
	q.setKickLocked(-1)
	unix.Close(q.ep)
	unix.Close(q.wake)
	q.ep, q.wake = -1, -1
}

// blockedSignals counts the call signals under way in write(2), daemon
// wide. A frontend can make its call eventfd blocking and full, which
// blocks a write to it until someone reads it: only a queue's notifier
// goroutine is held then, never the data path; the count bounds how many
// such goroutines hostile frontends can pile up (Blocked).
var blockedSignals atomic.Int32

// MaxBlockedSignals is how many stuck signals make the entry refuse new
// frontends until they clear.
const MaxBlockedSignals = 4

// Blocked reports whether too many signals are stuck for a new frontend
// to be admitted.
func Blocked() bool { return blockedSignals.Load() >= MaxBlockedSignals }

// notifier signals the call eventfds on its own goroutine, so that a
// call eventfd its frontend made blocking cannot stall the data path (a
// send to the host happens under the host's lock, with every link
// waiting for it). It owns the call descriptors: it alone closes them,
// so it never writes to a number closed and reused.
type notifier struct {
	mu      sync.Mutex // never held across a system call
	fds     [numQueues]int
	pending [numQueues]bool
	retire  []int
	quit    bool
	wake    chan struct{}
}

func (n *notifier) init() {
	n.fds = [numQueues]int{-1, -1}
	n.wake = make(chan struct{}, 1)
	go n.run()
}

func (n *notifier) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// signal asks for queue q's call to be signalled.
func (n *notifier) signal(q int) {
	n.mu.Lock()
	n.pending[q] = true
	n.mu.Unlock()
	n.poke()
}

// set gives queue q a new call descriptor (-1: none), which the notifier
// now owns.
func (n *notifier) set(q, fd int) {
	n.mu.Lock()
	if n.quit {
		n.mu.Unlock()
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	if n.fds[q] >= 0 {
		n.retire = append(n.retire, n.fds[q])
	}
	n.fds[q] = fd
	// A signal owed to the old descriptor goes to the new one (QEMU
	// swaps them while it masks a vector): one spurious interrupt at
	// worst, never a lost one that would leave the guest waiting.
	n.pending[q] = fd >= 0
	n.mu.Unlock()
	n.poke()
}

// stop ends the notifier, which closes its descriptors.
func (n *notifier) stop() {
	n.mu.Lock()
	n.quit = true
	n.mu.Unlock()
	n.poke()
}

func (n *notifier) run() {
	for range n.wake {
		n.mu.Lock()
		fds := [numQueues]int{-1, -1}
		for i := range fds {
			if n.pending[i] {
				fds[i] = n.fds[i]
				n.pending[i] = false
			}
		}
		retire := n.retire
		n.retire = nil
		quit := n.quit
		if quit {
			for i, fd := range n.fds {
				if fd >= 0 {
					retire = append(retire, fd)
					n.fds[i] = -1
				}
			}
		}
		n.mu.Unlock()
		for _, fd := range fds {
			if fd >= 0 {
				signalEventfd(fd)
			}
		}
		for _, fd := range retire {
			unix.Close(fd)
		}
		if quit {
			return
		}
	}
}

// signalCount counts the eventfd writes of every notifier: the tests
// check that a burst costs a bounded number of them.
var signalCount atomic.Uint64

// signalEventfd adds 1 to an eventfd, if it has room.
func signalEventfd(fd int) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, 0); err != nil || n == 0 || pfd[0].Revents&unix.POLLOUT == 0 {
		return
	}
	blockedSignals.Add(1)
	unix.Write(fd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	blockedSignals.Add(-1)
	signalCount.Add(1)
}

// isEventfd reports whether fd is an eventfd: kick and call descriptors
// must be (a pipe or a file would never wait, or wait for good).
func isEventfd(fd int) bool {
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	return err == nil && target == "anon_inode:[eventfd]"
}
