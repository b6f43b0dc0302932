package multilink

import (
	"encoding/binary"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// frameQueue holds the frames a link's socket could not take at once, in
// order. A queue is nothing but chunks: each frame is copied into the last
// chunk behind a 2-byte length, so a frame costs its length plus 2 bytes
// whatever its size, and queuing one is a copy, not an allocation (which
// matters when a link is slower than the host and half of every batch
// goes this way). What a queue holds is counted in whole chunks, against
// maxChunks for the link and, through budget, against the total of all
// queues: what the budget counts is the memory the queues really hold.
// Not safe for concurrent use: the port's out lock guards it.
type frameQueue struct {
	chunks [maxChunks]*qchunk // chunks[:nchunk], oldest first
	nchunk int
	head   int // offset of the oldest frame in chunks[0]
	n      int // frames queued
	bytes  int // their total length
	budget *queueBudget
}

// qchunk is a run of queued frames, each a little-endian uint16 length and
// the frame. Frames are consecutive in the queue, so the oldest frame is
// always in the oldest chunk.
type qchunk struct {
	buf  []byte // chunkSize bytes, mapped outside the Go heap
	used int
}

const (
	chunkSize = 32 << 10 // holds 3 jumbo frames, 21 of 1514 bytes
	lenPrefix = 2
	maxChunks = QueueBytes / chunkSize
	// freeChunks bounds the chunks kept mapped for reuse when queues let
	// them go (all multilinks together): a link that keeps falling a
	// little behind reuses the same few chunks, and a flood that ends
	// gives its memory back at once, beyond this 1 MiB.
	freeChunks = 32
)

// A frame and its length fit in a chunk, and the length in its prefix.
var _ [chunkSize - lenPrefix - MaxFrame]struct{}
var _ [1<<(8*lenPrefix) - 1 - MaxFrame]struct{}

// queueBudget is the memory all the queues of a multilink may hold
// together, in bytes of chunks.
type queueBudget struct {
	used  atomic.Int64
	limit int64
}

func (b *queueBudget) take(n int64) bool {
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *queueBudget) give(n int64) { b.used.Add(-n) }

// Chunks are mapped with mmap rather than allocated on the Go heap: a
// released chunk is unmapped at once, so a daemon whose stuck links have
// left is back to its idle size without waiting for the garbage collector
// (which a daemon that allocates nothing may not run for two minutes) nor
// for the runtime's background scavenger to return the pages.
var chunkFree struct {
	sync.Mutex
	list []*qchunk
}

func getChunk() *qchunk {
	chunkFree.Lock()
	if n := len(chunkFree.list); n > 0 {
		c := chunkFree.list[n-1]
		chunkFree.list[n-1] = nil
		chunkFree.list = chunkFree.list[:n-1]
		chunkFree.Unlock()
		return c
	}
	chunkFree.Unlock()
	buf, err := unix.Mmap(-1, 0, chunkSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil // ENOMEM: the frame is dropped like any other that does not fit
	}
	// Neighbouring chunks' mappings merge; with transparent huge pages
	// "always", one touched byte could then bring in 2 MiB.
	_ = unix.Madvise(buf, unix.MADV_NOHUGEPAGE)
	return &qchunk{buf: buf}
}

// putChunk keeps c for reuse or unmaps it; it must not be used afterwards.
func putChunk(c *qchunk) {
	c.used = 0
	chunkFree.Lock()
	if len(chunkFree.list) < freeChunks {
		if chunkFree.list == nil {
			chunkFree.list = make([]*qchunk, 0, freeChunks)
		}
		chunkFree.list = append(chunkFree.list, c)
		chunkFree.Unlock()
		return
	}
	chunkFree.Unlock()
	_ = unix.Munmap(c.buf)
	c.buf = nil
	if unmapped.Add(chunkSize) >= releaseAfter {
		scheduleRelease()
	}
}

// Unmapping chunks gives back the queues' memory, but not what the
// links that filled them cost on the Go heap (each stuck link's queue
// writer is a goroutine, and its stack): freed, the runtime keeps that
// until its background scavenger gets to it, minutes later. So once
// releaseAfter of chunks has been unmapped (stuck links are leaving, not a
// link falling a little behind), the daemon collects and returns its free
// memory, a moment later so that links leaving together cost one
// collection, and at most once a second however often queues come and go.
const (
	releaseAfter = 1 << 20
	releaseDelay = 200 * time.Millisecond
	releaseEvery = time.Second
)

var (
	unmapped       atomic.Int64 // bytes of chunks unmapped since the last release
	releasePending atomic.Bool
	lastRelease    atomic.Int64 // time.Now().UnixNano() when it ran
)

func scheduleRelease() {
	if !releasePending.CompareAndSwap(false, true) {
		return
	}
	delay := releaseDelay
	if wait := time.Duration(lastRelease.Load() + int64(releaseEvery) - time.Now().UnixNano()); wait > delay {
		delay = wait
	}
	time.AfterFunc(delay, func() {
		unmapped.Store(0)
		debug.FreeOSMemory()
		lastRelease.Store(time.Now().UnixNano())
		releasePending.Store(false)
	})
}

func (q *frameQueue) len() int { return q.n }

// push appends a copy of f, or reports false if it does not fit: the
// link's maxChunks are full or the budget has no chunk left.
func (q *frameQueue) push(f []byte) bool {
	need := lenPrefix + len(f)
	if q.nchunk == 0 || chunkSize-q.chunks[q.nchunk-1].used < need {
		if !q.grow() {
			return false
		}
	}
	c := q.chunks[q.nchunk-1]
	binary.LittleEndian.PutUint16(c.buf[c.used:], uint16(len(f)))
	copy(c.buf[c.used+lenPrefix:], f)
	c.used += need
	q.n++
	q.bytes += len(f)
	return true
}

func (q *frameQueue) grow() bool {
	if q.nchunk == maxChunks {
		return false
	}
	if q.budget != nil && !q.budget.take(chunkSize) {
		return false
	}
	c := getChunk()
	if c == nil {
		if q.budget != nil {
			q.budget.give(chunkSize)
		}
		return false
	}
	q.chunks[q.nchunk] = c
	q.nchunk++
	return true
}

// peek fills dst with views of the oldest frames, as many as there are or
// fit, and returns how many. The views stay valid until those frames are
// popped.
func (q *frameQueue) peek(dst [][]byte) int {
	i, off := 0, q.head
	for ci := 0; ci < q.nchunk && i < len(dst); ci++ {
		c := q.chunks[ci]
		for ; off < c.used && i < len(dst); i++ {
			l := int(binary.LittleEndian.Uint16(c.buf[off:]))
			off += lenPrefix
			dst[i] = c.buf[off : off+l : off+l]
			off += l
		}
		off = 0
	}
	return i
}

// pop removes the k oldest frames (k <= len) and gives back the chunks
// they emptied. The views of the frames popped must not be used
// afterwards.
func (q *frameQueue) pop(k int) {
	for ; k > 0; k-- {
		c := q.chunks[0]
		l := int(binary.LittleEndian.Uint16(c.buf[q.head:]))
		q.head += lenPrefix + l
		q.n--
		q.bytes -= l
		if q.head == c.used {
			// Frames are only appended to the last chunk, so an emptied
			// chunk that is not the last is done with; the last is empty
			// only when the queue is, and then an idle link holds nothing.
			q.dropFirst()
		}
	}
}

func (q *frameQueue) dropFirst() {
	putChunk(q.chunks[0])
	copy(q.chunks[:q.nchunk-1], q.chunks[1:q.nchunk])
	q.nchunk--
	q.chunks[q.nchunk] = nil
	q.head = 0
	if q.budget != nil {
		q.budget.give(chunkSize)
	}
}

// reset drops every frame and gives back every chunk.
func (q *frameQueue) reset() {
	for q.nchunk > 0 {
		q.dropFirst()
	}
	q.n, q.bytes = 0, 0
}
