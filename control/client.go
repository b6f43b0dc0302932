package control

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Client is the joining side of the vde-2 protocol, as libvdeplug's vde://
// module does it. Tests and the benchmark use it to act as a host or a link.
type Client struct {
	ctl  *net.UnixConn
	data *pollFD
	done chan struct{}
}

var clientSeq atomic.Uint64

// Dial joins the multilink whose control entry is dir/ctl (dir is a multifs
// mount, its host/ directory, or any vde-2 switch directory).
func Dial(dir, description string) (*Client, error) {
	own := filepath.Join(os.TempDir(), fmt.Sprintf(".multifs-client.%d-%d", os.Getpid(), clientSeq.Add(1)))
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	os.Remove(own)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: own}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", own, err)
	}
	// The daemon has connected to us by the time it replies; the file is
	// needed only until then.
	defer os.Remove(own)
	fail := func(err error) (*Client, error) {
		unix.Close(fd)
		return nil, err
	}
	ctl, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(dir, "ctl"), Net: "unix"})
	if err != nil {
		return fail(err)
	}
	ctl.SetDeadline(time.Now().Add(HandshakeTimeout))
	req := Request{Type: reqNewCtl, SockPath: own, Description: description}
	if _, err := ctl.Write(req.Encode()); err != nil {
		ctl.Close()
		return fail(fmt.Errorf("send request: %w", err))
	}
	reply := make([]byte, sockaddrLen)
	if _, err := io.ReadFull(ctl, reply); err != nil {
		ctl.Close()
		return fail(fmt.Errorf("no reply from %s (refused?): %w", dir, err))
	}
	ctl.SetDeadline(time.Time{})
	remote, err := decodeSockaddr(reply)
	if err != nil {
		ctl.Close()
		return fail(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: remote}); err != nil {
		ctl.Close()
		return fail(fmt.Errorf("connect to %s: %w", remote, err))
	}
	data, err := newClientFD(fd, own)
	if err != nil {
		ctl.Close()
		return nil, err
	}
	c := &Client{ctl: ctl, data: data, done: make(chan struct{})}
	go c.watch()
	return c, nil
}

// watch closes done when the control stream ends.
func (c *Client) watch() {
	var b [64]byte
	for {
		if _, err := c.ctl.Read(b[:]); err != nil {
			close(c.done)
			return
		}
	}
}

// Done is closed when the daemon ends a vde-2 connection (control stream
// EOF); nil for seqpacket, where Recv returns io.EOF instead.
func (c *Client) Done() <-chan struct{} { return c.done }

// Send sends one frame, waiting while the daemon's socket is full.
func (c *Client) Send(frame []byte) error { return c.data.Send(frame) }

// TrySend sends one frame or fails at once if the socket is full.
func (c *Client) TrySend(frame []byte) error { return c.data.TrySend(frame) }

// Recv receives one frame; it returns the frame's real length (possibly
// more than len(buf)) or os.ErrDeadlineExceeded after timeout (0 = none).
func (c *Client) Recv(buf []byte, timeout time.Duration) (int, error) {
	return c.data.Recv(buf, timeout)
}

// Close leaves the multilink.
func (c *Client) Close() error {
	if c.ctl != nil {
		c.ctl.Close()
	}
	return c.data.Close()
}
