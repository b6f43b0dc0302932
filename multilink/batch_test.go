package multilink

import (
	"bytes"
	"testing"
)

// TestBatchBudget: at most fullBatches full batches are out at once; past
// that a reader gets a one-frame batch, and full ones again once some are
// back.
func TestBatchBudget(t *testing.T) {
	bs := newBatches()
	getBatch, putBatch, fullOut := bs.get, bs.put, &bs.fullOut
	var held []*batch
	defer func() {
		for _, b := range held {
			putBatch(b)
		}
		if n := fullOut.Load(); n != 0 {
			t.Errorf("%d full batches out after all were given back", n)
		}
	}()
	for i := 0; i < fullBatches; i++ {
		b := getBatch(false)
		held = append(held, b)
		if len(b.Bufs) != BatchSize || cap(b.Frames) != BatchSize {
			t.Fatalf("batch %d of the budget has %d buffers, want %d", i, len(b.Bufs), BatchSize)
		}
	}
	small := getBatch(false)
	if len(small.Bufs) != 1 || len(small.Sizes) != 1 || cap(small.Frames) != 1 {
		t.Fatalf("past the budget: %d buffers, want 1", len(small.Bufs))
	}
	if len(small.Bufs[0]) != MaxFrame+1 {
		t.Fatalf("a one-frame batch's buffer holds %d bytes, want %d", len(small.Bufs[0]), MaxFrame+1)
	}
	putBatch(small)
	if n := fullOut.Load(); n != fullBatches {
		t.Fatalf("a one-frame batch changed the count of full ones: %d", n)
	}
	// The host's reader is never cut short.
	hb := getBatch(true)
	if len(hb.Bufs) != BatchSize {
		t.Fatalf("past the budget, the host got %d buffers, want %d", len(hb.Bufs), BatchSize)
	}
	putBatch(hb)
	if n := fullOut.Load(); n != fullBatches {
		t.Fatalf("the host's batch left the count at %d, want %d", n, fullBatches)
	}
	putBatch(held[0])
	held = held[1:]
	if b := getBatch(false); len(b.Bufs) != BatchSize {
		t.Fatalf("with one full batch back, got %d buffers", len(b.Bufs))
	} else {
		held = append(held, b)
	}
}

// TestForwardingPastTheBudget: with every full batch out, frames still go
// from a link to the host whole and in order, a frame per receive, and
// the host's reader still receives whole batches.
func TestForwardingPastTheBudget(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	var held []*batch
	for i := 0; i < fullBatches; i++ {
		held = append(held, m.batches.get(false))
	}
	defer func() {
		for _, b := range held {
			m.batches.put(b)
		}
	}()
	hc, lc := newFakeConn(), newFakeConn()
	if _, err := m.AttachHost(PeerInfo{}, hc, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := addLink(m, PeerInfo{}, lc, nil); err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := 0; i < n; i++ {
		lc.in <- frameOf(MinFrame+i, byte(i))
	}
	eventually(t, "all frames at the host", func() bool { return len(hc.sentFrames()) == n })
	for i, f := range hc.sentFrames() {
		if !bytes.Equal(f, frameOf(MinFrame+i, byte(i))) {
			t.Fatalf("frame %d: %d bytes of %d, want %d of %d", i, len(f), f[0], MinFrame+i, i)
		}
	}
	maxBufs := lc.MaxBufs()
	if maxBufs != 1 {
		t.Fatalf("the link's receives were given up to %d buffers, want 1", maxBufs)
	}
	hc.in <- frameOf(MinFrame, 0xff)
	eventually(t, "the host's frame at the link", func() bool { return len(lc.sentFrames()) == 1 })
	maxBufs = hc.MaxBufs()
	if maxBufs != BatchSize {
		t.Fatalf("the host's receive was given %d buffers, want %d", maxBufs, BatchSize)
	}
}
