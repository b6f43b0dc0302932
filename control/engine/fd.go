package engine

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FD is one of the daemon's non-blocking descriptors: a data socket or a
// tap. It waits in the engine's own poller, not in Go's (see the package
// doc), and the data path through it does not allocate: the arguments and
// results of the one receive and the one send that may be in flight live
// in the struct, not in closures. It is a conn.Conn and a
// multilink.Leaver.
//
// One goroutine receives and one sends at a time (the multilink serializes
// senders); Close may come from anywhere, at any time.
type FD struct {
	e        *Engine
	fd       int
	isSocket bool
	// users counts system calls in flight on fd, plus fdClosing once Close
	// began: the number is closed when the last user leaves, so it cannot
	// be reused under a call still using it.
	users    atomic.Int64
	fdClosed atomic.Bool
	closing  atomic.Bool

	opts Options // the policy, fixed at construction
	// readShut is set once shutdownRead was called: on a datagram socket
	// an empty queue then means EOF (the kernel only says EAGAIN).
	readShut atomic.Bool

	rx   rxState // the receive in flight (batch.go, tap.go)
	tx   txState // the send in flight
	rxOp op      // what a receive is: recvmmsg, or read(2) for a tap
	txOp op
	st   *streamState // a byte stream's framing (stream.go); nil for others

	// Waiting in the shared epoll (poller.go).
	wait struct {
		sync.Mutex
		armed  uint32 // events asked for, not yet seen
		closed bool
	}
	waitState          atomic.Uint32 // a waitState: which wait p is in, for tests
	readable, writable chan struct{} // capacity 1: a wake-up token
	gone               chan struct{} // closed by Close
	closeOnce          sync.Once
}

// Options are an FD's policy, given when it is made.
type Options struct {
	// OwnThread keeps the receiver out of the hot loop (hotloop.go): a
	// host's socket. The loop may wait for the host to take frames
	// (multilink.HostWait); a host that itself waits for us to take its
	// frames (vde_plug's writes block) would then wait for the loop,
	// which waits for it, until HostWait passes and frames are dropped.
	// A tap never makes its writer wait that way, so a tap host joins
	// the loop.
	OwnThread bool
	// EOFOnEmpty marks a SOCK_SEQPACKET socket, where receiving 0 bytes
	// may mean EOF rather than an empty message.
	EOFOnEmpty bool
	// PeerLeft, if set, tells whether the peer has gone (PeerGone): a
	// vde-2 data socket is a datagram socket, on which the peer's exit
	// does not show, so its control stream is asked instead.
	PeerLeft func() bool
}

const fdClosing = 1 << 40

var errEOF = io.EOF

func (e *Engine) newFD(fd int, name string, o Options, rxOp, txOp op) (*FD, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: set non-blocking: %w", name, err)
	}
	_, serr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	p := &FD{
		e: e, fd: fd, isSocket: serr == nil, opts: o, rxOp: rxOp, txOp: txOp,
		readable: make(chan struct{}, 1), writable: make(chan struct{}, 1), gone: make(chan struct{}),
	}
	if err := e.poller.add(p); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// enter makes fd safe to use until leave; it fails once Close has begun.
func (p *FD) enter() bool {
	if p.users.Add(1) >= fdClosing {
		p.leave()
		return false
	}
	return true
}

func (p *FD) leave() {
	if p.users.Add(-1) == fdClosing && p.fdClosed.CompareAndSwap(false, true) {
		unix.Close(p.fd)
	}
}

// op names what io attempts: one system call (or one round of them) whose
// arguments and results are in p.rx or p.tx.
type op uint8

const (
	opRecvBatch op = iota
	opSendBatch
	opTapRead
	opTapWrite
	opStreamRead
	opStreamWrite
)

// attempt runs o once; it reports whether o is over (it did something,
// failed, or saw the end), as opposed to having found the socket empty or
// full. p.fd is valid: the caller entered.
func (p *FD) attempt(o op) bool {
	switch o {
	case opRecvBatch:
		return p.recvBatchOnce()
	case opSendBatch:
		return p.sendBatchOnce()
	case opTapRead:
		return p.tapReadOnce()
	case opTapWrite:
		return p.tapWriteOnce()
	case opStreamRead:
		return p.streamReadOnce()
	case opStreamWrite:
		return p.streamWriteOnce()
	}
	panic("unknown op")
}

// io attempts o until it is over, waiting for ev (EPOLLIN or EPOLLOUT) in
// between, for at most timeout (0: no limit, < 0: already expired, so one
// attempt); it returns os.ErrDeadlineExceeded when the time ran out,
// os.ErrClosed once the descriptor is closed. waitFirst says the caller
// just found the socket drained: waiting before the first attempt then
// saves a system call that would find nothing.
func (p *FD) io(o op, ev uint32, timeout time.Duration, waitFirst bool) error {
	if timeout < 0 {
		done, err := p.try(o)
		if err == nil && !done {
			err = os.ErrDeadlineExceeded
		}
		return err
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		if !p.enter() {
			return os.ErrClosed
		}
		var done bool
		var err error
		if !waitFirst && p.attempt(o) {
			done = true
		} else {
			done, err = p.hotWait(o, ev, deadline, !waitFirst)
		}
		p.leave()
		if done || err != nil {
			return err
		}
		if err := p.park(ev, deadline); err != nil {
			return err
		}
		waitFirst = false
	}
}

// try attempts o once, holding fd open for it.
func (p *FD) try(o op) (bool, error) {
	if !p.enter() {
		return false, os.ErrClosed
	}
	defer p.leave()
	return p.attempt(o), nil
}

// waitIdle attempts o until it is over, parking in between: the wait of a
// descriptor that has been idle.
func (p *FD) waitIdle(o op) error {
	for {
		if done, err := p.try(o); done || err != nil {
			return err
		}
		if err := p.park(unix.EPOLLIN, time.Time{}); err != nil {
			return err
		}
	}
}

// HungUp reports whether the peer of the connected socket fd is gone,
// without waiting or reading.
func HungUp(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

// peerGone tells an empty seqpacket message from the peer's EOF: only the
// latter leaves the socket hung up.
func (p *FD) peerGone() bool {
	if !p.enter() {
		return true
	}
	defer p.leave()
	return HungUp(p.fd)
}

// Control runs f with the descriptor, held open for f's duration, and
// reports whether it could: not once Close has begun. f must not keep fd.
func (p *FD) Control(f func(fd int)) bool {
	if !p.enter() {
		return false
	}
	defer p.leave()
	f(p.fd)
	return true
}

// CloseRead is shutdownRead, for multilink.Leaver.
func (p *FD) CloseRead() { p.shutdownRead() }

// PeerGone reports, without reading, whether the peer has gone
// (multilink.Leaver): Options.PeerLeft if given, else whether the socket
// hung up.
func (p *FD) PeerGone() bool {
	if p.opts.PeerLeft != nil {
		return p.opts.PeerLeft()
	}
	return p.peerGone()
}

// Close closes the descriptor and ends every wait on it. A wait in poll(2)
// does not see a close (and holds the number open anyway), so a socket is
// shut down first, which wakes it; a tap's wait ends within hotIdle.
func (p *FD) Close() error {
	err := os.ErrClosed
	p.closeOnce.Do(func() {
		err = nil
		p.closing.Store(true)
		p.e.poller.remove(p)
		close(p.gone)
		if p.isSocket && p.enter() {
			unix.Shutdown(p.fd, unix.SHUT_RDWR)
			p.leave()
		}
		if p.users.Add(fdClosing) == fdClosing && p.fdClosed.CompareAndSwap(false, true) {
			err = unix.Close(p.fd)
		}
	})
	return err
}

// shutdownRead lets the reader drain what is queued and then see EOF. The
// shutdown also wakes a reader that is waiting.
func (p *FD) shutdownRead() {
	p.readShut.Store(true)
	if p.enter() {
		unix.Shutdown(p.fd, unix.SHUT_RD)
		p.leave()
	}
}
