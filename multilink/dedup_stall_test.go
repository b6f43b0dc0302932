package multilink

import (
	"bytes"
	"fmt"
	"testing"
)

// Duplicate suppression towards a host that does not take every frame:
// only a copy the host accepted counts as delivered. A copy dropped
// towards the host (its socket full, tx_dropped) leaves the next copy of
// the frame, from whichever link, free to go through: the rule is PRP's
// (IEC 62439-3), never reject a legitimate frame; a duplicate now and then
// is tolerated.

// stallSetup is a multilink with dedup on, a host and, if both, two links
// (a, b) open from the start; else b joins only when join is called.
type stallSetup struct {
	m      *Multilink
	hc     *fakeConn
	h      *Port
	ac, bc *fakeConn
	a, b   *Port
}

func newStallSetup(t *testing.T, both bool) *stallSetup {
	t.Helper()
	s := &stallSetup{m: New(testLog()), hc: newFakeConn(), ac: newFakeConn(), bc: newFakeConn()}
	t.Cleanup(s.m.Close)
	s.h, _ = s.m.AttachHost(PeerInfo{}, s.hc, nil)
	s.a, _ = addLink(s.m, PeerInfo{}, s.ac, nil)
	if both {
		s.join()
	}
	return s
}

func (s *stallSetup) join() { s.b, _ = addLink(s.m, PeerInfo{}, s.bc, nil) }

// deliver pushes frames 0..n-1 (numbered, 100 bytes) from base into the
// link's peer, each times copies in a row, and waits until the link has
// read them and the host's port has taken (sent or dropped) or suppressed
// every one.
func (s *stallSetup) deliver(t *testing.T, c *fakeConn, p *Port, base, n, times int) {
	t.Helper()
	rx0, h0 := p.Counters().RxPackets, s.handled()
	for i := 0; i < n; i++ {
		for range times {
			c.in <- numbered(base+i, 100)
		}
	}
	want := uint64(n * times)
	eventually(t, "the link's frames read", func() bool { return p.Counters().RxPackets == rx0+want })
	eventually(t, "the link's frames handled", func() bool { return s.handled() == h0+want })
}

// handled is what the host's port has done with the links' frames so far.
func (s *stallSetup) handled() uint64 {
	c := s.h.Counters()
	return c.TxPackets + c.TxDropped + s.m.Totals().DupDropped
}

// hostGot checks that the host has frames base..base+n-1, each exactly
// once, and nothing else.
func (s *stallSetup) hostGot(t *testing.T, base, n int) {
	t.Helper()
	got := s.hc.sentFrames()
	seen := map[string]int{}
	for _, f := range got {
		seen[string(f)]++
	}
	lost, twice := 0, 0
	for i := 0; i < n; i++ {
		switch seen[string(numbered(base+i, 100))] {
		case 0:
			lost++
		case 1:
		default:
			twice++
		}
	}
	if lost != 0 || twice != 0 || len(got) != n {
		t.Fatalf("host got %d frames for %d: %d lost, %d more than once (dup_dropped %d, host tx_dropped %d)",
			len(got), n, lost, twice, s.m.Totals().DupDropped, s.h.Counters().TxDropped)
	}
}

// A hand-off while the host is stalled: its socket is full while link A
// delivers N frames (all dropped towards it), then it takes frames again
// and link B delivers the same N. The host gets every one, B's copy.
// With A the sole link at the time (its frames are only recorded, for the
// moment B opens) and with both open (the table is looked up).
func TestDedupStalledHostHandOff(t *testing.T) {
	for _, both := range []bool{true, false} {
		t.Run(fmt.Sprintf("both-open=%v", both), func(t *testing.T) {
			const n = 200
			s := newStallSetup(t, both)
			s.hc.SetFull(true)
			s.deliver(t, s.ac, s.a, 0, n, 1)
			if d := s.h.Counters().TxDropped; d != n {
				t.Fatalf("the stalled host: tx_dropped %d, want %d", d, n)
			}
			s.hc.SetFull(false)
			if !both {
				s.join()
			}
			s.deliver(t, s.bc, s.b, 0, n, 1)
			s.hostGot(t, 0, n)
			if d := s.b.Counters().RxDupDropped; d != 0 {
				t.Fatalf("link B: %d of its frames taken for duplicates of copies the host never got", d)
			}
		})
	}
}

// An attacker's link sends copies of frames a legitimate link is about to
// send, each three times over, while the host is stalled (a stall anyone
// sees in the world-readable host/stats, as tx_dropped rising). None of its
// copies reached the host, so none counts: every legitimate frame reaches
// the host, once.
func TestDedupStalledHostAttacker(t *testing.T) {
	const n = 300
	s := newStallSetup(t, true)
	attacker, legit := s.a, s.b
	// Some traffic first, so the host is known to take frames.
	s.deliver(t, s.bc, legit, 1000, 10, 1)
	s.hc.SetFull(true)
	s.deliver(t, s.ac, attacker, 0, n, 3)
	s.hc.SetFull(false)
	s.deliver(t, s.bc, legit, 0, n, 1)
	got := s.hc.sentFrames()
	if len(got) < 10 {
		t.Fatalf("host got %d frames", len(got))
	}
	// The first 10 are the warm-up frames; then the legitimate ones.
	lost := 0
	seen := map[string]bool{}
	for _, f := range got[10:] {
		seen[string(f)] = true
	}
	for i := 0; i < n; i++ {
		if !seen[string(numbered(i, 100))] {
			lost++
		}
	}
	if lost != 0 || len(got) != 10+n {
		t.Fatalf("%d of %d legitimate frames never reached the host (it got %d frames, dup_dropped %d)",
			lost, n, len(got), s.m.Totals().DupDropped)
	}
}

// The host accepts k of a batch of n: the n-k it dropped pass from the
// other link, and the k it took are that link's duplicates. A's batch is
// pushed before A joins, so that it is read in one receive.
func TestDedupHostTakesPartOfABatch(t *testing.T) {
	const n, k = 12, 5
	for _, both := range []bool{true, false} {
		t.Run(fmt.Sprintf("both-open=%v", both), func(t *testing.T) {
			m := New(testLog())
			defer m.Close()
			hc := newFakeConn()
			h, _ := m.AttachHost(PeerInfo{}, hc, nil)
			hc.SetRoom(k)
			ac, bc := newFakeConn(), newFakeConn()
			var b *Port
			if both {
				b, _ = addLink(m, PeerInfo{}, bc, nil)
			}
			for i := 0; i < n; i++ {
				ac.in <- numbered(i, 100)
			}
			a, _ := addLink(m, PeerInfo{}, ac, nil)
			eventually(t, "A's batch handled", func() bool {
				c := h.Counters()
				return a.Counters().RxPackets == n && c.TxPackets+c.TxDropped == n
			})
			if c := h.Counters(); c.TxPackets != k || a.Counters().RxPackets != n {
				t.Fatalf("the host took %d of A's %d frames, want %d in one batch", c.TxPackets, n, k)
			}
			hc.SetRoom(-1)
			if !both {
				b, _ = addLink(m, PeerInfo{}, bc, nil)
			}
			for i := 0; i < n; i++ {
				bc.in <- numbered(i, 100)
			}
			eventually(t, "B's frames handled", func() bool {
				return b.Counters().RxPackets == n && h.Counters().TxPackets+b.Counters().RxDupDropped == k+n
			})
			got := hc.sentFrames()
			for i := 0; i < n && i < len(got); i++ {
				if !bytes.Equal(got[i], numbered(i, 100)) {
					t.Fatalf("host frame %d is not frame %d", i, i)
				}
			}
			if len(got) != n || b.Counters().RxDupDropped != k {
				t.Fatalf("host got %d frames, want %d (A's %d, then B's %d); B's duplicates %d, want %d",
					len(got), n, k, n-k, b.Counters().RxDupDropped, k)
			}
		})
	}
}
