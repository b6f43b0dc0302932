package client

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/wire"
)

// Port1 is a vde-2 switch with a single port: it serves DIR/ctl, admits one
// client and returns its data channel. The benchmark uses it as the far end
// of the reference (`vde_plug multi://... vde://DIR`), so that both sides of
// a comparison are measured by the same Go code over the same socket hops.
// Its sockets stay in DIR; the caller removes DIR.
//
// It trusts its one client: unlike the daemon's admission (package
// control) it does not check who owns the socket it is told to connect to.
func Port1(dir string) (*Client, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ctl := filepath.Join(dir, "ctl")
	os.Remove(ctl)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: ctl, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	req, err := wire.ReadRequest(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	path := filepath.Join(dir, "port1")
	raw, err := dataSocket(path, req.SockPath)
	if err != nil {
		c.Close()
		return nil, err
	}
	fd, err := newClientFD(raw, path)
	if err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Write(wire.EncodeSockaddr(path)); err != nil {
		fd.Close()
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{}) // the handshake is over
	cl := &Client{ctl: c, data: fd, done: make(chan struct{})}
	go cl.watch()
	return cl, nil
}

// dataSocket makes the switch's end of the data channel: a datagram socket
// bound at path and connected to the client's socket peer.
func dataSocket(path, peer string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	os.Remove(path)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: peer}); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return -1, fmt.Errorf("connect to %s: %w", peer, err)
	}
	return fd, nil
}
