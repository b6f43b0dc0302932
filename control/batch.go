package control

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"multifs/multilink"
)

// Batched I/O: one recvmmsg or sendmmsg moves up to multilink.BatchSize
// frames, where the reference spends a poll, a read and a write on each.
// The message headers are per socket and reused, so the data path does not
// allocate.

// mmsg is the scratch space of one recvmmsg or sendmmsg call.
type mmsg struct {
	hdrs [multilink.BatchSize]unix.Mmsghdr
	iovs [multilink.BatchSize]unix.Iovec
}

// fill points the headers at bufs and returns how many it set up.
func (m *mmsg) fill(bufs [][]byte) int {
	n := min(len(bufs), len(m.hdrs))
	for i := 0; i < n; i++ {
		b := bufs[i]
		if len(b) > 0 {
			m.iovs[i].Base = &b[0]
		} else {
			m.iovs[i].Base = nil
		}
		m.iovs[i].SetLen(len(b))
		m.hdrs[i] = unix.Mmsghdr{}
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.SetIovlen(1)
	}
	return n
}

func mmsgCall(trap uintptr, fd uintptr, m *mmsg, n int, flags int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(n), uintptr(flags), 0, 0)
	return int(r), e
}

// RecvBatch waits for messages and reads as many as are there, up to a
// batch. It calls get for buffers right before each receive attempt and put
// when an attempt finds nothing, so that no buffer is held while waiting: a
// thousand idle peers hold no buffer memory. sizes[i] gets each message's
// real length, more than its buffer if it was truncated. Not safe for
// concurrent use: one reader per socket.
func (p *pollFD) RecvBatch(get func() ([][]byte, []int), put func()) (int, error) {
	var n int
	var errno unix.Errno
	var bufs [][]byte
	var sizes []int
	// attempt receives once; it reports whether the call is over (frames,
	// an error or the EOF), not just an empty queue.
	attempt := func(fd uintptr) bool {
		// Read the flag before receiving: only an empty queue seen after
		// the shutdown means everything the peer sent has been drained.
		shut := p.readShut.Load()
		bufs, sizes = get()
		k := p.rx.fill(bufs)
		n, errno = mmsgCall(unix.SYS_RECVMMSG, fd, &p.rx, k, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		if errno == unix.ECONNRESET && p.eofOnEmpty.Load() {
			// A seqpacket peer that left with frames of ours unread
			// makes the kernel report ECONNRESET once, ahead of the
			// frames it sent us. Those are still queued: drain them,
			// then the empty queue is the EOF.
			p.readShut.Store(true)
			shut = true
			n, errno = mmsgCall(unix.SYS_RECVMMSG, fd, &p.rx, k, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		}
		if errno == unix.EAGAIN {
			put()
			if shut {
				errno = unix.ECONNRESET // drained after shutdownRead: EOF
				return true
			}
			return false
		}
		return true
	}
	err := p.io(unix.EPOLLIN, 0, attempt)
	if errno == unix.ECONNRESET && p.readShut.Load() {
		return 0, fmt.Errorf("drained: %w", errEOF)
	}
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	for i := 0; i < n; i++ {
		sizes[i] = int(p.rx.hdrs[i].Len)
		if p.rx.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 && sizes[i] <= len(bufs[i]) {
			sizes[i] = len(bufs[i]) + 1 // truncated: make sure it reads as too long
		}
	}
	if p.eofOnEmpty.Load() && n > 0 && sizes[n-1] == 0 && p.peerGone() {
		// At a seqpacket EOF every further receive "succeeds" with 0
		// bytes: the empty tail is the EOF, not messages.
		for n > 0 && sizes[n-1] == 0 {
			n--
		}
		if n == 0 {
			return 0, errEOF
		}
	}
	return n, nil
}

// TrySendBatch sends frames in order until one does not fit, without
// waiting. It returns how many were sent, and multilink.ErrWouldBlock or
// the socket's error if not all. Not safe for concurrent use: multilink
// calls it under the destination port's lock.
func (p *pollFD) TrySendBatch(frames [][]byte) (int, error) {
	sent := 0
	var errno unix.Errno
	err := p.rc.Control(func(fd uintptr) {
		errno = p.sendFrom(fd, frames, &sent)
	})
	if err != nil {
		return sent, err
	}
	if errno == unix.EAGAIN {
		return sent, multilink.ErrWouldBlock
	}
	if errno != 0 {
		return sent, errno
	}
	return sent, nil
}

// sendFrom sends frames[*sent:] with sendmmsg until all went or a call
// failed, advancing *sent; it returns the failing call's errno, or 0.
func (p *pollFD) sendFrom(fd uintptr, frames [][]byte, sent *int) unix.Errno {
	for *sent < len(frames) {
		k := p.tx.fill(frames[*sent:])
		n, errno := mmsgCall(unix.SYS_SENDMMSG, fd, &p.tx, k, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if errno != 0 {
			return errno
		}
		*sent += n
	}
	return 0
}

// SendBatchWait is TrySendBatch that waits for room, up to timeout in all;
// it returns multilink.ErrWouldBlock if the time ran out first. Not safe
// for concurrent use (see TrySendBatch).
func (p *pollFD) SendBatchWait(frames [][]byte, timeout time.Duration) (int, error) {
	sent := 0
	var errno unix.Errno
	err := p.io(unix.EPOLLOUT, timeout, func(fd uintptr) bool {
		errno = p.sendFrom(fd, frames, &sent)
		return errno != unix.EAGAIN
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return sent, multilink.ErrWouldBlock
	case err != nil:
		return sent, err
	case errno != 0:
		return sent, errno
	}
	return sent, nil
}
