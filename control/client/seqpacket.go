package client

import (
	"fmt"

	"golang.org/x/sys/unix"

	"multifs/control/wire"
)

// DialSeqpacket joins through a seqpacket entry (PATH/seqpacket or
// PATH/host/seqpacket) and waits for the ack.
func DialSeqpacket(path string) (*Client, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	tv := unix.NsecToTimeval(int64(wire.HandshakeTimeout))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	ack := make([]byte, 1)
	n, err := unix.Read(fd, ack)
	for err == unix.EINTR { // a read with SO_RCVTIMEO is not restarted after a signal
		n, err = unix.Read(fd, ack)
	}
	if err != nil || n != 1 {
		unix.Close(fd)
		return nil, fmt.Errorf("no ack from %s (n=%d): %v", path, n, err)
	}
	if err := wire.ParseAck(ack); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("refused by %s: %w", path, err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{})
	data, err := newClientFD(fd, path)
	if err != nil {
		return nil, err
	}
	data.eofOnEmpty = true
	return &Client{data: data}, nil
}
