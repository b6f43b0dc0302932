package multilink

import (
	"bytes"
	"testing"
)

// Frames come out of the queue in order and intact across chunk
// boundaries, with pops between pushes, and chunks are let go as they
// empty.
func TestFrameQueueOrderAcrossChunks(t *testing.T) {
	var q frameQueue
	next, want := 0, 0
	frame := func(i int) []byte {
		return bytes.Repeat([]byte{byte(i)}, 60+i%MaxFrame) // sizes vary up to MaxFrame
	}
	for round := 0; round < 50; round++ {
		for i := 0; i < 37; i++ {
			q.push(frame(next))
			next++
		}
		k := 29
		if round%7 == 6 {
			k = q.len() // empty it now and then
		}
		for i := 0; i < k; i++ {
			if !bytes.Equal(q.frames[i], frame(want)) {
				t.Fatalf("round %d: frame %d is not frame %d", round, i, want)
			}
			want++
		}
		q.pop(k)
		total := 0
		for _, f := range q.frames {
			total += len(f)
		}
		if total != q.bytes {
			t.Fatalf("round %d: bytes %d, frames hold %d", round, q.bytes, total)
		}
		if q.len() == 0 && len(q.chunks) != 0 {
			t.Fatalf("round %d: empty queue keeps %d chunks", round, len(q.chunks))
		}
		if max := q.bytes/(chunkSize-MaxFrame) + 2; len(q.chunks) > max {
			t.Fatalf("round %d: %d chunks for %d bytes", round, len(q.chunks), q.bytes)
		}
	}
	q.reset()
	if q.len() != 0 || q.bytes != 0 || len(q.chunks) != 0 {
		t.Fatalf("after reset: %d frames, %d bytes, %d chunks", q.len(), q.bytes, len(q.chunks))
	}
}
