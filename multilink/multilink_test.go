package multilink

import (
	"bytes"
	"errors"
	"io/fs"
	"testing"
	"time"
)

func TestForwardingRule(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	hc := newFakeConn()
	if _, err := m.AttachHost(PeerInfo{Transport: "vde"}, hc, nil); err != nil {
		t.Fatal(err)
	}
	l1c, l2c := newFakeConn(), newFakeConn()
	l1, _ := addLink(m, PeerInfo{}, l1c, nil)
	l2, _ := addLink(m, PeerInfo{}, l2c, nil)

	// host -> every link
	hc.in <- frameOf(60, 1)
	eventually(t, "fan-out", func() bool { return len(l1c.sentFrames()) == 1 && len(l2c.sentFrames()) == 1 })

	// link -> host only, never to the other link
	l1c.in <- frameOf(60, 2)
	eventually(t, "link to host", func() bool { return len(hc.sentFrames()) == 1 })
	time.Sleep(10 * time.Millisecond)
	if n := len(l2c.sentFrames()); n != 1 {
		t.Fatalf("link 2 got %d frames; a frame from link 1 must not reach it", n)
	}
	if got := hc.sentFrames()[0]; !bytes.Equal(got, frameOf(60, 2)) {
		t.Fatalf("host got a different frame")
	}
	if c := l1.Counters(); c.RxPackets != 1 || c.RxBytes != 60 || c.TxPackets != 1 {
		t.Fatalf("link 1 counters %+v", c)
	}
	if c := l2.Counters(); c.RxPackets != 0 || c.TxPackets != 1 || c.TxBytes != 60 {
		t.Fatalf("link 2 counters %+v", c)
	}
}

func TestFrameSizes(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		delivered bool
	}{
		{"empty", 0, false},
		{"runt", MinFrame - 1, false},
		{"header only", MinFrame, true},
		{"jumbo max", MaxFrame, true},
		{"too long", MaxFrame + 1, false},
		{"far too long", 3 * MaxFrame, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(testLog())
			defer m.Close()
			hc, lc := newFakeConn(), newFakeConn()
			m.AttachHost(PeerInfo{}, hc, nil)
			l, _ := addLink(m, PeerInfo{}, lc, nil)
			lc.in <- frameOf(tc.size, 7)
			lc.in <- frameOf(100, 8) // a marker: once it is through, the first was handled
			// A frame is counted when it is read, before it is forwarded:
			// wait for the marker at the host, not for the counters.
			marker := frameOf(100, 8)
			eventually(t, "marker at the host", func() bool {
				got := hc.sentFrames()
				return len(got) > 0 && bytes.Equal(got[len(got)-1], marker)
			})
			got := hc.sentFrames()
			if tc.delivered {
				if len(got) != 2 || !bytes.Equal(got[0], frameOf(tc.size, 7)) {
					t.Fatalf("frame of %d bytes not delivered intact (%d frames)", tc.size, len(got))
				}
			} else {
				if len(got) != 1 || l.Counters().RxDropped != 1 {
					t.Fatalf("frame of %d bytes: delivered %d, dropped %d", tc.size, len(got), l.Counters().RxDropped)
				}
			}
		})
	}
}

func TestStuckPeerLosesFramesButStallsNobody(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	hc := newFakeConn()
	h, _ := m.AttachHost(PeerInfo{}, hc, nil)
	stuck, ok := newFakeConn(), newFakeConn()
	stuck.SetFull(true)
	sl, _ := addLink(m, PeerInfo{}, stuck, nil)
	ol, _ := addLink(m, PeerInfo{}, ok, nil)
	queued := queueFrames(64)
	total := queued + 10
	for i := 0; i < total; i++ {
		hc.in <- frameOf(64, byte(i))
	}
	eventually(t, "frames through", func() bool { return h.Counters().RxPackets == uint64(total) })
	eventually(t, "frames to the healthy link", func() bool { return ol.Counters().TxPackets == uint64(total) })
	if c := sl.Counters(); c.TxDropped != 10 || c.TxPackets != 0 {
		t.Fatalf("stuck link counters %+v, want %d queued and 10 dropped", c, queued)
	}
}

func TestBurstIsQueuedInOrder(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	hc := newFakeConn()
	h, _ := m.AttachHost(PeerInfo{}, hc, nil)
	lc := newFakeConn()
	lc.SetFull(true) // a burst: the socket is full
	l, _ := addLink(m, PeerInfo{}, lc, nil)
	for i := 0; i < 100; i++ {
		hc.in <- frameOf(64+i, byte(i))
	}
	eventually(t, "frames read", func() bool { return h.Counters().RxPackets == 100 })
	lc.SetFull(false) // the peer catches up
	eventually(t, "queue drained", func() bool { return l.Counters().TxPackets == 100 })
	for i, f := range lc.sentFrames() {
		if !bytes.Equal(f, frameOf(64+i, byte(i))) {
			t.Fatalf("frame %d out of order or damaged (len %d)", i, len(f))
		}
	}
	if d := l.Counters().TxDropped; d != 0 {
		t.Fatalf("%d frames dropped from a burst that fits the queue", d)
	}
}

func TestNoHostNoLink(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	lc := newFakeConn()
	l, _ := addLink(m, PeerInfo{}, lc, nil)
	lc.in <- frameOf(64, 1)
	eventually(t, "drop without host", func() bool { return m.Totals().DroppedNoHost == 1 })
	if l.Closed() {
		t.Fatal("a link must stay up without a host")
	}
	l.Close()
	hc := newFakeConn()
	m.AttachHost(PeerInfo{}, hc, nil)
	hc.in <- frameOf(64, 1)
	eventually(t, "drop without link", func() bool { return m.Totals().DroppedNoLink == 1 })
}

func TestOneHostAtATime(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	h1, err := m.AttachHost(PeerInfo{}, newFakeConn(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.AttachHost(PeerInfo{}, newFakeConn(), nil); !errors.Is(err, ErrHostAttached) {
		t.Fatalf("second host: err %v, want ErrHostAttached", err)
	}
	h1.Close()
	if m.HostAttached() {
		t.Fatal("host still attached after close")
	}
	if _, err := m.AttachHost(PeerInfo{}, newFakeConn(), nil); err != nil {
		t.Fatalf("a new host after detach: %v", err)
	}
}

func TestCloseLink(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	lc := newFakeConn()
	closed := 0
	l, _ := addLink(m, PeerInfo{}, lc, func() { closed++ })
	if err := m.CloseLink(l.ID); err != nil {
		t.Fatal(err)
	}
	// Synchronous: by the time CloseLink returns, everything is done.
	if closed != 1 || m.Link(l.ID) != nil || len(m.Links()) != 0 {
		t.Fatalf("after CloseLink: onClose ran %d times, still listed %v", closed, m.Link(l.ID) != nil)
	}
	select {
	case <-lc.Closed():
	default:
		t.Fatal("conn not closed")
	}
	l.Close()
	if closed != 1 {
		t.Fatalf("onClose ran %d times, want once", closed)
	}
	if err := m.CloseLink(l.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("closing a closed link: %v", err)
	}
}

func TestIDsNeverReused(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	var last uint64
	for i := 0; i < 5; i++ {
		l, err := addLink(m, PeerInfo{}, newFakeConn(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if l.ID != last+1 {
			t.Fatalf("id %d after %d", l.ID, last)
		}
		last = l.ID
		if i%2 == 0 {
			l.Close()
		}
	}
	ids := []uint64{}
	for _, l := range m.Links() {
		ids = append(ids, l.ID)
	}
	if len(ids) != 2 || ids[0] != 2 || ids[1] != 4 {
		t.Fatalf("open links %v, want [2 4]", ids)
	}
	if tot := m.Totals(); tot.LinksTotal != 5 || tot.Links != 2 {
		t.Fatalf("totals %+v", tot)
	}
}

func TestPeerEOFClosesPort(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	lc := newFakeConn()
	l, _ := addLink(m, PeerInfo{}, lc, nil)
	lc.Close() // Recv now fails, as on a socket error
	eventually(t, "port closed", l.Closed)
	if m.Link(l.ID) != nil {
		t.Fatal("closed link still listed")
	}
}

func TestShutdownClosesEverythingAndRefusesNew(t *testing.T) {
	m := New(testLog())
	hc, lc := newFakeConn(), newFakeConn()
	h, _ := m.AttachHost(PeerInfo{}, hc, nil)
	l, _ := addLink(m, PeerInfo{}, lc, nil)
	m.Close()
	if !h.Closed() || !l.Closed() {
		t.Fatal("peers still open after Close")
	}
	if _, err := addLink(m, PeerInfo{}, newFakeConn(), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("a link joining after Close: %v", err)
	}
	if _, err := m.AttachHost(PeerInfo{}, newFakeConn(), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("AttachHost after Close: %v", err)
	}
}

func TestStuckHostDropsAfterHostWait(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	hc := newFakeConn()
	hc.SetFull(true)
	h, _ := m.AttachHost(PeerInfo{}, hc, nil)
	lc := newFakeConn()
	l, _ := addLink(m, PeerInfo{}, lc, nil)
	start := time.Now()
	for i := 0; i < 5; i++ {
		lc.in <- frameOf(64, byte(i))
	}
	eventually(t, "frames dropped at the stuck host", func() bool { return h.Counters().TxDropped == 5 })
	if d := time.Since(start); d < HostWait {
		t.Fatalf("dropped after %v, before waiting HostWait for room", d)
	}
	if l.Counters().RxPackets != 5 || l.Closed() {
		t.Fatalf("the link must go on reading: %+v", l.Counters())
	}
}

// Close returns with final counters: what was queued for a stuck link is
// counted as dropped by then, and frames for a host that has closed are
// counted by the multilink (dropped_no_host), not by the closed host.
func TestCloseLeavesFinalCounters(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	hc := newFakeConn()
	h, _ := m.AttachHost(PeerInfo{}, hc, nil)
	stuck := newFakeConn()
	stuck.SetFull(true)
	sl, _ := addLink(m, PeerInfo{}, stuck, nil)
	const total = 100
	for i := 0; i < total; i++ {
		hc.in <- frameOf(64, byte(i))
	}
	eventually(t, "frames queued", func() bool { return h.Counters().RxPackets == total })
	sl.Close()
	if c := sl.Counters(); c.TxPackets+c.TxDropped != total {
		t.Fatalf("after Close, stuck link tx_packets %d + tx_dropped %d, want %d", c.TxPackets, c.TxDropped, total)
	}

	h.Close()
	before := h.Counters()
	if h.send([][]byte{frameOf(64, 1)}) {
		t.Fatal("a closed host took a frame")
	}
	if after := h.Counters(); after != before {
		t.Fatalf("a closed host's counters moved: %+v -> %+v", before, after)
	}
	m.fromLink(sl, [][]byte{frameOf(64, 1)}, mono())
	if got := m.Totals().DroppedNoHost; got != 1 {
		t.Fatalf("dropped_no_host %d after a frame with no host, want 1", got)
	}
}
