package multilink

import (
	"sync"
	"sync/atomic"

	"multifs/multilink/conn"
)

// BatchSize is how many frames one receive or send moves at most (the
// seam's, which the engine sizes its system calls by).
const BatchSize = conn.BatchSize

// batch is the receive buffer of one reader for one round: BatchSize (or,
// past fullBatches, one) frame buffers in one backing array. Readers take
// one only once their socket is readable, and give it back before waiting
// again, so a thousand idle links hold no buffers at all.
// Its Frames are the good frames of the round, views into Bufs.
type batch = conn.Batch

// fullBatches bounds how many full batches (BatchSize frames of MaxFrame:
// 295 KB) are out at once; past it, a reader gets a one-frame batch (9 KB)
// and receives a frame per call until full ones are back. A reader holds
// its batch while it forwards, and forwarding to a slow host may wait up
// to HostWait, so without a bound every busy link could hold a full batch
// at the same time: 295 MB for 1,000 links. 64 is far more than the
// readers that run at once on a few cores, so the bound costs the data
// path nothing until links pile up behind the host.
const fullBatches = 64

// batches are a multilink's receive buffers: a pool of full batches, of
// which at most fullBatches are out at once, and a pool of one-frame ones.
// Each multilink has its own (the daemon has one), so the bound is the
// daemon's, and tests with multilinks of their own do not share it.
type batches struct {
	fullOut     atomic.Int32 // full batches out of full
	full, small sync.Pool
}

func newBatches() *batches {
	bs := &batches{}
	bs.full.New = func() any { return newBatch(BatchSize) }
	bs.small.New = func() any { return newBatch(1) }
	return bs
}

func newBatch(n int) *batch {
	// One extra byte per buffer lets the kernel report an oversized frame
	// instead of silently delivering it truncated.
	const stride = MaxFrame + 1
	backing := make([]byte, n*stride)
	b := &batch{Bufs: make([][]byte, n), Sizes: make([]int, n), Frames: make([][]byte, 0, n)}
	for i := range b.Bufs {
		b.Bufs[i] = backing[i*stride : (i+1)*stride : (i+1)*stride]
	}
	return b
}

// get returns a full batch, or a one-frame one if fullBatches are out.
// The host's reader always gets a full one (the bound is fullBatches + 1):
// what it reads goes to every link, and links piled up behind a slow host
// must not slow the other direction down too.
func (bs *batches) get(host bool) *batch {
	if bs.fullOut.Add(1) <= fullBatches || host {
		return bs.full.Get().(*batch)
	}
	bs.fullOut.Add(-1)
	return bs.small.Get().(*batch)
}

// put gives b back; it must not be used afterwards.
func (bs *batches) put(b *batch) {
	if len(b.Bufs) == 1 {
		bs.small.Put(b)
		return
	}
	bs.full.Put(b)
	bs.fullOut.Add(-1)
}
