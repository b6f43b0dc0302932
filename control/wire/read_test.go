package wire

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is a connected stream socket pair: the reader's end and the
// client's.
func pair(t *testing.T) (*net.UnixConn, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "reader")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	client := os.NewFile(uintptr(fds[1]), "client")
	t.Cleanup(func() { c.Close(); client.Close() })
	return c.(*net.UnixConn), client
}

func TestReadRequest(t *testing.T) {
	want := Request{SockPath: "/tmp/.client-1", Description: "vde_plug user=0 pid=1"}
	req := want.Encode()

	// In one write, as libvdeplug sends it: the description comes along.
	c, client := pair(t)
	client.Write(req)
	if got, err := ReadRequest(c); err != nil || got != want {
		t.Errorf("one write: %+v, %v", got, err)
	}

	// The header in pieces, the description with its last piece.
	c, client = pair(t)
	go func() {
		client.Write(req[:10])
		time.Sleep(20 * time.Millisecond)
		client.Write(req[10:])
	}()
	if got, err := ReadRequest(c); err != nil || got != want {
		t.Errorf("in pieces: %+v, %v", got, err)
	}

	// More than a request is refused, not read on.
	c, client = pair(t)
	client.Write(append(req, make([]byte, MaxRequestLen)...))
	if _, err := ReadRequest(c); !errors.Is(err, ErrLongRequest) {
		t.Errorf("too long: %v", err)
	}

	// A client gone before its header is whole.
	c, client = pair(t)
	client.Write(req[:HeaderLen-1])
	client.Close()
	if _, err := ReadRequest(c); !errors.Is(err, io.EOF) {
		t.Errorf("cut short: %v", err)
	}

}
