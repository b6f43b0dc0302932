package multilink

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// leavingConn is a fakeConn whose peer can leave: gone is what PeerGone
// says; CloseRead makes the receive side end with EOF once what was sent
// has been taken, as a shut-down socket does.
type leavingConn struct {
	*fakeConn
	gone     atomic.Bool
	readShut chan struct{}
	once     sync.Once
}

func newLeavingConn() *leavingConn {
	return &leavingConn{fakeConn: newFakeConn(), readShut: make(chan struct{})}
}

func (c *leavingConn) PeerGone() bool { return c.gone.Load() }

func (c *leavingConn) CloseRead() { c.once.Do(func() { close(c.readShut) }) }

func (c *leavingConn) RecvBatch(get func() ([][]byte, []int), put func()) (int, error) {
	var first []byte
	select {
	case first = <-c.in:
	case <-c.closed:
		return 0, io.EOF
	case <-c.readShut:
		select {
		case first = <-c.in: // taken before the EOF
		default:
			return 0, io.EOF
		}
	}
	bufs, sizes := get()
	sizes[0] = copy(bufs[0], first)
	return 1, nil
}

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
	old := newLeavingConn()
	if _, err := m.Admit(true, PeerInfo{}, old, nil, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := m.Admit(true, PeerInfo{}, newLeavingConn(), nil, nil); !errors.Is(err, ErrHostAttached) {
		t.Fatalf("a second host while the first is there: %v, want ErrHostAttached", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("refusing a second host took %v: it must not wait for a host that is there", d)
	}
	old.in <- frameOf(60, 1) // sent just before it left
	old.gone.Store(true)
	if _, err := m.Admit(true, PeerInfo{}, newLeavingConn(), nil, nil); err != nil {
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
