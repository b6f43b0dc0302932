package engine

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// epollSet is an epoll instance with an eventfd of its own in it, under
// wakeToken, so that another goroutine can wake the one waiting in
// epoll_wait: the idle poller's (to stop) and the hot loop's (a member for
// a loop asleep, or stop).
type epollSet struct {
	epfd   int
	wakefd int
}

// wakeToken is the eventfd's epoll data; a member's is never negative.
const wakeToken = -1

func newEpollSet(who string) (epollSet, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return epollSet{}, fmt.Errorf("%s: epoll_create: %w", who, err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return epollSet{}, fmt.Errorf("%s: eventfd: %w", who, err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeToken}); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return epollSet{}, fmt.Errorf("%s: epoll_ctl add: %w", who, err)
	}
	return epollSet{epfd: epfd, wakefd: wakefd}, nil
}

// wake makes the eventfd readable until drained.
func (s epollSet) wake() { unix.Write(s.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0}) }

// drain takes the wake-ups written so far.
func (s epollSet) drain() {
	var b [8]byte
	unix.Read(s.wakefd, b[:])
}

// free closes both descriptors, once nobody waits in epoll_wait.
func (s epollSet) free() {
	unix.Close(s.wakefd)
	unix.Close(s.epfd)
}
