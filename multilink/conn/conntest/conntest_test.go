package conntest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"multifs/multilink/conn"
)

// receiver records what it is delivered, and checks that a batch is out
// once at a time.
type receiver struct {
	t      *testing.T
	b      conn.Batch
	out    bool
	frames chan []byte
}

func newReceiver(t *testing.T, n int) *receiver {
	r := &receiver{t: t, frames: make(chan []byte, 64)}
	for i := 0; i < n; i++ {
		r.b.Bufs = append(r.b.Bufs, make([]byte, 100))
		r.b.Sizes = append(r.b.Sizes, 0)
	}
	return r
}

func (r *receiver) Get() *conn.Batch {
	if r.out {
		r.t.Error("Get while the batch is out")
	}
	r.out = true
	return &r.b
}

func (r *receiver) Put(*conn.Batch) { r.out = false }

func (r *receiver) Deliver(b *conn.Batch, n int) {
	for i := 0; i < n; i++ {
		r.frames <- append([]byte(nil), b.Bufs[i][:min(b.Sizes[i], len(b.Bufs[i]))]...)
	}
	r.out = false
}

// The fake keeps the conn.Conn contract the multilink relies on: frames
// pushed are delivered in order, CloseRead ends Receive with io.EOF once
// they are taken, Close ends it with os.ErrClosed and fails sends, a full
// peer makes sends fail with ErrWouldBlock and SendBatchWait wait.
func TestPeerKeepsTheContract(t *testing.T) {
	p := New()
	r := newReceiver(t, 4)
	ended := make(chan error, 1)
	for i := 0; i < 6; i++ {
		p.In <- bytes.Repeat([]byte{byte(i)}, 20+i)
	}
	p.CloseRead()
	go func() { ended <- p.Receive(r) }()
	for i := 0; i < 6; i++ {
		select {
		case f := <-r.frames:
			if !bytes.Equal(f, bytes.Repeat([]byte{byte(i)}, 20+i)) {
				t.Fatalf("frame %d: %d bytes of %d, not what was pushed", i, len(f), f[0])
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("frame %d not delivered after 2 s", i)
		}
	}
	select {
	case err := <-ended:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseRead and the frames: %v, want io.EOF", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Receive still running 2 s after CloseRead")
	}

	p = New()
	go func() { ended <- p.Receive(newReceiver(t, 1)) }()
	p.SetFull(true)
	if n, err := p.TrySendBatch([][]byte{{1}}); n != 0 || !errors.Is(err, conn.ErrWouldBlock) {
		t.Fatalf("full: sent %d, %v; want 0, ErrWouldBlock", n, err)
	}
	start := time.Now()
	if _, err := p.SendBatchWait([][]byte{{1}}, 20*time.Millisecond); !errors.Is(err, conn.ErrWouldBlock) || time.Since(start) < 20*time.Millisecond {
		t.Fatalf("full: SendBatchWait gave %v after %v; want ErrWouldBlock after 20 ms", err, time.Since(start))
	}
	p.SetFull(false)
	if n, err := p.SendBatchWait([][]byte{{1}, {2, 2}}, time.Second); n != 2 || err != nil {
		t.Fatalf("room again: sent %d, %v", n, err)
	}
	if s := p.Sent(); len(s) != 2 || !bytes.Equal(s[1], []byte{2, 2}) {
		t.Fatalf("recorded %v", s)
	}
	p.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Receive still running 2 s after Close")
	}
	if _, err := p.TrySendBatch([][]byte{{1}}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("send after Close: %v, want os.ErrClosed", err)
	}
}

// A peer with room for k frames takes the first k of a batch and refuses
// the rest as a full socket does, and takes everything again once the
// limit is lifted.
func TestPeerRoom(t *testing.T) {
	p := New()
	frames := [][]byte{{1}, {2}, {3}, {4}, {5}}
	p.SetRoom(2)
	if k, err := p.TrySendBatch(frames); k != 2 || !errors.Is(err, conn.ErrWouldBlock) {
		t.Fatalf("room 2: sent %d (%v), want 2 and ErrWouldBlock", k, err)
	}
	if k, err := p.SendBatchWait(frames, time.Millisecond); k != 0 || !errors.Is(err, conn.ErrWouldBlock) {
		t.Fatalf("room used up: sent %d (%v), want 0 and ErrWouldBlock", k, err)
	}
	p.SetRoom(-1)
	if k, err := p.TrySendBatch(frames[2:]); k != 3 || err != nil {
		t.Fatalf("no limit: sent %d (%v), want 3", k, err)
	}
	got := p.Sent()
	if len(got) != 5 {
		t.Fatalf("peer got %d frames, want 5", len(got))
	}
	for i, f := range got {
		if !bytes.Equal(f, frames[i]) {
			t.Fatalf("frame %d is %v, want %v", i, f, frames[i])
		}
	}
}
