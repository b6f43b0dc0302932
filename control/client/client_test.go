package client

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/wire"
)

// A client's RecvBatch takes every frame waiting in one call, reports each
// one's real length (a truncated one included), and gives up after its
// timeout when nothing comes.
func TestClientRecvBatch(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	c, err := newClientFD(fds[1], "client")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lens := []int{60, 1514, 100, 42}
	for _, n := range lens {
		if err := unix.Send(fds[0], make([]byte, n), 0); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 1000) // the 1514-byte frame does not fit
	}
	sizes := make([]int, len(bufs))
	n, err := c.RecvBatch(bufs, sizes, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(lens) {
		t.Fatalf("got %d frames in one call, want %d", n, len(lens))
	}
	for i, want := range lens {
		if sizes[i] != want {
			t.Fatalf("frame %d: size %d, want %d (all: %v)", i, sizes[i], want, sizes[:n])
		}
	}
	start := time.Now()
	if _, err := c.RecvBatch(bufs, sizes, 30*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("nothing waiting: got %v, want a deadline error", err)
	}
	if d := time.Since(start); d < 25*time.Millisecond || d > time.Second {
		t.Fatalf("the timeout of 30 ms took %v", d)
	}
}

func TestPort1(t *testing.T) {
	t.Parallel() // it outlasts the handshake's timeout
	dir := t.TempDir()
	got := make(chan *Client, 1)
	go func() {
		c, err := Port1(dir)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	var cl *Client
	var err error
	for i := 0; i < 100; i++ {
		if cl, err = Dial(dir, "port1 test"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sw := <-got
	if sw == nil {
		t.FailNow()
	}
	defer sw.Close()
	f := bytes.Repeat([]byte{5}, 1500)
	cl.Send(f)
	if b := recvFrame(t, sw); !bytes.Equal(b, f) {
		t.Fatal("frame damaged through Port1")
	}
	sw.Send(f[:64])
	if b := recvFrame(t, cl); !bytes.Equal(b, f[:64]) {
		t.Fatal("frame damaged back through Port1")
	}
	// The handshake's deadline ends with it: past HandshakeTimeout the
	// switch still holds the client's control stream open.
	select {
	case <-sw.Done():
		t.Fatal("Port1 lost the control stream of a client that is still there")
	case <-time.After(wire.HandshakeTimeout + 500*time.Millisecond):
	}
}
