package control

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrWouldBlock is returned by TrySend when the peer's socket is full.
var ErrWouldBlock = errors.New("peer socket full")

// pollFD wraps a non-blocking socket in an *os.File so that reads park in
// Go's network poller (one cheap goroutine per peer, no thread) while sends
// stay strictly non-blocking.
type pollFD struct {
	f *os.File
}

func newPollFD(fd int, name string) (*pollFD, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	return &pollFD{f: os.NewFile(uintptr(fd), name)}, nil
}

// Recv reads one message, returning its real length (MSG_TRUNC), which is
// larger than len(buf) when the message did not fit.
func (p *pollFD) Recv(buf []byte) (int, error) {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 && len(buf) > 0 {
		// A zero-length datagram is legal but never a frame; on a
		// connection-oriented socket it means EOF. Callers treat it as a
		// too-short frame; seqpacket wraps it as EOF itself.
		return 0, nil
	}
	return n, nil
}

// TrySend sends one message without ever waiting.
func (p *pollFD) TrySend(frame []byte) error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = unix.Send(int(fd), frame, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return true // never park: a full socket drops the frame
	})
	if err != nil {
		return err
	}
	if serr == unix.EAGAIN {
		return ErrWouldBlock
	}
	return serr
}

func (p *pollFD) Close() error { return p.f.Close() }
