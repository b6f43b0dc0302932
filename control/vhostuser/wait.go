package vhostuser

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

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
// waiting for it).
//
// A descriptor being signalled (busy) is closed only after its write: a
// number closed while the notifier still meant to write to it could be
// reused by another peer's socket, and the notifier would write there.
// Any other replaced descriptor is closed at once, so that a frontend
// swapping call descriptors while the notifier is stuck in a write (a
// call eventfd filled between its poll and its write) leaves at most
// numQueues of them open, not one per request.
type notifier struct {
	mu      sync.Mutex // never held across a system call that can block
	fds     [numQueues]int
	pending [numQueues]bool
	busy    [numQueues]int // being signalled, outside mu (-1: none)
	retire  []int          // replaced while busy: closed after the write
	quit    bool
	wake    chan struct{}
	done    chan struct{} // closed when run returns
	write   func(fd int)  // signalWrite, fixed before the goroutine starts
}

// signalWrite adds 1 to an eventfd. Tests replace it (before New) to
// hold a write as a full blocking eventfd would.
var signalWrite = realSignalWrite

func realSignalWrite(fd int) { unix.Write(fd, []byte{1, 0, 0, 0, 0, 0, 0, 0}) }

func (n *notifier) init() {
	n.fds = [numQueues]int{-1, -1}
	n.busy = [numQueues]int{-1, -1}
	n.wake = make(chan struct{}, 1)
	n.done = make(chan struct{})
	n.write = signalWrite
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
	old := n.fds[q]
	if old >= 0 && slices.Contains(n.busy[:], old) {
		n.retire = append(n.retire, old)
		old = -1
	}
	n.fds[q] = fd
	// A signal owed to the old descriptor goes to the new one (QEMU
	// swaps them while it masks a vector): one spurious interrupt at
	// worst, never a lost one that would leave the guest waiting.
	n.pending[q] = fd >= 0
	n.mu.Unlock()
	if old >= 0 {
		unix.Close(old)
	}
	n.poke()
}

// stop ends the notifier, which closes its descriptors; a write under
// way that is stuck is freed (unstick).
func (n *notifier) stop() {
	n.mu.Lock()
	n.quit = true
	stuck := n.busy != [numQueues]int{-1, -1}
	n.mu.Unlock()
	n.poke()
	if stuck {
		go n.unstick()
	}
}

// unstickEvery is how often unstick empties the eventfds of a stuck write.
const unstickEvery = 100 * time.Millisecond

// unstick frees a notifier whose frontend has gone while it was stuck in
// a write to a full call eventfd the frontend made blocking. Left alone,
// the write would wait for good once the frontend exits (nobody else
// can read that eventfd), with the notifier's goroutine and descriptors,
// and MaxBlockedSignals of them would refuse every new frontend. It
// empties the eventfd being written with a read that cannot block
// whatever the frontend did to the descriptor's flags (RWF_NOWAIT),
// again while the write lasts: a frontend still alive may fill it again.
func (n *notifier) unstick() {
	t := time.NewTicker(unstickEvery)
	defer t.Stop()
	var b [8]byte
	for {
		// Under mu: a busy descriptor is not closed before run takes
		// it out of busy, so the number is still that eventfd.
		n.mu.Lock()
		for _, fd := range n.busy {
			if fd >= 0 {
				unix.Preadv2(fd, [][]byte{b[:]}, -1, unix.RWF_NOWAIT)
			}
		}
		n.mu.Unlock()
		select {
		case <-n.done:
			return
		case <-t.C:
		}
	}
}

func (n *notifier) run() {
	defer close(n.done)
	for range n.wake {
		n.mu.Lock()
		for i := range n.busy {
			// Once stopped, nothing more is signalled: a write then
			// could get stuck with no unstick to free it.
			if n.pending[i] && !n.quit {
				n.busy[i] = n.fds[i]
				n.pending[i] = false
			}
		}
		fds := n.busy
		n.mu.Unlock()
		for _, fd := range fds {
			if fd >= 0 {
				n.signalEventfd(fd)
			}
		}
		n.mu.Lock()
		n.busy = [numQueues]int{-1, -1}
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
func (n *notifier) signalEventfd(fd int) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, 0); err != nil || n == 0 || pfd[0].Revents&unix.POLLOUT == 0 {
		return
	}
	blockedSignals.Add(1)
	n.write(fd)
	blockedSignals.Add(-1)
	signalCount.Add(1)
}

// isEventfd reports whether fd is an eventfd: kick and call descriptors
// must be (a pipe or a file would never wait, or wait for good).
func isEventfd(fd int) bool {
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	return err == nil && target == "anon_inode:[eventfd]"
}
