package engine

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"multifs/multilink/conn"
)

// A tap device as the host: multifs opens it itself (`--host tap://NAME`,
// as `vde_plug multi://PATH tap://NAME` would), which saves the hop through
// a vde_plug process. A tap fd is not a socket, so frames move one read(2)
// or write(2) each (the tap ops of FD), still gathered into batches for
// the multilink.

// OpenTap opens (creating if needed) the tap interface name, without
// packet information headers, non-blocking. A tap host joins the hot loop
// (see Options.OwnThread).
func (e *Engine) OpenTap(name string) (*FD, error) {
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
	return e.newFD(fd, "tap:"+name, Options{}, opTapRead, opTapWrite)
}

// TapPeerInfo describes a tap host in stats.
func TapPeerInfo(name string) conn.PeerInfo {
	return conn.PeerInfo{
		Transport: "tap", Description: "tap://" + name,
		PID: int32(os.Getpid()), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), Since: time.Now(),
	}
}

// tapReadOnce reads frames, one read(2) each, until the batch is full or
// the device has no more.
func (p *FD) tapReadOnce() bool {
	rx := &p.rx
	rx.err = nil
	rx.b = rx.r.Get()
	for rx.n = 0; rx.n < len(rx.b.Bufs); rx.n++ {
		k, err := unix.Read(p.fd, rx.b.Bufs[rx.n])
		if err != nil {
			if err != unix.EAGAIN {
				rx.err = err
			}
			break
		}
		rx.b.Sizes[rx.n] = k
	}
	if rx.n == 0 && rx.err == nil {
		rx.r.Put(rx.b)
		rx.b = nil
		return false
	}
	return true
}

// tapWriteOnce writes what is left of tx.frames, one write(2) each.
func (p *FD) tapWriteOnce() bool {
	tx := &p.tx
	for tx.sent < len(tx.frames) {
		if _, err := unix.Write(p.fd, tx.frames[tx.sent]); err != nil {
			if err == unix.EAGAIN {
				return false
			}
			tx.err = err
			return true
		}
		tx.sent++
	}
	return true
}
