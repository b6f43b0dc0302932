// Package conntest is an in-memory peer for tests of what takes a
// conn.Conn (multilink, fsys), as wireguard-go's tun/tuntest is for its
// device: frames pushed into In are received, through the same
// Receive/Receiver seam the daemon's descriptors use; frames sent are
// recorded. It can be made full (sends fail as a full socket's do), or
// given room for a number of frames only (a socket that takes k of n), and
// it is a multilink.Leaver: its peer can be marked gone, and CloseRead
// ends its receive once what was pushed has been taken.
package conntest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"multifs/multilink/conn"
)

// Peer is the fake peer and its Conn.
type Peer struct {
	// In is what the peer sends: each frame pushed is received, several
	// to a batch if they are there together.
	In chan []byte

	mu      sync.Mutex
	sent    [][]byte
	full    bool
	room    int // frames it takes before it is full; < 0: no limit
	maxBufs int // the most buffers a receive was given

	gone      atomic.Bool
	closed    chan struct{}
	readShut  chan struct{}
	closeOnce sync.Once
	shutOnce  sync.Once
}

var _ conn.Conn = (*Peer)(nil)

// New returns a peer with room for 16 frames pushed and not yet received.
func New() *Peer {
	return &Peer{In: make(chan []byte, 16), room: -1, closed: make(chan struct{}), readShut: make(chan struct{})}
}

// Receive delivers what is pushed into In until Close (os.ErrClosed) or,
// after CloseRead, until In is empty (io.EOF). It takes a batch only once
// a frame is there, as the engine does once its socket is readable.
func (c *Peer) Receive(r conn.Receiver) error {
	for {
		var first []byte
		select {
		case first = <-c.In:
		case <-c.closed:
			return fmt.Errorf("conntest: %w", os.ErrClosed)
		case <-c.readShut:
			select {
			case first = <-c.In: // sent before the read side was shut
			default:
				return io.EOF
			}
		}
		b := r.Get()
		c.mu.Lock()
		c.maxBufs = max(c.maxBufs, len(b.Bufs))
		c.mu.Unlock()
		n := 0
		for f := first; ; {
			b.Sizes[n] = copy(b.Bufs[n], f) + max(0, len(f)-len(b.Bufs[n]))
			n++
			if n == len(b.Bufs) {
				break
			}
			select {
			case f = <-c.In:
				continue
			default:
			}
			break
		}
		r.Deliver(b, n)
	}
}

// TrySendBatch records frames, or as many as there is room for (none if
// the peer is full).
func (c *Peer) TrySendBatch(frames [][]byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return 0, os.ErrClosed
	default:
	}
	if c.full {
		return 0, conn.ErrWouldBlock
	}
	n := len(frames)
	if c.room >= 0 {
		n = min(n, c.room)
		c.room -= n
	}
	for _, f := range frames[:n] {
		c.sent = append(c.sent, append([]byte(nil), f...))
	}
	if n < len(frames) {
		return n, conn.ErrWouldBlock
	}
	return n, nil
}

// SendBatchWait retries TrySendBatch until everything went, the timeout
// passed or the peer is closed.
func (c *Peer) SendBatchWait(frames [][]byte, timeout time.Duration) (int, error) {
	sent := 0
	deadline := time.Now().Add(timeout)
	for {
		k, err := c.TrySendBatch(frames[sent:])
		sent += k
		if err == nil || !errors.Is(err, conn.ErrWouldBlock) {
			return sent, err
		}
		if timeout < 0 || time.Now().After(deadline) {
			return sent, conn.ErrWouldBlock
		}
		select {
		case <-c.closed:
			return sent, os.ErrClosed
		case <-time.After(100 * time.Microsecond):
		}
	}
}

// Close ends Receive and makes sends fail.
func (c *Peer) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// Closed is closed by Close.
func (c *Peer) Closed() <-chan struct{} { return c.closed }

// CloseRead makes Receive end with io.EOF once In is empty
// (multilink.Leaver).
func (c *Peer) CloseRead() { c.shutOnce.Do(func() { close(c.readShut) }) }

// PeerGone is what SetGone said (multilink.Leaver).
func (c *Peer) PeerGone() bool { return c.gone.Load() }

// SetGone marks the peer gone, or back.
func (c *Peer) SetGone(gone bool) { c.gone.Store(gone) }

// SetFull makes sends fail as a full socket's do (conn.ErrWouldBlock), or
// go through again.
func (c *Peer) SetFull(full bool) {
	c.mu.Lock()
	c.full = full
	c.mu.Unlock()
}

// SetRoom makes the peer take n more frames, then refuse the rest as a
// full socket does (conn.ErrWouldBlock), until SetRoom is called again;
// n < 0 lifts the limit (the default). A send of a batch of more than n
// frames takes the first n.
func (c *Peer) SetRoom(n int) {
	c.mu.Lock()
	c.room = n
	c.mu.Unlock()
}

// Sent returns a copy of the frames sent to the peer, in order.
func (c *Peer) Sent() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.sent...)
}

// MaxBufs is the most buffers one receive was given.
func (c *Peer) MaxBufs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxBufs
}
