package control

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"multifs/multilink"
)

// The native SOCK_SEQPACKET entries speak the newer vdeplug4 ptp:// protocol
// (protocols.md §3): on accept the server sends one byte, 0 for "accepted"
// or an errno (EISCONN when the host entry is taken) before closing. Then
// one frame per message both ways; EOF ends the peer, no side channel.

// Names of the seqpacket listening sockets inside the socket directory.
const (
	LinkSeqpacketName = "seqpacket"
	HostSeqpacketName = "host.seqpacket"
)

// seqListener is a listening SOCK_SEQPACKET socket whose Accept parks in
// the poller and returns when the listener is closed.
type seqListener struct {
	*pollFD
	path string
}

func listenSeqpacket(path string) (*seqListener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	p, err := newPollFD(fd, path)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return &seqListener{pollFD: p, path: path}, nil
}

// accept returns a connected, non-blocking socket.
func (l *seqListener) accept() (int, error) {
	if err := l.io(opAccept, unix.EPOLLIN, 0, false); err != nil {
		return -1, err
	}
	return l.rx.n, l.rx.err
}

func (l *seqListener) close() {
	l.Close()
	os.Remove(l.path)
}

// joinSeqpacket admits one seqpacket peer: ack, then hand over.
func (s *Server) joinSeqpacket(fd int, isHost bool) {
	log := s.log.WithField("role", roleName(isHost)).WithField("transport", "seqpacket")
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		log.WithError(err).Warn("refused: no peer credentials")
		unix.Close(fd)
		return
	}
	log = log.WithField("pid", cred.Pid).WithField("uid", cred.Uid)
	conn, err := newPollFD(fd, "seqpacket")
	if err != nil {
		log.WithError(err).Warn("refused")
		return
	}
	conn.eofOnEmpty.Store(true)
	conn.ownThread = isHost
	info := multilink.PeerInfo{Transport: "seqpacket", PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, Since: time.Now()}
	// The ack is sent inside Admit: after the place is taken, before any
	// frame can be sent, so no frame overtakes it. The socket is new, so
	// this one-byte write cannot block.
	ack := func() error {
		_, err := unix.Write(fd, []byte{0})
		return err
	}
	if _, err := s.ml.Admit(isHost, info, conn, nil, ack); err != nil {
		if errors.Is(err, multilink.ErrHostAttached) {
			unix.Write(fd, []byte{byte(unix.EISCONN)})
		}
		log.WithError(err).Warn("refused")
		conn.Close()
	}
}

func roleName(isHost bool) string {
	if isHost {
		return "host"
	}
	return "link"
}

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
	tv := unix.NsecToTimeval(int64(HandshakeTimeout))
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
	if ack[0] != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("refused by %s: %w", path, unix.Errno(ack[0]))
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{})
	data, err := newClientFD(fd, path)
	if err != nil {
		return nil, err
	}
	data.eofOnEmpty = true
	return &Client{data: data}, nil
}
