package engine

import (
	"testing"

	"multifs/multilink/conn"
)

// BenchmarkBatchRoundTrip moves a batch of 8 frames of 64 bytes through a
// socket pair with the daemon's batched calls; one op is one batch. The
// data path must not allocate: the figure to watch is allocs/op.
func BenchmarkBatchRoundTrip(b *testing.B) {
	src, dst := socketPair(b, newEngine(b))
	frames := make([][]byte, 8)
	for i := range frames {
		frames[i] = make([]byte, 64)
	}
	r := fixedReceiver(b, conn.BatchSize, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n, err := src.SendBatchWait(frames, 0); n != len(frames) || err != nil {
			b.Fatalf("sent %d: %v", n, err)
		}
		for got := 0; got < len(frames); {
			batch, n, err := dst.recvBatch(r)
			if err != nil {
				b.Fatal(err)
			}
			r.Deliver(batch, n)
			got += n
		}
	}
}
