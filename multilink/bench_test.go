package multilink

import (
	"testing"
	"time"
)

func BenchmarkForwardLinkToHost(b *testing.B)       { benchForward(b, false, 1) }
func BenchmarkForwardHostToOneLink(b *testing.B)    { benchForward(b, true, 1) }
func BenchmarkForwardHostToEightLinks(b *testing.B) { benchForward(b, true, 8) }

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
