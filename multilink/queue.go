package multilink

import "sync"

// frameQueue holds the frames a link's socket could not take at once, in
// order, copied into pooled chunks: queuing a frame is a copy, not an
// allocation, which matters when a link is slower than the host and half
// of every batch goes this way. Not safe for concurrent use: the port's
// out lock guards it.
type frameQueue struct {
	frames [][]byte  // views into chunks, oldest first
	chunks []*qchunk // oldest first; frames fill the last one
	bytes  int       // the frames' total length
}

// qchunk is a run of queued frames; live counts those not yet sent. A
// chunk's frames are consecutive in the queue, so the oldest frame always
// lives in the oldest chunk.
type qchunk struct {
	buf        []byte
	used, live int
}

const chunkSize = 64 << 10 // > MaxFrame

var chunkPool = sync.Pool{New: func() any { return &qchunk{buf: make([]byte, chunkSize)} }}

func (q *frameQueue) len() int { return len(q.frames) }

// push appends a copy of f.
func (q *frameQueue) push(f []byte) {
	var c *qchunk
	if n := len(q.chunks); n > 0 && len(q.chunks[n-1].buf)-q.chunks[n-1].used >= len(f) {
		c = q.chunks[n-1]
	} else {
		c = chunkPool.Get().(*qchunk)
		c.used, c.live = 0, 0
		q.chunks = append(q.chunks, c)
	}
	v := c.buf[c.used : c.used+len(f) : c.used+len(f)]
	copy(v, f)
	c.used += len(f)
	c.live++
	q.frames = append(q.frames, v)
	q.bytes += len(f)
}

// pop removes the k oldest frames and recycles the chunks they emptied.
// The views popped must not be used afterwards.
func (q *frameQueue) pop(k int) {
	for i := 0; i < k; i++ {
		q.bytes -= len(q.frames[i])
		q.frames[i] = nil
		c := q.chunks[0]
		c.live--
		if c.live == 0 {
			q.chunks[0] = nil
			q.chunks = q.chunks[1:]
			chunkPool.Put(c)
		}
	}
	q.frames = q.frames[k:]
	if len(q.frames) == 0 {
		q.frames, q.chunks = q.frames[:0], q.chunks[:0]
	}
}

// reset drops every frame and recycles every chunk.
func (q *frameQueue) reset() {
	for _, c := range q.chunks {
		chunkPool.Put(c)
	}
	clear(q.frames)
	clear(q.chunks)
	q.frames, q.chunks, q.bytes = q.frames[:0], q.chunks[:0], 0
}
