package control

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"multifs/multilink"
)

// pollFD wraps a non-blocking socket in an *os.File so that reads park in
// Go's network poller (one cheap goroutine per peer, no thread) while sends
// stay strictly non-blocking.
type pollFD struct {
	f  *os.File
	rc syscall.RawConn
	// eofOnEmpty marks a SOCK_SEQPACKET socket, where receiving 0 bytes
	// may mean EOF rather than an empty message.
	eofOnEmpty atomic.Bool
	// readShut is set once shutdownRead was called: on a datagram socket
	// an empty queue then means EOF (the kernel only says EAGAIN).
	readShut atomic.Bool
	rx, tx   mmsg // batched I/O scratch (batch.go)
}

var errEOF = io.EOF

func newPollFD(fd int, name string) (*pollFD, error) {
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
	return &pollFD{f: f, rc: rc}, nil
}

// Recv reads one message, returning its real length (MSG_TRUNC), which is
// larger than len(buf) when the message did not fit. A zero-length datagram
// is returned as n == 0: the multilink counts it as a too-short frame.
func (p *pollFD) Recv(buf []byte) (int, error) {
	var n int
	var rerr error
	err := p.rc.Read(func(fd uintptr) bool {
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
	err := p.rc.Write(func(fd uintptr) bool {
		serr = unix.Send(int(fd), frame, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return true // never park: a full socket drops the frame
	})
	if err != nil {
		return err
	}
	if serr == unix.EAGAIN {
		return multilink.ErrWouldBlock
	}
	return serr
}

// Send sends one message, parking in the poller while the socket is full.
// It fails once the socket is closed.
func (p *pollFD) Send(frame []byte) error {
	var serr error
	err := p.rc.Write(func(fd uintptr) bool {
		serr = unix.Send(int(fd), frame, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

func (p *pollFD) Close() error { return p.f.Close() }

// shutdownRead lets the reader drain what is queued and then see EOF. The
// shutdown also wakes a reader parked in the poller.
func (p *pollFD) shutdownRead() {
	p.readShut.Store(true)
	p.rc.Control(func(fd uintptr) {
		unix.Shutdown(int(fd), unix.SHUT_RD)
	})
}
