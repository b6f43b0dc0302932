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
		return bytes.Repeat([]byte{byte(i)}, MinFrame+(i*997)%(MaxFrame-MinFrame+1)) // sizes vary up to MaxFrame
	}
	var views [BatchSize][]byte
	for round := 0; round < 60; round++ {
		for i := 0; i < 37; i++ {
			if !q.push(frame(next)) {
				t.Fatalf("round %d: frame %d refused with %d bytes queued", round, next, q.bytes)
			}
			next++
		}
		k := 33
		if round%7 == 6 {
			k = q.len() // empty it now and then
		}
		for popped := 0; popped < k; {
			n := q.peek(views[:min(BatchSize, k-popped)])
			if n == 0 {
				t.Fatalf("round %d: peek found nothing with %d frames queued", round, q.len())
			}
			for i := 0; i < n; i++ {
				if !bytes.Equal(views[i], frame(want)) {
					t.Fatalf("round %d: frame %d is not frame %d", round, popped+i, want)
				}
				want++
			}
			q.pop(n)
			popped += n
		}
		total, n := 0, q.peek(make([][]byte, q.len()+1))
		if n != q.len() {
			t.Fatalf("round %d: peek sees %d frames, len %d", round, n, q.len())
		}
		views := make([][]byte, n)
		q.peek(views)
		for _, f := range views {
			total += len(f)
		}
		if total != q.bytes {
			t.Fatalf("round %d: bytes %d, frames hold %d", round, q.bytes, total)
		}
		if q.len() == 0 && q.nchunk != 0 {
			t.Fatalf("round %d: empty queue keeps %d chunks", round, q.nchunk)
		}
		if max := (q.bytes+q.len()*lenPrefix)/(chunkSize-MaxFrame-lenPrefix) + 2; q.nchunk > max {
			t.Fatalf("round %d: %d chunks for %d bytes", round, q.nchunk, q.bytes)
		}
	}
	q.reset()
	if q.len() != 0 || q.bytes != 0 || q.nchunk != 0 {
		t.Fatalf("after reset: %d frames, %d bytes, %d chunks", q.len(), q.bytes, q.nchunk)
	}
}

// A queue holds at most QueueBytes of chunks whatever the frames' size,
// and the budget counts exactly the chunks it holds.
func TestFrameQueueBoundedBySize(t *testing.T) {
	for _, size := range []int{MinFrame, 60, 1514, MaxFrame} {
		b := &queueBudget{limit: TotalQueueBytes}
		q := frameQueue{budget: b}
		f := make([]byte, size)
		n := 0
		for q.push(f) {
			n++
			if n > QueueBytes {
				t.Fatalf("size %d: no bound", size)
			}
		}
		if n != queueFrames(size) || q.nchunk != maxChunks {
			t.Fatalf("size %d: %d frames in %d chunks, want %d in %d", size, n, q.nchunk, queueFrames(size), maxChunks)
		}
		if got := b.used.Load(); got != QueueBytes {
			t.Fatalf("size %d: budget counts %d bytes for a full queue, want %d", size, got, QueueBytes)
		}
		if waste := float64(QueueBytes-n*size) / QueueBytes; size >= 60 && waste > 0.16 {
			t.Fatalf("size %d: %.0f%% of the queue is not frames", size, 100*waste)
		}
		q.pop(n - 1)
		if q.nchunk != 1 || b.used.Load() != chunkSize {
			t.Fatalf("size %d: one frame left holds %d chunks, budget %d", size, q.nchunk, b.used.Load())
		}
		q.pop(1)
		if q.nchunk != 0 || b.used.Load() != 0 {
			t.Fatalf("size %d: empty queue holds %d chunks, budget %d", size, q.nchunk, b.used.Load())
		}
	}
}

// Queues sharing a budget stop growing together at its limit, and a chunk
// one gives back can be taken by another.
func TestFrameQueueSharedBudget(t *testing.T) {
	b := &queueBudget{limit: 3 * chunkSize}
	a, c := frameQueue{budget: b}, frameQueue{budget: b}
	f := make([]byte, 1000)
	per := chunkSize / (lenPrefix + len(f))
	for i := 0; i < 2*per; i++ {
		if !a.push(f) {
			t.Fatalf("a refused frame %d", i)
		}
	}
	for i := 0; i < per; i++ {
		if !c.push(f) {
			t.Fatalf("c refused frame %d", i)
		}
	}
	if a.push(f) || c.push(f) {
		t.Fatal("a push beyond the shared budget was taken")
	}
	a.pop(per) // a gives back its first chunk
	if !c.push(f) {
		t.Fatal("c cannot take the chunk a gave back")
	}
	a.reset()
	c.reset()
	if b.used.Load() != 0 {
		t.Fatalf("budget %d after both reset", b.used.Load())
	}
}

// Chunks given back beyond freeChunks are unmapped, not kept.
func TestFrameQueueFreeListBounded(t *testing.T) {
	qs := make([]frameQueue, 2*freeChunks/maxChunks+1)
	f := make([]byte, MaxFrame)
	for i := range qs {
		for qs[i].push(f) {
		}
	}
	for i := range qs {
		qs[i].reset()
	}
	chunkFree.Lock()
	n := len(chunkFree.list)
	chunkFree.Unlock()
	if n > freeChunks {
		t.Fatalf("%d chunks kept for reuse, at most %d", n, freeChunks)
	}
}

// Queuing and sending a frame costs no allocation once chunks are mapped.
func TestFrameQueueNoAllocs(t *testing.T) {
	var q frameQueue
	f := make([]byte, 64)
	var views [BatchSize][]byte
	allocs := testing.AllocsPerRun(100, func() {
		for i := 0; i < 3*BatchSize; i++ {
			q.push(f)
		}
		for q.len() > 0 {
			q.pop(q.peek(views[:]))
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per round", allocs)
	}
}
