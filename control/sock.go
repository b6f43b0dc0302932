package control

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"multifs/multilink"
)

// pollFD is a non-blocking descriptor: a data socket, a listener or a tap.
// The daemon's wait in its own poller, not in Go's: see poller.go for why
// and how; there the *os.File is kept for its reference counting only:
// every system call on the descriptor runs inside rc.Control, so that a
// concurrent Close cannot close the number under it. A client's (tests,
// the benchmark) wait in Go's poller, as any Go program's would.
type pollFD struct {
	f      *os.File
	rc     syscall.RawConn
	sysfd  int32
	goPoll bool // a client: wait in Go's poller
	// eofOnEmpty marks a SOCK_SEQPACKET socket, where receiving 0 bytes
	// may mean EOF rather than an empty message.
	eofOnEmpty atomic.Bool
	// readShut is set once shutdownRead was called: on a datagram socket
	// an empty queue then means EOF (the kernel only says EAGAIN).
	readShut atomic.Bool
	isSocket bool
	closing  atomic.Bool
	rx, tx   mmsg // batched I/O scratch (batch.go)

	// Waiting in the shared epoll (poller.go).
	wait struct {
		sync.Mutex
		armed  uint32 // events asked for, not yet seen
		closed bool
	}
	readable, writable chan struct{} // capacity 1: a wake-up token
	gone               chan struct{} // closed by Close
	closeOnce          sync.Once
}

var errEOF = io.EOF

// newClientFD takes over fd for a client: it waits in Go's poller.
func newClientFD(fd int, name string) (*pollFD, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &pollFD{f: f, rc: rc, sysfd: int32(fd), goPoll: true}, nil
}

// newPollFD takes over fd for the daemon. The descriptor is handed to os.NewFile while
// blocking, so that Go does not add it to its own poller, and is made
// non-blocking right after: nothing of ours ever blocks in a read or write.
func newPollFD(fd int, name string) (*pollFD, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	_, serr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	p := &pollFD{
		f: f, rc: rc, sysfd: int32(fd), isSocket: serr == nil,
		readable: make(chan struct{}, 1), writable: make(chan struct{}, 1), gone: make(chan struct{}),
	}
	if err := thePoller().add(p); err != nil {
		f.Close()
		return nil, err
	}
	return p, nil
}

// io runs attempt until it reports it is done, waiting for ev (EPOLLIN or
// EPOLLOUT) in between, for at most timeout (0: no limit, < 0: already
// expired, so one attempt); it returns
// os.ErrDeadlineExceeded when the time ran out, os.ErrClosed once the
// descriptor is closed.
func (p *pollFD) io(ev uint32, timeout time.Duration, attempt func(fd uintptr) bool) error {
	var deadline time.Time
	if timeout != 0 {
		deadline = time.Now().Add(timeout)
	}
	if p.goPoll {
		return p.goIO(ev, deadline, attempt)
	}
	for {
		done := false
		var werr error
		err := p.rc.Control(func(fd uintptr) {
			if attempt(fd) {
				done = true
				return
			}
			done, werr = p.hotWait(fd, ev, deadline, attempt)
		})
		if err != nil {
			return err
		}
		if done || werr != nil {
			return werr
		}
		if err := p.park(ev, deadline); err != nil {
			return err
		}
	}
}

func (p *pollFD) goIO(ev uint32, deadline time.Time, attempt func(fd uintptr) bool) error {
	if ev == unix.EPOLLOUT {
		p.f.SetWriteDeadline(deadline)
		return p.rc.Write(attempt)
	}
	p.f.SetReadDeadline(deadline)
	return p.rc.Read(attempt)
}

// Recv reads one message, returning its real length (MSG_TRUNC), which is
// larger than len(buf) when the message did not fit; it waits at most
// timeout (0: no limit). A zero-length datagram is returned as n == 0: the
// multilink counts it as a too-short frame.
func (p *pollFD) Recv(buf []byte, timeout time.Duration) (int, error) {
	var n int
	var rerr error
	err := p.io(unix.EPOLLIN, timeout, func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 && p.eofOnEmpty.Load() && p.peerGone() {
		return 0, errEOF
	}
	return n, nil
}

// peerGone tells an empty seqpacket message from the peer's EOF: only the
// latter leaves the socket hung up.
func (p *pollFD) peerGone() bool {
	gone := false
	p.rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}

// TrySend sends one message without ever waiting.
func (p *pollFD) TrySend(frame []byte) error {
	var serr error
	err := p.rc.Control(func(fd uintptr) {
		serr = unix.Send(int(fd), frame, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	})
	if err != nil {
		return err
	}
	if serr == unix.EAGAIN {
		return multilink.ErrWouldBlock
	}
	return serr
}

// Send sends one message, waiting while the socket is full. It fails once
// the socket is closed.
func (p *pollFD) Send(frame []byte) error {
	var serr error
	err := p.io(unix.EPOLLOUT, 0, func(fd uintptr) bool {
		serr = unix.Send(int(fd), frame, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

// Close closes the descriptor and ends every wait on it. A wait in poll(2)
// keeps the descriptor open and does not see a close, so a socket is shut
// down first, which wakes it (a tap's wait ends within hotIdle).
func (p *pollFD) Close() error {
	var err error = os.ErrClosed
	p.closeOnce.Do(func() {
		if p.goPoll {
			err = p.f.Close()
			return
		}
		p.closing.Store(true)
		thePoller().remove(p)
		close(p.gone)
		if p.isSocket {
			p.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
		}
		err = p.f.Close()
	})
	return err
}

// shutdownRead lets the reader drain what is queued and then see EOF. The
// shutdown also wakes a reader that is waiting.
func (p *pollFD) shutdownRead() {
	p.readShut.Store(true)
	p.rc.Control(func(fd uintptr) {
		unix.Shutdown(int(fd), unix.SHUT_RD)
	})
}
