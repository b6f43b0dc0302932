package multilink

import (
	"errors"
	"testing"
	"time"
)

// TestHostReattachesOverAGoneHost: a host whose peer has gone, before
// anything has marked it (its control stream's end not yet read), does not
// make the next host refused: Admit lets the old one leave first, and the
// frames the old one sent before leaving still reach the links. A host
// that is still there is refused at once.
func TestHostReattachesOverAGoneHost(t *testing.T) {
	m := New(testLog())
	defer m.Close()
	link := newFakeConn()
	if _, err := m.Admit(false, PeerInfo{}, link, nil, nil); err != nil {
		t.Fatal(err)
	}
	old := newFakeConn()
	if _, err := m.Admit(true, PeerInfo{}, old, nil, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := m.Admit(true, PeerInfo{}, newFakeConn(), nil, nil); !errors.Is(err, ErrHostAttached) {
		t.Fatalf("a second host while the first is there: %v, want ErrHostAttached", err)
	}
	// Waiting would take LeaveWait; half of it leaves a loaded machine room.
	if d := time.Since(start); d > LeaveWait/2 {
		t.Errorf("refusing a second host took %v: it must not wait for a host that is there", d)
	}
	old.in <- frameOf(60, 1) // sent just before it left
	old.SetGone(true)
	if _, err := m.Admit(true, PeerInfo{}, newFakeConn(), nil, nil); err != nil {
		t.Fatalf("a host over one that has gone: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(link.sentFrames()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := len(link.sentFrames()); n != 1 {
		t.Errorf("the gone host's last frame: %d frames at the link, want 1", n)
	}
}
