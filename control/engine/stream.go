package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"multifs/multilink/conn"
)

// A byte stream of frames: QEMU's `-netdev stream` framing (net/stream.c),
// which passt, gvisor-tap-vsock, socket_vmnet and `-netdev socket,fd=N`
// speak too. Each frame is a 4-byte big-endian length and that many
// bytes, no virtio header, both ways.
//
// Receiving: the socket is read in big chunks into a buffer of the
// connection's own, and whole frames are copied from it into the
// Receiver's batch. One read may carry many frames and a frame may come
// in many reads. The buffer is a pooled one while bytes are waiting in
// it, handed back when it is empty; a connection that goes idle in the
// middle of a frame keeps that frame's bytes only, at most
// StreamMaxFrameBytes. A length too long for a batch buffer (more than any
// Ethernet frame the multilink takes) is passed over byte by byte as it
// comes, never stored, and reported with its size, so the multilink counts
// it dropped; a length above what QEMU itself accepts (StreamMaxLen) ends
// the connection, as it ends QEMU's, and so does a stream that ends in the
// middle of a frame.
//
// Sending: many frames per sendmsg, each with its length in front. The
// peer must never see a frame cut short, even if it reads slowly: if the
// kernel takes part of a frame, the rest of it (at most
// StreamMaxFrameBytes) is kept and written before anything else, and the
// frame counts as sent. Until it has gone, sends find the socket full
// (conn.ErrWouldBlock), so the frames that follow wait in the multilink's
// queue or are dropped whole, as for a datagram socket. Linux queues a
// unix stream write in socket buffers of up to about 36 KiB (and half the
// send buffer), each taken whole or not at all, so sendmsg calls are kept
// to streamWriteMax and a cut is rare; if the last frame of a send is the
// one cut, a goroutine of the connection's own finishes it as soon as the
// peer reads. A Close does not wait for a peer that is not reading: the
// rest of a cut frame still kept then is never written, and the peer
// reads a frame cut short followed by the end of the stream, never by
// anything else (QEMU drops such a frame at the end); that frame was
// counted as sent.

const (
	// StreamMaxLen is the longest frame QEMU's stream reader accepts
	// (NET_BUFSIZE, 4096 + 65536): a longer length is not a stream of
	// frames at all.
	StreamMaxLen = 4096 + 65536
	// StreamMaxFrameBytes is the most a connection keeps of one frame:
	// its length and the longest Ethernet frame.
	StreamMaxFrameBytes = streamHdr + conn.MaxFrame + 1

	streamHdr = 4
	// streamReadSize is the receive buffer: one read takes up to this
	// much, a full batch of frames of ordinary size.
	streamReadSize = 64 << 10
	// streamWriteMax bounds one sendmsg (but it takes one frame at
	// least): one socket buffer's worth (32 KiB of page fragments and a
	// head), well under half the default send buffer, so that the kernel
	// takes it whole or not at all.
	streamWriteMax = 32 << 10
)

// ErrStreamTooLong and ErrStreamCut end a stream connection: a length
// QEMU would not take either, and a stream that ended mid-frame.
var (
	ErrStreamTooLong = errors.New("stream frame length above what QEMU accepts")
	ErrStreamCut     = errors.New("stream ended in the middle of a frame")
)

// StreamParser splits a byte stream into frames; its state is what it is
// passing over of a frame too long to keep. The zero value starts at a
// frame's length.
type StreamParser struct {
	skip int // bytes of an over-long frame still to pass over
}

// Parse takes from data as many frames as there are whole in it, up to
// len(bufs): frame i is copied into bufs[i] and sizes[i] is its length. A
// frame longer than its buffer is not copied but passed over, in data and
// in what follows, and reported with its length (more than len(bufs[i])).
// It returns how many bytes of data it used (the rest, less than a frame,
// is to be given again with what follows) and how many frames it filled;
// ErrStreamTooLong at a length above StreamMaxLen, data from there on
// unused.
func (sp *StreamParser) Parse(data []byte, bufs [][]byte, sizes []int) (used, n int, err error) {
	for {
		if sp.skip > 0 {
			k := min(sp.skip, len(data)-used)
			used += k
			sp.skip -= k
			if sp.skip > 0 {
				return used, n, nil
			}
		}
		if n == len(bufs) || len(data)-used < streamHdr {
			return used, n, nil
		}
		l := binary.BigEndian.Uint32(data[used:])
		if l > StreamMaxLen {
			return used, n, fmt.Errorf("%w: %d bytes", ErrStreamTooLong, l)
		}
		size := int(l)
		if size > len(bufs[n]) {
			sizes[n] = size
			n++
			used += streamHdr
			sp.skip = size
			continue
		}
		if len(data)-used-streamHdr < size {
			return used, n, nil
		}
		copy(bufs[n], data[used+streamHdr:used+streamHdr+size])
		sizes[n] = size
		n++
		used += streamHdr + size
	}
}

// Ready reports whether Parse would make progress on data with room for
// a frame of up to bufLen bytes: it holds a whole frame, the length of
// one to pass over, or bytes to pass over.
func (sp *StreamParser) Ready(data []byte, bufLen int) bool {
	if sp.skip > 0 {
		return len(data) > 0
	}
	if len(data) < streamHdr {
		return false
	}
	l := binary.BigEndian.Uint32(data)
	return l > StreamMaxLen || int(l) > bufLen || len(data)-streamHdr >= int(l)
}

// Mid reports whether the parser is inside a frame it passes over.
func (sp *StreamParser) Mid() bool { return sp.skip > 0 }

// streamBufs are the receive buffers, lent to a connection while bytes
// wait in them.
var streamBufs = sync.Pool{New: func() any { b := make([]byte, streamReadSize); return &b }}

// streamState is a stream connection's framing, both ways.
type streamState struct {
	// Receive side: the receiver's goroutine (or the hot loop) only.
	parser   StreamParser
	buf      *[]byte // lent by streamBufs while bytes wait in it
	off, end int     // the bytes waiting: (*buf)[off:end]
	carry    []byte  // the start of a frame kept while idle, buf handed back; nil once used
	rxErr    error   // the end, seen after frames still to be delivered
	more     bool    // whole frames wait in buf, or rxErr: attempt again before waiting

	// Send side: mu orders the writes of the sender and of the flusher.
	mu       sync.Mutex
	rem      []byte // the rest of a frame the kernel took part of; nil once written
	remOff   int
	flushing bool          // a flusher goroutine runs
	flushed  chan struct{} // closed when it ends
	hdrs     [conn.BatchSize][streamHdr]byte
	iovs     [2 * conn.BatchSize]unix.Iovec
	msg      unix.Msghdr
}

// NewStream takes over fd, a connected SOCK_STREAM socket that carries
// frames as QEMU's stream netdev does, with the policy o; name is for
// errors. fd is made non-blocking. On error fd is closed.
func (e *Engine) NewStream(fd int, name string, o Options) (*FD, error) {
	p, err := e.newFD(fd, name, o, opStreamRead, opStreamWrite)
	if err != nil {
		return nil, err
	}
	p.st = &streamState{}
	return p, nil
}

// rxMore reports whether a stream receive should be attempted again
// before waiting: frames already read, or an end, wait to be delivered.
func (p *FD) rxMore() bool { return p.st != nil && p.st.more }

// streamReadOnce delivers what waits in the buffer and reads more, until
// the batch is full, the socket is empty, or the stream ends. It reports
// false if it found no frame (having kept any part of one).
func (p *FD) streamReadOnce() bool {
	rx, st := &p.rx, p.st
	rx.err, rx.n = nil, 0
	if st.rxErr != nil {
		rx.err, st.rxErr, st.more = st.rxErr, nil, false
		return true
	}
	shut := p.readShut.Load()
	rx.b = rx.r.Get()
	bufs, sizes := rx.b.Bufs, rx.b.Sizes
	n := 0
	short := false // the last read found the socket empty
	var end error
	for {
		if st.buf != nil {
			used, k, err := st.parser.Parse((*st.buf)[st.off:st.end], bufs[n:], sizes[n:])
			st.off += used
			n += k
			if err != nil {
				end = err
				break
			}
		}
		if n == len(bufs) || (short && n > 0) {
			break
		}
		st.lend()
		m, err := unix.Read(p.fd, (*st.buf)[st.end:])
		if err == unix.EAGAIN {
			short = true
			break
		}
		if err == unix.ECONNRESET || (err == nil && m == 0) {
			// ECONNRESET: the peer left with frames of ours unread;
			// what it sent has been read, as at an ordinary end.
			end = errEOF
			if !shut && (st.off < st.end || st.parser.Mid()) {
				end = fmt.Errorf("%w (%d bytes of it read)", ErrStreamCut, st.end-st.off)
			}
			break
		}
		if err != nil {
			end = err
			break
		}
		short = m < len(*st.buf)-st.end
		st.end += m
	}
	// Whole frames left in the buffer (the batch filled up) keep it: the
	// socket, maybe empty now, would not report them.
	ready := n == len(bufs) && st.buf != nil && st.parser.Ready((*st.buf)[st.off:st.end], len(bufs[0]))
	st.settle((short || end != nil) && !ready)
	if end != nil {
		if n == 0 {
			rx.r.Put(rx.b)
			rx.b = nil
			rx.err = end
			rx.drained = true
			return true
		}
		st.rxErr = end
	}
	if n == 0 {
		rx.r.Put(rx.b)
		rx.b = nil
		rx.drained = true
		return false
	}
	rx.n = n
	st.more = st.rxErr != nil || ready
	rx.drained = short && !st.more
	return true
}

// lend makes sure a buffer with room to read into is held: the carried
// start of a frame moves into a pooled buffer, waiting bytes to its front.
func (st *streamState) lend() {
	if st.buf == nil {
		st.buf = streamBufs.Get().(*[]byte)
		st.off, st.end = 0, copy(*st.buf, st.carry)
		// Its room goes too: a connection that goes idle again with no
		// frame begun keeps nothing.
		st.carry = nil
		return
	}
	if st.off > 0 {
		st.end = copy(*st.buf, (*st.buf)[st.off:st.end])
		st.off = 0
	}
}

// settle hands the buffer back when nothing waits in it, or, when the
// connection goes idle (idle), keeps only the start of a frame that
// waits: an idle connection holds no receive buffer.
func (st *streamState) settle(idle bool) {
	if st.buf == nil {
		return
	}
	if st.off == st.end {
		st.off, st.end = 0, 0
	} else if idle {
		st.carry = append(st.carry[:0], (*st.buf)[st.off:st.end]...)
	} else {
		return
	}
	streamBufs.Put(st.buf)
	st.buf = nil
	st.off, st.end = 0, 0
}

// streamWriteOnce writes the rest of a cut frame, then what is left of
// tx.frames, many per sendmsg, until all went (and no frame is cut) or
// the socket is full. The flusher may write the rest of a cut frame at
// the same time: st.mu orders them.
func (p *FD) streamWriteOnce() bool {
	tx, st := &p.tx, p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		if done, err := st.flushRem(p.fd); err != nil {
			tx.err = err
			return true
		} else if !done {
			return false
		}
		if tx.sent == len(tx.frames) {
			return true
		}
		n, bytes := st.fill(tx.frames[tx.sent:])
		st.msg.Iov = &st.iovs[0]
		st.msg.SetIovlen(2 * n)
		w, errno := sendmsg(p.fd, &st.msg)
		if errno == unix.EAGAIN {
			return false
		}
		if errno != 0 {
			tx.err = errno
			return true
		}
		sent := st.account(tx.frames[tx.sent:tx.sent+n], w)
		tx.sent += sent
		if w < bytes && sent < n {
			return false // the socket is full
		}
	}
}

// fill points the iovecs at up to a batch of frames, each after its
// length, up to streamWriteMax bytes (one frame at least); it returns how
// many frames and bytes.
func (st *streamState) fill(frames [][]byte) (n, bytes int) {
	for n < len(frames) && n < len(st.hdrs) {
		f := frames[n]
		if n > 0 && bytes+streamHdr+len(f) > streamWriteMax {
			break
		}
		h := &st.hdrs[n]
		binary.BigEndian.PutUint32(h[:], uint32(len(f)))
		st.iovs[2*n].Base = &h[0]
		st.iovs[2*n].SetLen(streamHdr)
		if len(f) > 0 {
			st.iovs[2*n+1].Base = &f[0]
		} else {
			st.iovs[2*n+1].Base = nil
		}
		st.iovs[2*n+1].SetLen(len(f))
		bytes += streamHdr + len(f)
		n++
	}
	return n, bytes
}

// account counts the frames of a sendmsg that took w bytes: the whole
// ones, and one cut, whose rest it keeps to be written next.
func (st *streamState) account(frames [][]byte, w int) int {
	for i, f := range frames {
		need := streamHdr + len(f)
		if w >= need {
			w -= need
			continue
		}
		if w == 0 {
			return i
		}
		st.remOff = 0
		st.rem = st.rem[:0]
		if w < streamHdr {
			st.rem = append(st.rem, st.hdrs[i][w:]...)
			w = 0
		} else {
			w -= streamHdr
		}
		st.rem = append(st.rem, f[w:]...)
		return i + 1
	}
	return len(frames)
}

// flushRem writes what is left of a cut frame; done once none is.
func (st *streamState) flushRem(fd int) (done bool, err error) {
	for st.remOff < len(st.rem) {
		rest := st.rem[st.remOff:]
		st.iovs[0].Base = &rest[0]
		st.iovs[0].SetLen(len(rest))
		st.msg.Iov = &st.iovs[0]
		st.msg.SetIovlen(1)
		w, errno := sendmsg(fd, &st.msg)
		if errno == unix.EAGAIN {
			return false, nil
		}
		if errno != 0 {
			// The peer is gone or broken: its reader ends it.
			st.rem, st.remOff = nil, 0
			return true, errno
		}
		st.remOff += w
	}
	// The room goes too (a cut is rare: the socket was full), so that an
	// idle connection keeps nothing.
	st.rem, st.remOff = nil, 0
	return true, nil
}

func sendmsg(fd int, m *unix.Msghdr) (int, unix.Errno) {
	r, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(m)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	return int(r), e
}

// awaitFlusher waits, up to timeout (< 0: not at all), for the flusher to
// have finished a cut frame, so that only one goroutine waits for room on
// the socket at a time. It returns the time left, or false if none.
func (p *FD) awaitFlusher(timeout time.Duration) (time.Duration, bool) {
	st := p.st
	st.mu.Lock()
	flushing, flushed := st.flushing, st.flushed
	st.mu.Unlock()
	if !flushing || timeout < 0 {
		return timeout, true
	}
	var expired <-chan time.Time
	start := time.Now()
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-flushed:
	case <-p.gone:
	case <-expired:
		return 0, false
	}
	if timeout == 0 {
		return 0, true
	}
	left := timeout - time.Since(start)
	if left <= 0 {
		left = -1 // one attempt
	}
	return left, true
}

// startFlusher makes sure the rest of a cut frame is written once the
// peer reads, even if nothing more is sent: a goroutine waits for room
// and writes it. The sender's next send writes it too, if it comes first.
func (p *FD) startFlusher() {
	st := p.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.remOff == len(st.rem) || st.flushing || p.closing.Load() {
		return
	}
	st.flushing = true
	st.flushed = make(chan struct{})
	go p.flush(st.flushed)
}

func (p *FD) flush(done chan struct{}) {
	st := p.st
	for {
		err := p.park(unix.EPOLLOUT, time.Time{})
		st.mu.Lock()
		if err == nil && p.enter() {
			if ok, ferr := st.flushRem(p.fd); !ok && ferr == nil {
				p.leave()
				st.mu.Unlock()
				continue
			}
			p.leave()
		}
		// Done, failed or closed: ending is decided under the lock that
		// a sender's startFlusher takes, so no cut frame is left behind
		// with nobody to finish it.
		st.flushing = false
		close(done)
		st.mu.Unlock()
		return
	}
}

// finishStreamRecv is finishRecv for a stream.
func (p *FD) finishStreamRecv(err error) (*conn.Batch, int, error) {
	rx := &p.rx
	n, b := rx.n, rx.b
	rx.b = nil
	if err != nil {
		return p.giveBack(b, err)
	}
	if n == 0 {
		return p.giveBack(b, rx.err)
	}
	return b, n, nil
}
