package multilink

import (
	"errors"
	"io/fs"
	"testing"
)

func TestCloseLinkForGood(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	a := &finalConn{fakeConn: newFakeConn()}
	b := &finalConn{fakeConn: newFakeConn()}
	pa, err := addLink(m, PeerInfo{Transport: "seqpacket"}, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := addLink(m, PeerInfo{Transport: "seqpacket"}, b, nil)

	// A plain close is not final.
	m.CloseLink(pb.ID)
	if f, _ := b.calls(); len(f) != 0 {
		t.Fatalf("CloseLink called Final %v", f)
	}
	if err := m.CloseLinkForGood(pb.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a closed link: %v", err)
	}

	if err := m.CloseLinkForGood(pa.ID); err != nil {
		t.Fatal(err)
	}
	f, open := a.calls()
	if len(f) != 1 || f[0] != pa.ID || !open[0] {
		t.Fatalf("Final calls %v, conn open at them %v: want one, for link %d, before the close", f, open, pa.ID)
	}
	if !pa.Closed() || m.Link(pa.ID) != nil {
		t.Fatal("the link is still open")
	}
	// Already closed: no second Final.
	pa.CloseForGood()
	if f, _ := a.calls(); len(f) != 1 {
		t.Fatalf("Final again on a closed port: %v", f)
	}
}

func TestHostCloseForGood(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	h := &finalConn{fakeConn: newFakeConn()}
	p, err := m.AttachHost(PeerInfo{Transport: "seqpacket"}, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.CloseForGood()
	if f, open := h.calls(); len(f) != 1 || f[0] != 0 || !open[0] {
		t.Fatalf("Final calls %v %v", f, open)
	}
	if m.HostAttached() {
		t.Fatal("host still attached")
	}
}

// A Conn that is not a Finaler (a vde-2 peer's) is just closed.
func TestCloseForGoodPlainConn(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	c := newFakeConn()
	p, _ := addLink(m, PeerInfo{Transport: "vde"}, c, nil)
	if err := m.CloseLinkForGood(p.ID); err != nil {
		t.Fatal(err)
	}
	if !p.Closed() {
		t.Fatal("not closed")
	}
}
