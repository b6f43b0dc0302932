package wire

import (
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// ReadRequest reads one vde-2 request from c, as the daemon's ctl entries
// and the test switch (control/client's Port1) both take one: the fixed
// header robustly (it may arrive in pieces), then whatever description
// came with it, without waiting for more (the description has no length
// field), all within HandshakeTimeout and MaxRequestLen. It leaves c's
// deadline set, so that the reply is bounded too: the caller clears it
// once the handshake is over.
func ReadRequest(c *net.UnixConn) (Request, error) {
	c.SetDeadline(time.Now().Add(HandshakeTimeout))
	buf := make([]byte, MaxRequestLen+1)
	n := 0
	for n < HeaderLen {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return Request{}, fmt.Errorf("after %d bytes: %w", n, err)
		}
	}
	if n <= MaxRequestLen {
		rc, err := c.SyscallConn()
		if err == nil {
			rc.Read(func(fd uintptr) bool {
				m, _, rerr := unix.Recvfrom(int(fd), buf[n:], unix.MSG_DONTWAIT)
				if rerr == nil && m > 0 {
					n += m
				}
				return true
			})
		}
	}
	return ParseRequest(buf[:n])
}
