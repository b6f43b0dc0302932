package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"multifs/control/client"
	"multifs/multilink"
)

func dialStream(t *testing.T, path string) *client.Stream {
	t.Helper()
	c, err := client.DialStream(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// endsSoon asserts that c's stream ends within 2 s, nothing on it.
func endsSoon(t *testing.T, c *client.Stream, what string) {
	t.Helper()
	if _, err := c.Recv(make([]byte, 100), 2*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("%s: %v, want EOF", what, err)
	}
}

func TestStreamJoin(t *testing.T) {
	_, ml, srv := serve(t)
	host := dialStream(t, srv.HostStream())
	link := dialStream(t, srv.LinkStream())
	waitFor(t, "joined", func() bool { return ml.HostAttached() && len(ml.Links()) == 1 })
	for _, p := range []*multilink.Port{ml.Host(), ml.Links()[0]} {
		if i := p.Info; i.Transport != "stream" || i.PID != int32(os.Getpid()) || i.UID != uint32(os.Geteuid()) || i.Description != "" {
			t.Fatalf("peer info %+v", i)
		}
	}
	out := bytes.Repeat([]byte{3}, multilink.MaxFrame)
	if err := host.Send(out); err != nil {
		t.Fatal(err)
	}
	if got := recvFrame(t, link); !bytes.Equal(got, out) {
		t.Fatalf("link got %d bytes", len(got))
	}
	back := bytes.Repeat([]byte{4}, 64)
	if err := link.Send(back); err != nil {
		t.Fatal(err)
	}
	if got := recvFrame(t, host); !bytes.Equal(got, back) {
		t.Fatalf("host got %d bytes", len(got))
	}
	// A second host is closed at once; the first stays.
	endsSoon(t, dialStream(t, srv.HostStream()), "second host")
	if !ml.HostAttached() || ml.Host().Info.Transport != "stream" {
		t.Fatal("the first host went")
	}
	host.Close()
	waitFor(t, "host detached", func() bool { return !ml.HostAttached() })
	dialStream(t, srv.HostStream())
	waitFor(t, "new host", ml.HostAttached)
}

// Lengths 0, 13 and 9235 are passed over and counted; the stream stays in
// step; 2^32-1 ends the link.
func TestStreamBadLengths(t *testing.T) {
	_, ml, srv := serve(t)
	host := dialStream(t, srv.HostStream())
	link := dialStream(t, srv.LinkStream())
	waitFor(t, "joined", func() bool { return ml.HostAttached() && len(ml.Links()) == 1 })
	p := ml.Links()[0]
	var raw []byte
	for _, l := range []int{0, 13, 9235} {
		raw = binary.BigEndian.AppendUint32(raw, uint32(l))
		raw = append(raw, bytes.Repeat([]byte{0xee}, l)...)
	}
	good := bytes.Repeat([]byte{9}, 100)
	raw = binary.BigEndian.AppendUint32(raw, uint32(len(good)))
	raw = append(raw, good...)
	if _, err := link.Conn().Write(raw); err != nil {
		t.Fatal(err)
	}
	if got := recvFrame(t, host); !bytes.Equal(got, good) {
		t.Fatalf("host got %d bytes, want only the good frame", len(got))
	}
	if c := p.Counters(); c.RxDropped != 3 || c.RxPackets != 1 {
		t.Fatalf("counters %+v, want 3 dropped and 1 passed", c)
	}
	if _, err := link.Conn().Write([]byte{0xff, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	endsSoon(t, link, "after length 2^32-1")
	waitFor(t, "link closed", func() bool { return len(ml.Links()) == 0 })
}

// A process closed for good through a stream entry is refused there while
// it runs: its connections are closed at once (QEMU's reconnect=N).
func TestStreamCloseForGood(t *testing.T) {
	_, ml, srv := serve(t)
	c := dialStream(t, srv.LinkStream())
	waitFor(t, "joined", func() bool { return len(ml.Links()) == 1 })
	if err := ml.CloseLinkForGood(ml.Links()[0].ID); err != nil {
		t.Fatal(err)
	}
	endsSoon(t, c, "closed for good")
	// Recorded under the peer's uid: a user's closes can crowd out only
	// its own (refuse.go).
	if n := srv.refused.lenUID(uint32(os.Geteuid())); n != 1 {
		t.Fatalf("%d records under the peer's uid, want 1", n)
	}
	for i := 0; i < 3; i++ {
		endsSoon(t, dialStream(t, srv.LinkStream()), "reconnect")
	}
	if n, tot := len(ml.Links()), ml.Totals().LinksTotal; n != 0 || tot != 1 {
		t.Fatalf("%d links open, %d ever: a reconnect joined", n, tot)
	}
	// The host entry is another entry: the same process may be the host.
	dialStream(t, srv.HostStream())
	waitFor(t, "host", ml.HostAttached)
	ml.Host().CloseForGood()
	endsSoon(t, dialStream(t, srv.HostStream()), "host reconnect")
	if ml.HostAttached() {
		t.Fatal("the refused host attached")
	}
}

// A plain close (Port.Close) refuses nothing.
func TestStreamCloseStillRejoins(t *testing.T) {
	_, ml, srv := serve(t)
	c := dialStream(t, srv.LinkStream())
	waitFor(t, "joined", func() bool { return len(ml.Links()) == 1 })
	ml.Links()[0].Close()
	endsSoon(t, c, "closed")
	dialStream(t, srv.LinkStream())
	waitFor(t, "rejoined", func() bool { return len(ml.Links()) == 1 })
}

// A link that does not read: its queue holds at most QueueBytes, the host
// is not held up, and once it reads, every frame is whole and in order.
func TestStreamStuckLinkStaysInStep(t *testing.T) {
	_, ml, srv := serve(t)
	host := dialStream(t, srv.HostStream())
	link := dialStream(t, srv.LinkStream())
	waitFor(t, "joined", func() bool { return ml.HostAttached() && len(ml.Links()) == 1 })
	p := ml.Links()[0]
	const total = 3000
	frame := make([]byte, 1400)
	start := time.Now()
	for i := 0; i < total; i++ {
		binary.BigEndian.PutUint32(frame, uint32(i))
		if err := host.Send(frame); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the host's frames read", func() bool { return ml.Host().Counters().RxPackets == total })
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the host took %v to send to a stuck link", d)
	}
	c := p.Counters()
	if c.TxDropped == 0 {
		t.Fatalf("counters %+v: 4 MB to a link that does not read, nothing dropped", c)
	}
	sent := int(c.TxPackets + c.TxDropped)
	if sent != total {
		t.Logf("%d of %d frames counted so far (queued: %d)", sent, total, total-sent)
	}
	last := -1
	got := 0
	buf := make([]byte, 16384)
	for {
		n, err := link.Recv(buf, 500*time.Millisecond)
		if err != nil {
			break
		}
		if n != len(frame) {
			t.Fatalf("frame %d: %d bytes, want %d", got, n, len(frame))
		}
		seq := int(binary.BigEndian.Uint32(buf))
		if seq <= last {
			t.Fatalf("frame %d: sequence %d after %d", got, seq, last)
		}
		last = seq
		got++
	}
	c = p.Counters()
	if uint64(got) != c.TxPackets || c.TxPackets+c.TxDropped != total {
		t.Fatalf("read %d whole frames; counters %+v (total %d)", got, c, total)
	}
	t.Logf("%d frames to a stuck link: %d went, %d dropped", total, c.TxPackets, c.TxDropped)
}
