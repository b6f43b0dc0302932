package engine

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"multifs/multilink/conn"
)

// Batched I/O: one recvmmsg or sendmmsg moves up to conn.BatchSize
// frames, where the reference spends a poll, a read and a write on each.
// The message headers are per socket and reused, so the data path does not
// allocate.

// mmsg is the scratch space of one recvmmsg or sendmmsg call.
type mmsg struct {
	hdrs [conn.BatchSize]unix.Mmsghdr
	iovs [conn.BatchSize]unix.Iovec
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

func mmsgCall(trap uintptr, fd int, m *mmsg, n int, flags int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(n), uintptr(flags), 0, 0)
	return int(r), e
}

// rxState is the receive in flight: its arguments (the Receiver and the
// batch it gave) and its results.
type rxState struct {
	m       mmsg
	r       conn.Receiver // whose batches: set by Receive
	b       *conn.Batch   // the batch of the attempt in flight, from r.Get
	n       int
	errno   unix.Errno
	err     error // tap reads, accept
	drained bool  // the last receive took less than it could: queue empty
}

// txState is the send in flight.
type txState struct {
	m      mmsg
	frames [][]byte
	sent   int
	errno  unix.Errno
	err    error // tap writes
}

// Receive receives frames into r's batches and delivers them to r until
// p is closed (os.ErrClosed), the peer's end is read (io.EOF), or a
// receive fails: see conn.Conn. While frames keep coming, the hot loop
// serves p and delivers from its thread (hotloop.go); once p is idle, the
// caller's goroutine parks until it is readable again. A receiver that
// keeps its own thread (Options.OwnThread) waits for its frames in poll(2)
// on it instead, then parks. Not safe for concurrent use: one reader per
// descriptor.
func (p *FD) Receive(r conn.Receiver) error {
	if p.opts.OwnThread {
		for {
			b, n, err := p.recvBatch(r)
			if err != nil {
				return err
			}
			r.Deliver(b, n)
		}
	}
	p.rx.r = r
	for {
		b, n, err := p.finishRecv(p.waitIdle(p.rxOp))
		if err != nil {
			return err
		}
		r.Deliver(b, n)
		if p.rxMore() {
			continue // frames read already: the socket may not wake anyone
		}
		if err := p.e.loop.serve(p); err != nil {
			return err
		}
	}
}

// recvBatch waits for messages and reads as many as are there, up to a
// batch, into a batch of r's, which it returns with how many came. It
// asks r for the batch right before each receive attempt and gives it
// back when an attempt finds nothing, so that no buffer is held while
// waiting: a thousand idle peers hold no buffer memory.
func (p *FD) recvBatch(r conn.Receiver) (*conn.Batch, int, error) {
	p.rx.r = r
	return p.finishRecv(p.io(p.rxOp, unix.EPOLLIN, 0, p.rx.drained))
}

// finishRecv turns what the last receive attempt left in p.rx (and err,
// from waiting for it) into the batch received and how many frames it
// holds, or an error, the batch then given back.
func (p *FD) finishRecv(err error) (*conn.Batch, int, error) {
	rx := &p.rx
	n, b := rx.n, rx.b
	if p.rxOp == opStreamRead {
		return p.finishStreamRecv(err)
	}
	rx.b = nil
	if p.rxOp == opTapRead {
		if err != nil {
			return p.giveBack(b, err)
		}
		if n == 0 {
			return p.giveBack(b, rx.err)
		}
		rx.drained = n < len(b.Bufs)
		return b, n, nil
	}
	if rx.errno == unix.ECONNRESET && p.readShut.Load() {
		return p.giveBack(b, fmt.Errorf("drained: %w", errEOF))
	}
	if err != nil {
		return p.giveBack(b, err)
	}
	if rx.errno != 0 {
		return p.giveBack(b, rx.errno)
	}
	bufs, sizes := b.Bufs, b.Sizes
	rx.drained = n < len(bufs)
	for i := 0; i < n; i++ {
		sizes[i] = int(rx.m.hdrs[i].Len)
		if rx.m.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 && sizes[i] <= len(bufs[i]) {
			sizes[i] = len(bufs[i]) + 1 // truncated: make sure it reads as too long
		}
	}
	if p.opts.EOFOnEmpty && n > 0 && sizes[n-1] == 0 && p.peerGone() {
		// At a seqpacket EOF every further receive "succeeds" with 0
		// bytes: the empty tail is the EOF, not messages.
		for n > 0 && sizes[n-1] == 0 {
			n--
		}
		if n == 0 {
			return p.giveBack(b, errEOF)
		}
	}
	return b, n, nil
}

// giveBack returns b, if any, to the receiver, and err.
func (p *FD) giveBack(b *conn.Batch, err error) (*conn.Batch, int, error) {
	if b != nil {
		p.rx.r.Put(b)
	}
	return nil, 0, err
}

// recvBatchOnce is one receive attempt of recvBatch.
func (p *FD) recvBatchOnce() bool {
	rx := &p.rx
	// Read the flag before receiving: only an empty queue seen after the
	// shutdown means everything the peer sent has been drained.
	shut := p.readShut.Load()
	rx.b = rx.r.Get()
	k := rx.m.fill(rx.b.Bufs)
	rx.n, rx.errno = mmsgCall(unix.SYS_RECVMMSG, p.fd, &rx.m, k, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
	if rx.errno == unix.ECONNRESET && p.opts.EOFOnEmpty {
		// A seqpacket peer that left with frames of ours unread makes
		// the kernel report ECONNRESET once, ahead of the frames it sent
		// us. Those are still queued: drain them, then the empty queue
		// is the EOF.
		p.readShut.Store(true)
		shut = true
		rx.n, rx.errno = mmsgCall(unix.SYS_RECVMMSG, p.fd, &rx.m, k, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
	}
	if rx.errno == unix.EAGAIN {
		rx.r.Put(rx.b)
		rx.b, rx.n = nil, 0
		if shut {
			rx.errno = unix.ECONNRESET // drained after shutdownRead: EOF
			return true
		}
		rx.errno = 0
		return false
	}
	if rx.errno != 0 {
		rx.n = 0
	}
	return true
}

// TrySendBatch sends frames in order until one does not fit, without
// waiting. It returns how many were sent, and conn.ErrWouldBlock or
// the socket's error if not all. Not safe for concurrent use: multilink
// calls it under the destination port's lock.
func (p *FD) TrySendBatch(frames [][]byte) (int, error) {
	return p.SendBatchWait(frames, -1)
}

// SendBatchWait is TrySendBatch that waits for room, up to timeout in all
// (< 0: not at all); it returns conn.ErrWouldBlock if the time ran out
// first. Not safe for concurrent use (see TrySendBatch).
func (p *FD) SendBatchWait(frames [][]byte, timeout time.Duration) (int, error) {
	if p.st != nil {
		var ok bool
		if timeout, ok = p.awaitFlusher(timeout); !ok {
			return 0, conn.ErrWouldBlock
		}
		defer p.startFlusher()
	}
	tx := &p.tx
	tx.frames, tx.sent, tx.errno, tx.err = frames, 0, 0, nil
	err := p.io(p.txOp, unix.EPOLLOUT, timeout, false)
	sent, errno, werr := tx.sent, tx.errno, tx.err
	tx.frames = nil
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && sent == len(frames):
		return sent, nil // a stream's last frame, cut, is finished by its flusher
	case errors.Is(err, os.ErrDeadlineExceeded):
		return sent, conn.ErrWouldBlock
	case err != nil:
		return sent, err
	case errno != 0:
		return sent, errno
	}
	return sent, werr
}

// sendBatchOnce sends what is left of tx.frames with sendmmsg until all
// went or a call failed.
func (p *FD) sendBatchOnce() bool {
	tx := &p.tx
	for tx.sent < len(tx.frames) {
		k := tx.m.fill(tx.frames[tx.sent:])
		n, errno := mmsgCall(unix.SYS_SENDMMSG, p.fd, &tx.m, k, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if errno != 0 {
			tx.errno = errno
			if errno == unix.EAGAIN {
				tx.errno = 0
				return false
			}
			return true
		}
		tx.sent += n
	}
	return true
}
