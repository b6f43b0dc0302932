package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"multifs/multilink"
	"multifs/multilink/conn"
)

// streamFrame is frame i of a test: length size, bytes that say i.
func streamFrame(i, size int) []byte {
	f := make([]byte, size)
	for j := range f {
		f[j] = byte(i + j*7)
	}
	if size >= 4 {
		binary.BigEndian.PutUint32(f, uint32(i))
	}
	return f
}

// wire is frames as a stream carries them.
func wire(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// refParse is the obvious parser, for comparison: the frames of data,
// each as its size and bytes (nil if over max), and whether the end fell
// mid-frame, or the error.
func refParse(data []byte, max int) (sizes []int, frames [][]byte, rest int, err error) {
	for len(data) >= 4 {
		l := binary.BigEndian.Uint32(data)
		if l > StreamMaxLen {
			return sizes, frames, len(data), ErrStreamTooLong
		}
		if int(l) > max {
			sizes = append(sizes, int(l))
			frames = append(frames, nil)
			if len(data)-4 < int(l) {
				return sizes, frames, 0, nil // passing over it: nothing kept
			}
			data = data[4+l:]
			continue
		}
		if len(data)-4 < int(l) {
			break
		}
		sizes = append(sizes, int(l))
		frames = append(frames, data[4:4+l])
		data = data[4+l:]
	}
	return sizes, frames, len(data), nil
}

// parseChunks feeds data to a StreamParser in chunks of the given sizes
// (cycled), with batches of nb buffers, as the FD does with its buffer.
func parseChunks(data []byte, chunks []int, nb int) (sizes []int, frames [][]byte, pending int, err error) {
	var sp StreamParser
	bufs := make([][]byte, nb)
	for i := range bufs {
		bufs[i] = make([]byte, multilink.MaxFrame+1)
	}
	sz := make([]int, nb)
	var held []byte
	for c := 0; len(data) > 0 || len(held) > 0; c++ {
		k := len(data)
		if len(chunks) > 0 {
			k = min(max(chunks[c%len(chunks)], 1), len(data))
		}
		held = append(held, data[:k]...)
		data = data[k:]
		for {
			used, n, perr := sp.Parse(held, bufs, sz)
			held = held[used:]
			for i := 0; i < n; i++ {
				sizes = append(sizes, sz[i])
				if sz[i] <= len(bufs[i]) {
					frames = append(frames, append([]byte(nil), bufs[i][:sz[i]]...))
				} else {
					frames = append(frames, nil)
				}
			}
			if perr != nil {
				return sizes, frames, len(held), perr
			}
			// Ready must say whether another Parse, without more bytes,
			// would do anything: the FD waits on the socket when not.
			probe := sp
			u2, n2, e2 := probe.Parse(held, bufs, make([]int, nb))
			if ready, progress := sp.Ready(held, len(bufs[0])), u2 > 0 || n2 > 0 || e2 != nil; ready != progress {
				return sizes, frames, len(held), fmt.Errorf("Ready says %v, but Parse would progress: %v", ready, progress)
			}
			if n < nb {
				break
			}
		}
		if k == 0 {
			break
		}
	}
	return sizes, frames, len(held), nil
}

func TestStreamParser(t *testing.T) {
	big := StreamMaxLen
	raw := func(l uint32, body int) []byte {
		return append(binary.BigEndian.AppendUint32(nil, l), make([]byte, body)...)
	}
	cases := []struct {
		name    string
		data    []byte
		sizes   []int
		pending int
		err     error
	}{
		{"one", wire(streamFrame(1, 60)), []int{60}, 0, nil},
		{"many", wire(streamFrame(1, 60), streamFrame(2, 14), streamFrame(3, 9234)), []int{60, 14, 9234}, 0, nil},
		{"length 0", append(wire(make([]byte, 0)), wire(streamFrame(1, 60))...), []int{0, 60}, 0, nil},
		{"length 13", append(raw(13, 13), wire(streamFrame(1, 60))...), []int{13, 60}, 0, nil},
		{"length 9235", append(raw(9235, 9235), wire(streamFrame(1, 60))...), []int{9235, 60}, 0, nil},
		{"length NET_BUFSIZE", append(raw(uint32(big), big), wire(streamFrame(1, 60))...), []int{big, 60}, 0, nil},
		{"length NET_BUFSIZE+1", append(wire(streamFrame(1, 60)), raw(uint32(big+1), 10)...), []int{60}, 14, ErrStreamTooLong},
		{"length 2^32-1", append(wire(streamFrame(1, 60)), raw(1<<32-1, 0)...), []int{60}, 4, ErrStreamTooLong},
		{"mid-frame", append(wire(streamFrame(1, 60)), wire(streamFrame(2, 100))[:50]...), []int{60}, 50, nil},
		{"mid-length", append(wire(streamFrame(1, 60)), 0, 0), []int{60}, 2, nil},
	}
	for _, c := range cases {
		for _, chunks := range [][]int{nil, {1}, {3}, {4096}, {1, 7, 4093}} {
			for _, nb := range []int{1, 2, multilink.BatchSize} {
				sizes, frames, pending, err := parseChunks(c.data, chunks, nb)
				if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
					t.Fatalf("%s, chunks %v, batch %d: error %v, want %v", c.name, chunks, nb, err, c.err)
				}
				if !equalInts(sizes, c.sizes) {
					t.Fatalf("%s, chunks %v, batch %d: sizes %v, want %v", c.name, chunks, nb, sizes, c.sizes)
				}
				if err == nil && pending != c.pending {
					t.Fatalf("%s, chunks %v, batch %d: %d bytes pending, want %d", c.name, chunks, nb, pending, c.pending)
				}
				for i, f := range frames {
					if sizes[i] == 60 && !bytes.Equal(f, streamFrame(1, 60)) && !bytes.Equal(f, streamFrame(2, 60)) {
						t.Fatalf("%s, chunks %v: frame %d corrupted", c.name, chunks, i)
					}
				}
			}
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzStreamParser: whatever the bytes and however they are cut into
// reads, the parser finds what the obvious parser finds, keeps less than
// a frame, and never more than StreamMaxFrameBytes of one.
func FuzzStreamParser(f *testing.F) {
	f.Add(wire(streamFrame(1, 60), streamFrame(2, 14)), []byte{1, 3})
	f.Add(append(binary.BigEndian.AppendUint32(nil, 9235), make([]byte, 9235)...), []byte{200})
	f.Add(binary.BigEndian.AppendUint32(nil, 1<<32-1), []byte{})
	f.Add(wire(make([]byte, 0), make([]byte, 13)), []byte{2})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		chunks := make([]int, len(cuts))
		for i, c := range cuts {
			chunks[i] = int(c)*37 + 1
		}
		wantSizes, wantFrames, wantRest, wantErr := refParse(data, multilink.MaxFrame+1)
		for _, nb := range []int{1, 5} {
			sizes, frames, pending, err := parseChunks(data, chunks, nb)
			if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
				t.Fatalf("batch %d: error %v, want %v", nb, err, wantErr)
			}
			if !equalInts(sizes, wantSizes) {
				t.Fatalf("batch %d: sizes %v, want %v", nb, sizes, wantSizes)
			}
			for i := range frames {
				if !bytes.Equal(frames[i], wantFrames[i]) {
					t.Fatalf("batch %d: frame %d differs", nb, i)
				}
			}
			if err == nil && pending != wantRest {
				t.Fatalf("batch %d: %d bytes pending, want %d", nb, pending, wantRest)
			}
			if err == nil && pending >= StreamMaxFrameBytes {
				t.Fatalf("batch %d: %d bytes kept, more than a frame", nb, pending)
			}
		}
	})
}

// streamPair returns a stream FD in e and the raw other end (blocking).
func streamPair(t *testing.T, e *Engine, o Options) (*FD, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.NewStream(fds[0], "stream", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); unix.Close(fds[1]) })
	return p, fds[1]
}

// collector is a conn.Receiver that keeps a copy of every frame size and
// frame delivered.
type collector struct {
	mu     sync.Mutex
	b      *conn.Batch
	sizes  []int
	frames [][]byte
	got    chan struct{}
}

func newCollector() *collector {
	b := &conn.Batch{Bufs: make([][]byte, multilink.BatchSize), Sizes: make([]int, multilink.BatchSize)}
	for i := range b.Bufs {
		b.Bufs[i] = make([]byte, multilink.MaxFrame+1)
	}
	return &collector{b: b, got: make(chan struct{}, 1)}
}

func (c *collector) Get() *conn.Batch  { return c.b }
func (c *collector) Put(b *conn.Batch) {}
func (c *collector) Deliver(b *conn.Batch, n int) {
	c.mu.Lock()
	for i := 0; i < n; i++ {
		c.sizes = append(c.sizes, b.Sizes[i])
		if b.Sizes[i] <= len(b.Bufs[i]) {
			c.frames = append(c.frames, append([]byte(nil), b.Bufs[i][:b.Sizes[i]]...))
		} else {
			c.frames = append(c.frames, nil)
		}
	}
	c.mu.Unlock()
	select {
	case c.got <- struct{}{}:
	default:
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sizes)
}

// waitCount waits until c has n frames.
func (c *collector) waitCount(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for c.count() < n {
		select {
		case <-c.got:
		case <-deadline:
			t.Fatalf("%d of %d frames delivered after 5 s", c.count(), n)
		}
	}
}

func writeAll(t *testing.T, fd int, b []byte) {
	t.Helper()
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
}

// Through every wait (the hot loop, parked, a thread of its own): one
// frame a byte at a time, 10,000 frames in one write, and the bad lengths
// in between are delivered as they are, in order, and the stream stays in
// step.
func TestStreamReceive(t *testing.T) {
	for _, own := range []bool{false, true} {
		e := newEngine(t)
		p, peer := streamPair(t, e, Options{OwnThread: own})
		c := newCollector()
		ended := make(chan error, 1)
		go func() { ended <- p.Receive(c) }()

		one := wire(streamFrame(0, 1500))
		for i := range one {
			writeAll(t, peer, one[i:i+1])
		}
		c.waitCount(t, 1)

		var many []byte
		var want [][]byte
		for i := 1; i <= 10000; i++ {
			f := streamFrame(i, 14+i%1500)
			want = append(want, f)
			many = append(many, wire(f)...)
		}
		go func() {
			for b := many; len(b) > 0; {
				n, err := unix.Write(peer, b)
				if err != nil {
					return
				}
				b = b[n:]
			}
		}()
		c.waitCount(t, 10001)

		bad := binary.BigEndian.AppendUint32(nil, 0)
		bad = append(binary.BigEndian.AppendUint32(bad, 13), make([]byte, 13)...)
		bad = append(binary.BigEndian.AppendUint32(bad, 9235), make([]byte, 9235)...)
		bad = append(bad, wire(streamFrame(20000, 60))...)
		writeAll(t, peer, bad)
		c.waitCount(t, 10005)

		c.mu.Lock()
		if !bytes.Equal(c.frames[0], streamFrame(0, 1500)) {
			t.Fatal("the frame written a byte at a time differs")
		}
		for i, f := range want {
			if !bytes.Equal(c.frames[1+i], f) {
				t.Fatalf("own thread %v: frame %d of the 10,000 differs (size %d, want %d)", own, i+1, c.sizes[1+i], len(f))
			}
		}
		if got := c.sizes[10001:]; !equalInts(got, []int{0, 13, 9235, 60}) || !bytes.Equal(c.frames[10004], streamFrame(20000, 60)) {
			t.Fatalf("own thread %v: after the bad lengths: sizes %v", own, got)
		}
		c.mu.Unlock()

		unix.Close(peer)
		select {
		case err := <-ended:
			if !errors.Is(err, io.EOF) {
				t.Fatalf("own thread %v: at the peer's end: %v, want EOF", own, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Receive still running 2 s after the peer's end")
		}
	}
}

// The connection ends, after the frames before, at a length QEMU would
// refuse and at a stream that stops mid-frame.
func TestStreamReceiveEnds(t *testing.T) {
	good := wire(streamFrame(1, 60))
	for _, c := range []struct {
		name string
		tail []byte
		want error
	}{
		{"length 2^32-1", binary.BigEndian.AppendUint32(nil, 1<<32-1), ErrStreamTooLong},
		{"length NET_BUFSIZE+1", binary.BigEndian.AppendUint32(nil, StreamMaxLen+1), ErrStreamTooLong},
		{"end mid-frame", wire(streamFrame(2, 100))[:30], ErrStreamCut},
		{"end mid-length", []byte{0, 0}, ErrStreamCut},
		{"end mid-skip", append(binary.BigEndian.AppendUint32(nil, 20000), make([]byte, 100)...), ErrStreamCut},
	} {
		e := newEngine(t)
		p, peer := streamPair(t, e, Options{})
		col := newCollector()
		ended := make(chan error, 1)
		go func() { ended <- p.Receive(col) }()
		writeAll(t, peer, append(append([]byte(nil), good...), c.tail...))
		if c.want == ErrStreamCut {
			col.waitCount(t, 1)
			unix.Shutdown(peer, unix.SHUT_WR)
		}
		select {
		case err := <-ended:
			if !errors.Is(err, c.want) {
				t.Fatalf("%s: Receive ended with %v, want %v", c.name, err, c.want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: Receive still running after 2 s", c.name)
		}
		if col.count() < 1 || !bytes.Equal(col.frames[0], streamFrame(1, 60)) {
			t.Fatalf("%s: the frame before was not delivered", c.name)
		}
	}
}

// drainPeer reads from fd until want frames came or until, and parses
// strictly: every frame whole, checked by check.
func drainPeer(t *testing.T, fd int, buf *[]byte, until time.Time, want int, check func(i int, f []byte)) int {
	t.Helper()
	got := 0
	tmp := make([]byte, 1<<16)
	for got < want && time.Now().Before(until) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, 100); n == 0 {
			continue
		}
		n, err := unix.Read(fd, tmp)
		if err != nil || n == 0 {
			break
		}
		*buf = append(*buf, tmp[:n]...)
		for len(*buf) >= 4 {
			l := int(binary.BigEndian.Uint32(*buf))
			if l > multilink.MaxFrame {
				t.Fatalf("frame %d: length %d: the stream is out of step", got, l)
			}
			if len(*buf) < 4+l {
				break
			}
			check(got, (*buf)[4:4+l])
			*buf = (*buf)[4+l:]
			got++
		}
	}
	return got
}

// A peer that does not read: sends take whole frames until the socket is
// full (ErrWouldBlock), a frame the kernel took part of counts as sent and
// its rest goes first; once the peer reads, every frame counted as sent
// arrives whole and in order, even the cut one that was the last sent.
func TestStreamSendNeverCutsFrames(t *testing.T) {
	e := newEngine(t)
	p, peer := streamPair(t, e, Options{})
	// A small send buffer, so that writes are cut mid-frame.
	if !p.Control(func(fd int) { unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8192) }) {
		t.Fatal("closed")
	}
	var frames [][]byte
	for i := 0; i < 64; i++ {
		frames = append(frames, streamFrame(i, 3000+i*97%6000))
	}
	sent := 0
	var cuts int
	for round := 0; round < 200 && sent < len(frames); round++ {
		k, err := p.TrySendBatch(frames[sent:])
		sent += k
		if p.st.cut() {
			cuts++
		}
		if err != nil && !errors.Is(err, conn.ErrWouldBlock) {
			t.Fatal(err)
		}
		if err == nil {
			break
		}
		if k == 0 {
			break // full: the peer must read
		}
	}
	if sent == 0 || sent == len(frames) {
		t.Fatalf("%d of %d frames sent to a peer that does not read: the test needs a socket that fills", sent, len(frames))
	}
	// A cut last frame: the flusher finishes it with nothing more sent.
	var buf []byte
	n := drainPeer(t, peer, &buf, time.Now().Add(3*time.Second), sent, func(i int, f []byte) {
		if !bytes.Equal(f, frames[i]) {
			t.Fatalf("frame %d arrived different (%d bytes, sent %d)", i, len(f), len(frames[i]))
		}
	})
	if n != sent {
		t.Fatalf("%d frames counted as sent, %d arrived whole (%d bytes left over)", sent, n, len(buf))
	}
	// The rest, through SendBatchWait, with the peer reading.
	done := make(chan error, 1)
	go func() {
		k, err := p.SendBatchWait(frames[sent:], 2*time.Second)
		if k != len(frames)-sent && err == nil {
			err = errors.New("not all sent")
		}
		done <- err
	}()
	n2 := drainPeer(t, peer, &buf, time.Now().Add(3*time.Second), len(frames)-sent, func(i int, f []byte) {
		if !bytes.Equal(f, frames[sent+i]) {
			t.Fatalf("frame %d arrived different", sent+i)
		}
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n2 != len(frames)-sent || len(buf) != 0 {
		t.Fatalf("after the reader came back: %d of %d frames, %d bytes left over", n2, len(frames)-sent, len(buf))
	}
	t.Logf("%d frames sent before the socket filled, cut frames seen %d", sent, cuts)
}

// cut reports whether the rest of a cut frame waits to be written.
func (st *streamState) cut() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.remOff < len(st.rem)
}

// A stream peer that floods must not keep the hot loop to itself. A
// stream's frames already read are delivered before it waits again, and
// a flood refills its buffer before it is empty: unless the loop takes
// turns, every other member waits until the flood stops.
func TestStreamFloodSharesTheLoop(t *testing.T) {
	e := newEngine(t)
	flood, floodPeer := streamPair(t, e, Options{})
	quiet, quietPeer := streamPair(t, e, Options{})
	// The flood's writes must keep its socket full however slowly the
	// writer is scheduled.
	unix.SetsockoptInt(floodPeer, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)

	var flooded, got atomic.Int64
	gotOne := make(chan struct{}, 1)
	go flood.Receive(fixedReceiver(t, conn.BatchSize, func(n int) {
		// What forwarding a batch costs (a sendmmsg to the host).
		for start := time.Now(); time.Since(start) < 10*time.Microsecond; {
		}
		flooded.Add(int64(n))
	}))
	go quiet.Receive(fixedReceiver(t, conn.BatchSize, func(n int) {
		got.Add(int64(n))
		select {
		case gotOne <- struct{}{}:
		default:
		}
	}))

	// Runts, 5 bytes each (dropped by the multilink, but each batch of
	// them costs a delivery): the cheapest flood there is. (Not 4: 64 KiB
	// reads would then end on a batch's end, and the loop would look at
	// the others at each.)
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		chunk := bytes.Repeat(wire([]byte{0}), 50000)
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := unix.Write(floodPeer, chunk); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); flood.Close(); <-writerDone }()
	waitFor(t, "the flood served by the hot loop", func() bool { return flood.inLoop() && flooded.Load() > 10000 })

	// The quiet link's first frame is received by its own goroutine
	// (it was parked); then it joins the loop, which must serve it too.
	deliveredWithin := func(want int64, what string) {
		t.Helper()
		writeAll(t, quietPeer, wire(streamFrame(int(want), 60)))
		deadline := time.After(2 * time.Second)
		for got.Load() < want {
			select {
			case <-gotOne:
			case <-deadline:
				t.Fatalf("%s: not delivered within 2 s while another member floods (%d frames of the flood delivered)", what, flooded.Load())
			}
		}
	}
	deliveredWithin(1, "the quiet link's first frame")
	waitFor(t, "the quiet link in the hot loop", quiet.inLoop)
	// Taking turns, the loop serves the quiet link within a few of the
	// flood's batches: 10 frames, one after the other, in well under a
	// second, even on a loaded machine.
	start := time.Now()
	for i := int64(2); i <= 11; i++ {
		deliveredWithin(i, fmt.Sprintf("frame %d, through the loop", i))
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("10 frames of a quiet link took %v through a loop shared with a flood (%d frames of it delivered)", took, flooded.Load())
	}
	if !flood.inLoop() {
		t.Fatal("the flood left the loop: the test proves nothing")
	}
}

// An idle connection holds no memory for frames: not the receive buffer,
// and, once a frame it kept the start of while idle has come whole, not
// the room for that start either; nor, once the rest of a frame cut on
// sending has gone, the room for that rest. A crowd of idle peers then
// costs what it costs for datagram ones, whatever they did before.
func TestStreamIdleHoldsNothing(t *testing.T) {
	e := newEngine(t)
	p, peer := streamPair(t, e, Options{})
	c := newCollector()
	go p.Receive(c)

	whole := wire(streamFrame(1, 9000))
	writeAll(t, peer, whole[:5000])
	if held, kept, _ := idleState(t, p, "idle mid-frame"); held || kept != 5000 {
		t.Fatalf("idle mid-frame: buffer held %v, %d bytes kept; want none, 5000", held, kept)
	}
	writeAll(t, peer, whole[5000:])
	c.waitCount(t, 1)
	if held, _, room := idleState(t, p, "idle after the frame"); held || room != 0 {
		t.Fatalf("idle after the frame came whole: buffer held %v, room for %d bytes kept", held, room)
	}

	// A cut on sending: a small send buffer, a peer that reads late.
	p.Control(func(fd int) { unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8192) })
	var frames [][]byte
	for i := 0; i < 64; i++ {
		frames = append(frames, streamFrame(i, 3000+i*97%6000))
	}
	sent := 0
	for round := 0; round < 200 && sent < len(frames) && !p.st.cut(); round++ {
		k, _ := p.TrySendBatch(frames[sent:])
		sent += k
	}
	if !p.st.cut() {
		t.Fatalf("no frame cut in %d sent: the test needs one", sent)
	}
	var buf []byte
	if n := drainPeer(t, peer, &buf, time.Now().Add(3*time.Second), sent, func(int, []byte) {}); n != sent {
		t.Fatalf("%d of %d frames read", n, sent)
	}
	waitFor(t, "the flusher done", func() bool {
		p.st.mu.Lock()
		defer p.st.mu.Unlock()
		return !p.st.flushing
	})
	p.st.mu.Lock()
	room := cap(p.st.rem)
	p.st.mu.Unlock()
	if room != 0 {
		t.Fatalf("the rest of a cut frame gone: room for %d bytes kept", room)
	}
}

// idleState waits until p's reader has read all there is and parked, then
// reports whether it holds a receive buffer, and the bytes and room of
// what it kept of a frame. The reader wrote them before parking
// (published by its atomic wait state); taking p.wait's lock after
// reading them orders the reads before the reader's next wake-up, which
// the poller hands over under that lock.
func idleState(t *testing.T, p *FD, what string) (held bool, kept, room int) {
	t.Helper()
	waitFor(t, what+": all read, the reader parked", func() bool {
		queued := -1
		p.Control(func(fd int) { queued, _ = unix.IoctlGetInt(fd, unix.SIOCINQ) })
		return queued == 0 && p.waitNow() == waitingParked
	})
	held, kept, room = p.st.buf != nil, len(p.st.carry), cap(p.st.carry)
	p.wait.Lock()
	p.wait.Unlock()
	return held, kept, room
}

// Frames cut at every byte, the first part read (and kept, the socket
// found empty) before the rest is written: through the connection's own
// buffer, whatever the cut, the frames come whole and in order, a bad
// length among them passed over.
func TestStreamSplitAtEveryByte(t *testing.T) {
	bad := append(binary.BigEndian.AppendUint32(nil, 13), make([]byte, 13)...)
	data := append(append(wire(streamFrame(1, 60), streamFrame(2, 14)), bad...), wire(streamFrame(3, 100))...)
	for _, own := range []bool{false, true} {
		e := newEngine(t)
		p, peer := streamPair(t, e, Options{OwnThread: own})
		c := newCollector()
		go p.Receive(c)
		for cut := 1; cut < len(data); cut++ {
			writeAll(t, peer, data[:cut])
			waitFor(t, "the first part read", func() bool {
				queued := -1
				p.Control(func(fd int) { queued, _ = unix.IoctlGetInt(fd, unix.SIOCINQ) })
				return queued == 0
			})
			writeAll(t, peer, data[cut:])
			c.waitCount(t, 4*cut)
		}
		c.mu.Lock()
		for i := 0; i < len(c.sizes); i += 4 {
			if !equalInts(c.sizes[i:i+4], []int{60, 14, 13, 100}) || !bytes.Equal(c.frames[i], streamFrame(1, 60)) ||
				!bytes.Equal(c.frames[i+1], streamFrame(2, 14)) || !bytes.Equal(c.frames[i+3], streamFrame(3, 100)) {
				t.Fatalf("own thread %v, cut at byte %d: sizes %v", own, i/4+1, c.sizes[i:i+4])
			}
		}
		c.mu.Unlock()
	}
}
