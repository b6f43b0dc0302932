package control

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/client"
	"multifs/multilink"
)

func TestSeqpacketHandshake(t *testing.T) {
	_, ml, srv := serve(t)
	h := dialSeq(t, srv.HostSeqpacket())
	waitFor(t, "host attached", ml.HostAttached)
	if got := ml.Host().Info.Transport; got != "seqpacket" {
		t.Fatalf("transport %q", got)
	}
	_, err := client.DialSeqpacket(srv.HostSeqpacket())
	if !errors.Is(err, unix.EISCONN) {
		t.Fatalf("second host: %v, want EISCONN", err)
	}
	h.Close()
	waitFor(t, "host detached", func() bool { return !ml.HostAttached() })
	dialSeq(t, srv.HostSeqpacket())
	waitFor(t, "new host", ml.HostAttached)
}

// A vde-2 host with seqpacket links, and the reverse.
func TestSeqpacketMixed(t *testing.T) {
	for _, hostSeq := range []bool{false, true} {
		t.Run(map[bool]string{false: "vde host", true: "seqpacket host"}[hostSeq], func(t *testing.T) {
			root, ml, srv := serve(t)
			var host, link *client.Client
			if hostSeq {
				host = dialSeq(t, srv.HostSeqpacket())
				link = dial(t, root)
			} else {
				host = dial(t, filepath.Join(root, "host"))
				link = dialSeq(t, srv.LinkSeqpacket())
			}
			waitFor(t, "joined", func() bool { return ml.HostAttached() && len(ml.Links()) == 1 })
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
		})
	}
}

func TestSeqpacketCloseIsEOF(t *testing.T) {
	_, ml, srv := serve(t)
	c := dialSeq(t, srv.LinkSeqpacket())
	waitFor(t, "joined", func() bool { return len(ml.Links()) == 1 })
	ml.Links()[0].Close()
	if _, err := c.Recv(make([]byte, 100), 2*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want EOF", err)
	}
}

func TestSeqpacketBadMessages(t *testing.T) {
	_, ml, srv := serve(t)
	host := dialSeq(t, srv.HostSeqpacket())
	link := dialSeq(t, srv.LinkSeqpacket())
	waitFor(t, "joined", func() bool { return ml.HostAttached() && len(ml.Links()) == 1 })
	p := ml.Links()[0]
	for _, m := range [][]byte{{}, make([]byte, 13), make([]byte, multilink.MaxFrame+1), make([]byte, 60000)} {
		if err := link.Send(m); err != nil {
			t.Fatalf("send %d bytes: %v", len(m), err)
		}
	}
	good := bytes.Repeat([]byte{9}, 100)
	link.Send(good)
	if got := recvFrame(t, host); !bytes.Equal(got, good) {
		t.Fatalf("host got %d bytes, want only the good frame", len(got))
	}
	if c := p.Counters(); c.RxDropped != 4 || c.RxPackets != 1 {
		t.Fatalf("counters %+v, want 4 dropped and 1 passed", c)
	}
	if p.Closed() {
		t.Fatal("an empty message must not end the link")
	}
}

// A peer that sends before reading the ack loses nothing and harms nothing.
func TestSeqpacketSendBeforeAck(t *testing.T) {
	_, ml, srv := serve(t)
	host := dialSeq(t, srv.HostSeqpacket())
	waitFor(t, "host", ml.HostAttached)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: srv.LinkSeqpacket()}); err != nil {
		t.Fatal(err)
	}
	frame := bytes.Repeat([]byte{7}, 64)
	if _, err := unix.Write(fd, frame); err != nil {
		t.Fatal(err)
	}
	if got := recvFrame(t, host); !bytes.Equal(got, frame) {
		t.Fatalf("host got %x", got)
	}
	ack := make([]byte, 10)
	if n, _ := unix.Read(fd, ack); n != 1 || ack[0] != 0 {
		t.Fatalf("ack %x", ack[:n])
	}
	if len(ml.Links()) != 1 {
		t.Fatal("link not registered")
	}
}

// A burst of non-blocking joins, arriving before the daemon accepts any,
// all connect on the seqpacket and stream entries, as on a vde-2 entry
// (a net listener): their backlog is the kernel's somaxconn, not a small
// constant that answers EAGAIN to the rest.
func TestRawListenerBacklogTakesABurst(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Skip("no somaxconn:", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	n = min(n, 600) // well past the old backlog (128), well under RLIMIT_NOFILE
	for _, sotype := range []int{unix.SOCK_SEQPACKET, unix.SOCK_STREAM} {
		path := filepath.Join(t.TempDir(), "s")
		l, err := listenRaw(path, sotype)
		if err != nil {
			t.Fatal(err)
		}
		joined := 0
		for i := 0; i < n; i++ {
			fd, err := unix.Socket(unix.AF_UNIX, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err == nil {
				joined++
			}
		}
		l.close()
		if joined != n {
			t.Errorf("socket type %d: %d of %d non-blocking connects got through before any accept", sotype, joined, n)
		}
	}
}
