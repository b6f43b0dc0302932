// Package client is the joining side of multifs's entries, for tests, the
// benchmark (test/bench) and test/vdeprobe: Dial speaks the vde-2 switch
// protocol as libvdeplug's vde:// does, DialSeqpacket the ptp:// one of
// the seqpacket entries, and Port1 is a one-port vde-2 switch. The daemon
// does not import it (make check verifies that).
//
// Its sockets wait in Go's poller, as any Go program's would: a client
// waits for one thing at a time, so the poller's wake-ups are the ones it
// needs (the daemon's descriptors, package engine, avoid them).
package client

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"multifs/control/engine"
	"multifs/control/wire"
	"multifs/multilink"
)

// Client is the joining side of the vde-2 protocol, as libvdeplug's vde://
// module does it. Tests and the benchmark use it to act as a host or a link.
type Client struct {
	ctl  *net.UnixConn
	data *clientFD
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
	ctl.SetDeadline(time.Now().Add(wire.HandshakeTimeout))
	req := wire.Request{Type: wire.ReqNewControl, SockPath: own, Description: description}
	if _, err := ctl.Write(req.Encode()); err != nil {
		ctl.Close()
		return fail(fmt.Errorf("send request: %w", err))
	}
	reply := make([]byte, wire.SockaddrLen)
	if _, err := io.ReadFull(ctl, reply); err != nil {
		ctl.Close()
		return fail(fmt.Errorf("no reply from %s (refused?): %w", dir, err))
	}
	ctl.SetDeadline(time.Time{})
	remote, err := wire.DecodeSockaddr(reply)
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

// RecvBatch receives every frame waiting, up to len(bufs), in one system
// call; see clientFD.RecvBatch.
func (c *Client) RecvBatch(bufs [][]byte, sizes []int, timeout time.Duration) (int, error) {
	return c.data.RecvBatch(bufs, sizes, timeout)
}

// Close leaves the multilink.
func (c *Client) Close() error {
	if c.ctl != nil {
		c.ctl.Close()
	}
	return c.data.Close()
}

// clientFD is a client's data socket, waiting in Go's poller.
type clientFD struct {
	f  *os.File
	rc syscall.RawConn
	// eofOnEmpty marks a SOCK_SEQPACKET socket, where receiving 0 bytes
	// may mean EOF rather than an empty message.
	eofOnEmpty bool
	rx         *mmsg // RecvBatch's headers, made at its first call
}

func newClientFD(fd int, name string) (*clientFD, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &clientFD{f: f, rc: rc}, nil
}

// Recv reads one message, returning its real length (MSG_TRUNC), waiting
// at most timeout (0: no limit).
func (c *clientFD) Recv(buf []byte, timeout time.Duration) (int, error) {
	c.readDeadline(timeout)
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 && c.eofOnEmpty && c.peerGone() {
		return 0, io.EOF
	}
	return n, nil
}

// RecvBatch reads every message waiting, up to len(bufs) (at most a
// batch), with one recvmmsg, waiting at most timeout (0: no limit) for the
// first. sizes[i] gets each message's real length (MSG_TRUNC). A load
// generator's sink uses it so that its own receiving is not what it
// measures. Not for seqpacket peers: an empty message is returned as one.
func (c *clientFD) RecvBatch(bufs [][]byte, sizes []int, timeout time.Duration) (int, error) {
	c.readDeadline(timeout)
	if c.rx == nil {
		c.rx = new(mmsg)
	}
	n := c.rx.fill(bufs)
	var got int
	var errno unix.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		got, errno = c.rx.recv(int(fd), n)
		return errno != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	for i := 0; i < got; i++ {
		sizes[i] = int(c.rx.hdrs[i].Len)
	}
	return got, nil
}

// readDeadline makes the next read give up after timeout (0: never).
func (c *clientFD) readDeadline(timeout time.Duration) {
	if timeout != 0 {
		c.f.SetReadDeadline(time.Now().Add(timeout))
	} else {
		c.f.SetReadDeadline(time.Time{})
	}
}

func (c *clientFD) peerGone() bool {
	gone := false
	c.rc.Control(func(fd uintptr) { gone = engine.HungUp(int(fd)) })
	return gone
}

// TrySend sends one message without waiting.
func (c *clientFD) TrySend(frame []byte) error {
	var serr error
	err := c.rc.Control(func(fd uintptr) {
		serr = unix.Send(int(fd), frame, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	})
	if err != nil {
		return err
	}
	if serr == unix.EAGAIN {
		return multilink.ErrWouldBlock
	}
	return serr
}

// Send sends one message, waiting while the socket is full.
func (c *clientFD) Send(frame []byte) error {
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		serr = unix.Send(int(fd), frame, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

func (c *clientFD) Close() error { return c.f.Close() }

// mmsg is the scratch space of one recvmmsg call.
type mmsg struct {
	hdrs [multilink.BatchSize]unix.Mmsghdr
	iovs [multilink.BatchSize]unix.Iovec
}

// fill points the headers at bufs and returns how many it set up.
func (m *mmsg) fill(bufs [][]byte) int {
	n := min(len(bufs), len(m.hdrs))
	for i := 0; i < n; i++ {
		m.iovs[i] = unix.Iovec{}
		if len(bufs[i]) > 0 {
			m.iovs[i].Base = &bufs[i][0]
		}
		m.iovs[i].SetLen(len(bufs[i]))
		m.hdrs[i] = unix.Mmsghdr{}
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.SetIovlen(1)
	}
	return n
}

// recv is one non-blocking recvmmsg of up to n messages on fd.
func (m *mmsg) recv(fd, n int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(n), unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
	return int(r), e
}
