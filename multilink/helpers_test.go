package multilink

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/multilink/conn"
	"multifs/multilink/conn/conntest"
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

func (c *loopConn) Receive(r conn.Receiver) error {
	for {
		if c.rounds.Add(1) > c.limit {
			close(c.done)
			select {} // park like an idle socket until the test binary exits
		}
		b := r.Get()
		for i := range b.Bufs {
			b.Sizes[i] = copy(b.Bufs[i], c.frame)
		}
		r.Deliver(b, len(b.Bufs))
	}
}

func (c *loopConn) TrySendBatch(frames [][]byte) (int, error) {
	c.sent.Add(int64(len(frames)))
	return len(frames), nil
}
func (c *loopConn) SendBatchWait(frames [][]byte, _ time.Duration) (int, error) {
	return c.TrySendBatch(frames)
}
func (c *loopConn) Close() error { return nil }

type sinkConn struct{ sent atomic.Int64 }

func (c *sinkConn) Receive(conn.Receiver) error {
	select {} // never sends; the benchmark's binary exits under it
}
func (c *sinkConn) TrySendBatch(frames [][]byte) (int, error) {
	c.sent.Add(int64(len(frames)))
	return len(frames), nil
}
func (c *sinkConn) SendBatchWait(frames [][]byte, _ time.Duration) (int, error) {
	return c.TrySendBatch(frames)
}
func (c *sinkConn) Close() error { return nil }

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
	case <-c.Closed():
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

// fakeConn is the shared fake peer (conntest): frames pushed into in are
// received, frames sent are recorded; SetFull makes sends fail as a full
// socket would, SetGone marks the peer gone (it is a Leaver).
type fakeConn struct {
	*conntest.Peer
	in chan<- []byte
}

func newFakeConn() *fakeConn {
	p := conntest.New()
	return &fakeConn{Peer: p, in: p.In}
}

func (c *fakeConn) sentFrames() [][]byte { return c.Sent() }

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

// addLink joins conn as a new link, as control's admission does (without
// its handshake answer).
func addLink(m *Multilink, info PeerInfo, conn Conn, onClose func()) (*Port, error) {
	return m.Admit(false, info, conn, onClose, nil)
}

// CloseLink closes the open link with this id and returns once it is gone
// (its Conn and control stream closed, no longer listed), as
// CloseLinkForGood does, but lets its peer rejoin: tests close links that
// way.
func (m *Multilink) CloseLink(id uint64) error {
	p := m.Link(id)
	if p == nil {
		return noLink(id)
	}
	p.Close()
	return nil
}

// queueFrames is how many frames of size bytes one queue holds at most.
func queueFrames(size int) int { return maxChunks * (chunkSize / (lenPrefix + size)) }
