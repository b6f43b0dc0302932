package multilink

import (
	"sync/atomic"
	"testing"
	"time"
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
func benchForward(b *testing.B, fromHost bool, links int) {
	m := New(testLog())
	src := &loopConn{frame: make([]byte, 64), limit: int64(b.N), done: make(chan struct{})}
	sinks := make([]*sinkConn, links)
	for i := range sinks {
		sinks[i] = &sinkConn{}
	}
	if fromHost {
		for _, s := range sinks {
			m.AddLink(PeerInfo{}, s, nil)
		}
	} else {
		m.AttachHost(PeerInfo{}, sinks[0], nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if fromHost {
		m.AttachHost(PeerInfo{}, src, nil)
	} else {
		m.AddLink(PeerInfo{}, src, nil)
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

func BenchmarkForwardLinkToHost(b *testing.B)       { benchForward(b, false, 1) }
func BenchmarkForwardHostToOneLink(b *testing.B)    { benchForward(b, true, 1) }
func BenchmarkForwardHostToEightLinks(b *testing.B) { benchForward(b, true, 8) }

// halfConn's socket takes half of each batch at once; the rest waits for
// the link's queue writer, which SendBatchWait lets through: the queue
// path of a link slower than the host.
type halfConn struct{ sinkConn }

func (c *halfConn) TrySendBatch(frames [][]byte) (int, error) {
	n := len(frames) / 2
	c.sent.Add(int64(n))
	return n, ErrWouldBlock
}

// BenchmarkForwardHostToQueuedLink: half of every batch goes through the
// link's queue. Each op is one batch of BatchSize 64-byte frames.
func BenchmarkForwardHostToQueuedLink(b *testing.B) {
	m := New(testLog())
	src := &loopConn{frame: make([]byte, 64), limit: int64(b.N), done: make(chan struct{})}
	sink := &halfConn{}
	l, _ := m.AddLink(PeerInfo{}, sink, nil)
	b.ReportAllocs()
	b.ResetTimer()
	m.AttachHost(PeerInfo{}, src, nil)
	<-src.done
	want := uint64(b.N) * BatchSize
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := l.Counters()
		if c.TxPackets+c.TxDropped == want {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("link counted %d sent + %d dropped of %d", c.TxPackets, c.TxDropped, want)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if got := uint64(sink.sent.Load()); got != l.Counters().TxPackets {
		b.Fatalf("sink got %d frames, link counted %d", got, l.Counters().TxPackets)
	}
	b.ReportMetric(float64(b.N*BatchSize)/b.Elapsed().Seconds(), "frames/s")
}
