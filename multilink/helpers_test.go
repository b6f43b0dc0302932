package multilink

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// loopConn hands out the same full batch on every receive until limit
// rounds are done, and accepts every send: the forwarding path alone,
// without sockets.
type loopConn struct {
	frame  []byte
	rounds atomic.Int64
	limit  int64
	done   chan struct{}
	sent   atomic.Int64
}

func (c *loopConn) RecvBatch(get func() ([][]byte, []int), put func()) (int, error) {
	if c.rounds.Add(1) > c.limit {
		close(c.done)
		select {} // park like an idle socket until the test binary exits
	}
	bufs, sizes := get()
	for i := range bufs {
		sizes[i] = copy(bufs[i], c.frame)
	}
	return len(bufs), nil
}

func (c *loopConn) TrySendBatch(frames [][]byte) (int, error) {
	c.sent.Add(int64(len(frames)))
	return len(frames), nil
}
func (c *loopConn) SendBatchWait(frames [][]byte, _ time.Duration) (int, error) {
	return c.TrySendBatch(frames)
}
func (c *loopConn) Send([]byte) error { return nil }
func (c *loopConn) Close() error      { return nil }

type sinkConn struct{ sent atomic.Int64 }

func (c *sinkConn) RecvBatch(func() ([][]byte, []int), func()) (int, error) {
	select {}
}
func (c *sinkConn) TrySendBatch(frames [][]byte) (int, error) {
	c.sent.Add(int64(len(frames)))
	return len(frames), nil
}
func (c *sinkConn) SendBatchWait(frames [][]byte, _ time.Duration) (int, error) {
	return c.TrySendBatch(frames)
}
func (c *sinkConn) Send([]byte) error { return nil }
func (c *sinkConn) Close() error      { return nil }

// benchForward runs b.N batches from one source through the multilink.
// Each op is one batch of BatchSize 64-byte frames.
func benchForward(b *testing.B, fromHost bool, links int, opts ...Option) {
	m := New(testLog(), opts...)
	src := &loopConn{frame: make([]byte, 64), limit: int64(b.N), done: make(chan struct{})}
	sinks := make([]*sinkConn, links)
	for i := range sinks {
		sinks[i] = &sinkConn{}
	}
	if fromHost {
		for _, s := range sinks {
			addLink(m, PeerInfo{}, s, nil)
		}
	} else {
		m.AttachHost(PeerInfo{}, sinks[0], nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if fromHost {
		m.AttachHost(PeerInfo{}, src, nil)
	} else {
		addLink(m, PeerInfo{}, src, nil)
	}
	<-src.done
	b.StopTimer()
	for _, s := range sinks {
		if got := s.sent.Load(); got != int64(b.N)*BatchSize {
			b.Fatalf("sink got %d frames, want %d", got, int64(b.N)*BatchSize)
		}
	}
	b.ReportMetric(float64(b.N*BatchSize)/b.Elapsed().Seconds(), "frames/s")
}

// halfConn's socket takes half of each batch at once; the rest waits for
// the link's queue writer, which SendBatchWait lets through: the queue
// path of a link slower than the host.
type halfConn struct{ sinkConn }

func (c *halfConn) TrySendBatch(frames [][]byte) (int, error) {
	n := len(frames) / 2
	c.sent.Add(int64(n))
	return n, ErrWouldBlock
}

// finalConn records the Final calls and whether the Conn was still open
// at each.
type finalConn struct {
	*fakeConn
	mu     sync.Mutex
	finals []uint64
	open   []bool
}

func (c *finalConn) Final(p *Port) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		c.open = append(c.open, false)
	default:
		c.open = append(c.open, true)
	}
	c.finals = append(c.finals, p.ID)
}

func (c *finalConn) calls() ([]uint64, []bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.finals...), append([]bool(nil), c.open...)
}

// fakeConn is an in-memory Conn: frames pushed into in are received, frames
// sent are recorded; full makes sends fail as a full socket would.
type fakeConn struct {
	in      chan []byte
	mu      sync.Mutex
	sent    [][]byte
	full    bool
	maxBufs int // the most buffers a receive was given
	closed  chan struct{}
	once    sync.Once
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan []byte, 16), closed: make(chan struct{})}
}

func (c *fakeConn) RecvBatch(get func() ([][]byte, []int), put func()) (int, error) {
	var first []byte
	select {
	case first = <-c.in:
	case <-c.closed:
		return 0, io.EOF
	}
	bufs, sizes := get()
	c.mu.Lock()
	c.maxBufs = max(c.maxBufs, len(bufs))
	c.mu.Unlock()
	n := 0
	for f := first; ; {
		sizes[n] = copy(bufs[n], f) + max(0, len(f)-len(bufs[n]))
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case f = <-c.in:
			continue
		default:
		}
		return n, nil
	}
}

func (c *fakeConn) SendBatchWait(frames [][]byte, timeout time.Duration) (int, error) {
	return sendWait(c.TrySendBatch, c.closed, frames, timeout)
}

// sendWait retries try until everything went, the timeout passed or closed.
func sendWait(try func([][]byte) (int, error), closed chan struct{}, frames [][]byte, timeout time.Duration) (int, error) {
	sent := 0
	deadline := time.Now().Add(timeout)
	for {
		k, err := try(frames[sent:])
		sent += k
		if err == nil || !errors.Is(err, ErrWouldBlock) {
			return sent, err
		}
		select {
		case <-closed:
			return sent, io.ErrClosedPipe
		default:
		}
		if time.Now().After(deadline) {
			return sent, ErrWouldBlock
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (c *fakeConn) TrySendBatch(frames [][]byte) (int, error) {
	for i, f := range frames {
		if err := c.TrySend(f); err != nil {
			return i, err
		}
	}
	return len(frames), nil
}

func (c *fakeConn) TrySend(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.full {
		return ErrWouldBlock
	}
	c.sent = append(c.sent, append([]byte(nil), frame...))
	return nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) sentFrames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.sent...)
}

func testLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func frameOf(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// eventually polls cond for up to a second.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// burstConn's socket is full until release is closed.
type burstConn struct {
	*fakeConn
	release chan struct{}
}

func (c *burstConn) TrySend(frame []byte) error {
	select {
	case <-c.release:
		return c.fakeConn.TrySend(frame)
	default:
		return ErrWouldBlock
	}
}

func (c *burstConn) TrySendBatch(frames [][]byte) (int, error) {
	for i, f := range frames {
		if err := c.TrySend(f); err != nil {
			return i, err
		}
	}
	return len(frames), nil
}

func (c *burstConn) SendBatchWait(frames [][]byte, timeout time.Duration) (int, error) {
	return sendWait(c.TrySendBatch, c.closed, frames, timeout)
}

func (c *burstConn) Send(frame []byte) error {
	<-c.release
	return c.fakeConn.TrySend(frame)
}

// leavingConn is a fakeConn whose peer can leave: gone is what PeerGone
// says; CloseRead makes the receive side end with EOF once what was sent
// has been taken, as a shut-down socket does.
type leavingConn struct {
	*fakeConn
	gone     atomic.Bool
	readShut chan struct{}
	once     sync.Once
}

func newLeavingConn() *leavingConn {
	return &leavingConn{fakeConn: newFakeConn(), readShut: make(chan struct{})}
}

func (c *leavingConn) PeerGone() bool { return c.gone.Load() }

func (c *leavingConn) CloseRead() { c.once.Do(func() { close(c.readShut) }) }

func (c *leavingConn) RecvBatch(get func() ([][]byte, []int), put func()) (int, error) {
	var first []byte
	select {
	case first = <-c.in:
	case <-c.closed:
		return 0, io.EOF
	case <-c.readShut:
		select {
		case first = <-c.in: // taken before the EOF
		default:
			return 0, io.EOF
		}
	}
	bufs, sizes := get()
	sizes[0] = copy(bufs[0], first)
	return 1, nil
}

// addLink joins conn as a new link, as control's admission does (without
// its handshake answer).
func addLink(m *Multilink, info PeerInfo, conn Conn, onClose func()) (*Port, error) {
	return m.Admit(false, info, conn, onClose, nil)
}
