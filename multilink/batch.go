package multilink

import "sync"

// BatchSize is how many frames one receive or send moves at most.
const BatchSize = 32

// batch is the receive buffer of one reader for one round: BatchSize
// frame buffers in one backing array. Readers take one from the pool only
// once their socket is readable, and return it before waiting again, so a
// thousand idle links hold no buffers at all.
type batch struct {
	bufs   [][]byte
	sizes  []int
	frames [][]byte // the good frames of this round, views into bufs
}

var batchPool = sync.Pool{New: func() any {
	// One extra byte per buffer lets the kernel report an oversized frame
	// instead of silently delivering it truncated.
	const stride = MaxFrame + 1
	backing := make([]byte, BatchSize*stride)
	b := &batch{bufs: make([][]byte, BatchSize), sizes: make([]int, BatchSize), frames: make([][]byte, 0, BatchSize)}
	for i := range b.bufs {
		b.bufs[i] = backing[i*stride : (i+1)*stride : (i+1)*stride]
	}
	return b
}}
