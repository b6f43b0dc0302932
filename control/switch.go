package control

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"multifs/control/wire"
)

// Port1 is a vde-2 switch with a single port: it serves DIR/ctl, admits one
// client and returns its data channel. The benchmark uses it as the far end
// of the reference (`vde_plug multi://... vde://DIR`), so that both sides of
// a comparison are measured by the same Go code over the same socket hops.
// Its sockets stay in DIR; the caller removes DIR.
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
	req, err := readRequest(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	path := filepath.Join(dir, "port1")
	raw, err := (&Server{dir: dir}).dataSocketRaw("port1", req.SockPath)
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
	cl := &Client{ctl: c, data: fd, done: make(chan struct{})}
	go cl.watch()
	return cl, nil
}
