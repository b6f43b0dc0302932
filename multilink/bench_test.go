package multilink

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"multifs/multilink/conn"
)

func BenchmarkForwardLinkToHost(b *testing.B)       { benchForward(b, false, 1) }
func BenchmarkForwardHostToOneLink(b *testing.B)    { benchForward(b, true, 1) }
func BenchmarkForwardHostToEightLinks(b *testing.B) { benchForward(b, true, 8) }

// BenchmarkForwardLinkToHostDedupOff is BenchmarkForwardLinkToHost with
// dedup=off: without the record of the sole link's frames.
func BenchmarkForwardLinkToHostDedupOff(b *testing.B) { benchForward(b, false, 1, Dedup(0)) }

// BenchmarkForwardHostToQueuedLink: half of every batch goes through the
// link's queue. Each op is one batch of BatchSize 64-byte frames.
func BenchmarkForwardHostToQueuedLink(b *testing.B) {
	m := New(testLog())
	src := &loopConn{frame: make([]byte, 64), limit: int64(b.N), done: make(chan struct{})}
	sink := &halfConn{}
	l, _ := addLink(m, PeerInfo{}, sink, nil)
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

// seqConn is loopConn with a distinct frame each time: frame i of the
// source's stream carries i, so two seqConns send the same stream. With a
// peer, it keeps within a few batches of it, as two links carrying one
// stream do.
type seqConn struct {
	loopConn
	seq   uint64
	peer  *seqConn
	start chan struct{} // if not nil, nothing is sent before it is closed
}

func (c *seqConn) Receive(r conn.Receiver) error {
	if c.start != nil {
		<-c.start
	}
	for {
		n := c.rounds.Add(1)
		if n > c.limit {
			close(c.done)
			select {} // park like an idle socket until the test binary exits
		}
		for c.peer != nil && n > c.peer.rounds.Load()+4 {
			runtime.Gosched()
		}
		b := r.Get()
		for i := range b.Bufs {
			b.Sizes[i] = copy(b.Bufs[i], c.frame)
			binary.BigEndian.PutUint64(b.Bufs[i][b.Sizes[i]-8:], c.seq)
			c.seq++
		}
		r.Deliver(b, len(b.Bufs))
	}
}

// BenchmarkForwardLinkToHostDedup: two links open, so every frame goes
// through the duplicate table; one sends, all its frames distinct (each is
// looked up and remembered, none dropped). Each op is one batch of
// BatchSize 64-byte frames.
func BenchmarkForwardLinkToHostDedup(b *testing.B) {
	m := New(testLog())
	sink := &sinkConn{}
	m.AttachHost(PeerInfo{}, sink, nil)
	addLink(m, PeerInfo{}, &sinkConn{}, nil) // open, silent
	src := &seqConn{loopConn: loopConn{frame: make([]byte, 64), limit: int64(b.N), done: make(chan struct{})}, start: make(chan struct{})}
	addLink(m, PeerInfo{}, src, nil)
	b.ReportAllocs()
	b.ResetTimer()
	close(src.start)
	<-src.done
	b.StopTimer()
	if got := sink.sent.Load(); got != int64(b.N)*BatchSize {
		b.Fatalf("host got %d frames, want %d (none is a duplicate)", got, int64(b.N)*BatchSize)
	}
	b.ReportMetric(float64(b.N*BatchSize)/b.Elapsed().Seconds(), "frames/s")
}

// BenchmarkForwardTwoLinksToHostDedup: a hand-off's overlap, two links
// carrying the same stream; the host gets one copy of each frame. Each op
// is one batch of BatchSize 64-byte frames from each link.
func BenchmarkForwardTwoLinksToHostDedup(b *testing.B) {
	m := New(testLog())
	sink := &sinkConn{}
	h, _ := m.AttachHost(PeerInfo{}, sink, nil)
	srcs := []*seqConn{}
	for range 2 {
		srcs = append(srcs, &seqConn{loopConn: loopConn{frame: make([]byte, 64), limit: int64(b.N), done: make(chan struct{})}})
	}
	srcs[0].peer, srcs[1].peer = srcs[1], srcs[0]
	start := make(chan struct{})
	for _, s := range srcs {
		s.start = start
		addLink(m, PeerInfo{}, s, nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	close(start) // both open: the table is in use from the first frame
	for _, s := range srcs {
		<-s.done
	}
	b.StopTimer()
	frames := int64(b.N) * BatchSize
	got, dups := sink.sent.Load(), int64(m.Totals().DupDropped)
	// The readers keep within a few batches of each other, far less than
	// the table holds: every copy is recognised.
	if got != frames || dups != frames || h.Counters().TxPackets != uint64(got) {
		b.Fatalf("host got %d frames, %d duplicates dropped, of %d sent twice", got, dups, frames)
	}
	b.ReportMetric(float64(2*frames)/b.Elapsed().Seconds(), "frames/s")
}

// BenchmarkDedupTable: the duplicate table alone, without goroutines or
// sockets: two links bring the same stream, each op a batch of BatchSize
// distinct 64-byte frames from link 1, then link 2's copies of it (all
// duplicates), every kept frame accepted by the host.
func BenchmarkDedupTable(b *testing.B) {
	d := newDedup(DefaultDedupWindow)
	d.allocate()
	frames := make([][]byte, BatchSize)
	bufs := make([][]byte, BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	batch := make([][]byte, BatchSize)
	seq := uint64(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range bufs {
			binary.BigEndian.PutUint64(bufs[j][56:], seq)
			seq++
		}
		now := int64(i) * 1000
		for link := uint64(1); link <= 2; link++ {
			batch = append(batch[:0], bufs...)
			frames, _ = d.filter(link, batch, now)
		}
	}
	_ = frames
}

// BenchmarkDedupRecord: the sole link's record, each op a batch of
// BatchSize 64-byte frames.
func BenchmarkDedupRecord(b *testing.B) {
	d := newDedup(DefaultDedupWindow)
	d.allocate()
	batch := make([][]byte, BatchSize)
	for i := range batch {
		batch[i] = make([]byte, 64)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.record(1, batch, int64(i))
	}
}
