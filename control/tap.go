package control

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"multifs/multilink"
)

// A tap device as the host: multifs opens it itself (`--host tap://NAME`,
// as `vde_plug multi://PATH tap://NAME` would), which saves the hop through
// a vde_plug process. A tap fd is not a socket, so frames move one read(2)
// or write(2) each, still gathered into batches for the multilink.
type tapConn struct {
	*pollFD
}

// OpenTap opens (creating if needed) the tap interface name, without
// packet information headers, non-blocking.
func OpenTap(name string) (multilink.Conn, error) {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap: bad interface name %q", name)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: open /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	p, err := newPollFD(fd, "tap:"+name)
	if err != nil {
		return nil, err
	}
	return &tapConn{p}, nil
}

// TapName returns NAME for a tap://NAME URL.
func TapName(url string) (string, bool) {
	return strings.CutPrefix(url, "tap://")
}

// TapPeerInfo describes a tap host in stats.
func TapPeerInfo(name string) multilink.PeerInfo {
	return multilink.PeerInfo{
		Transport: "tap", Description: "tap://" + name,
		PID: int32(os.Getpid()), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), Since: time.Now(),
	}
}

func (t *tapConn) RecvBatch(get func() ([][]byte, []int), put func()) (int, error) {
	var n int
	var rerr error
	var sizes []int
	err := t.io(unix.EPOLLIN, 0, func(fd uintptr) bool {
		var bufs [][]byte
		bufs, sizes = get()
		for n = 0; n < len(bufs); n++ {
			k, err := unix.Read(int(fd), bufs[n])
			if err != nil {
				if err != unix.EAGAIN {
					rerr = err
				}
				break
			}
			sizes[n] = k
		}
		if n == 0 && rerr == nil {
			put()
			return false
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, rerr
	}
	return n, nil
}

func (t *tapConn) TrySendBatch(frames [][]byte) (int, error) {
	sent := 0
	var werr error
	err := t.rc.Control(func(fd uintptr) {
		for _, f := range frames {
			if _, werr = unix.Write(int(fd), f); werr != nil {
				return
			}
			sent++
		}
	})
	if err != nil {
		return sent, err
	}
	if werr == unix.EAGAIN {
		return sent, multilink.ErrWouldBlock
	}
	return sent, werr
}

func (t *tapConn) Send(frame []byte) error {
	var werr error
	err := t.io(unix.EPOLLOUT, 0, func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), frame)
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return werr
}

// SendBatchWait writes frames, waiting for room up to timeout in all.
func (t *tapConn) SendBatchWait(frames [][]byte, timeout time.Duration) (int, error) {
	sent := 0
	var werr error
	err := t.io(unix.EPOLLOUT, timeout, func(fd uintptr) bool {
		for sent < len(frames) {
			if _, werr = unix.Write(int(fd), frames[sent]); werr != nil {
				return werr != unix.EAGAIN
			}
			sent++
		}
		return true
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return sent, multilink.ErrWouldBlock
	case err != nil:
		return sent, err
	}
	return sent, werr
}
