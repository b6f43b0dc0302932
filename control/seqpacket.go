package control

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"multifs/control/wire"
	"multifs/multilink"
)

// The native SOCK_SEQPACKET entries speak the newer vdeplug4 ptp:// protocol
// (libvdeplug_ptp's): on accept the server sends one byte, 0 for "accepted"
// or an errno before closing: EISCONN when the host entry is taken,
// ECONNREFUSED for a process whose port was closed for good (refuse.go),
// ESHUTDOWN while the daemon stops. Then one frame per message both ways;
// EOF ends the peer, no side channel.

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
	if e, ok := s.refused.refuses(isHost, cred.Pid); ok {
		// The process whose port was closed for good, reconnecting (a
		// ptp client does so at once): the ack fails its reconnect.
		unix.Write(fd, wire.Refusal(ackRefused))
		unix.Close(fd)
		log.WithField("closed", closedName(e)).WithField("ack", ackRefused.Error()).Warn(MsgRefusedClosed)
		return
	}
	pc, err := newPollFD(fd, "seqpacket")
	if err != nil {
		log.WithError(err).Warn("refused")
		return
	}
	pc.eofOnEmpty.Store(true)
	pc.ownThread = isHost
	conn := &seqConn{pollFD: pc, s: s, isHost: isHost, pid: cred.Pid}
	info := multilink.PeerInfo{Transport: "seqpacket", PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, Since: time.Now()}
	// The ack is sent inside Admit: after the place is taken, before any
	// frame can be sent, so no frame overtakes it. The socket is new, so
	// this one-byte write cannot block.
	ack := func() error {
		_, err := unix.Write(fd, wire.Accepted())
		return err
	}
	if _, err := s.ml.Admit(isHost, info, conn, nil, ack); err != nil {
		switch {
		case errors.Is(err, multilink.ErrHostAttached):
			unix.Write(fd, wire.Refusal(unix.EISCONN))
		case errors.Is(err, multilink.ErrClosed):
			// Stopping: a ptp client hung up by the stop reconnects at
			// once; an ack ends it here, before it finds the entry gone
			// and binds a socket of its own at PATH/seqpacket.
			unix.Write(fd, wire.Refusal(unix.ESHUTDOWN))
		}
		log.WithError(err).Warn("refused")
		conn.Close()
	}
}

// MsgRefusedClosed is the warning logged when a process whose seqpacket
// port was closed through the close file connects again.
const MsgRefusedClosed = "refused: this process's port was closed for good through its close file"

// seqConn is a seqpacket peer's socket. Its peer may be a ptp client,
// which comes straight back when hung up: Final remembers it so that it
// does not.
type seqConn struct {
	*pollFD
	s      *Server
	isHost bool
	pid    int32
}

// Final runs when the port is closed for good, before the socket is
// closed: the socket tells us which process to refuse from now on.
func (c *seqConn) Final(p *multilink.Port) {
	if !c.enter() {
		return // closing already: the peer left by itself, or we stop
	}
	pidfd, exited := peerPidfd(c.fd, c.pid)
	c.leave()
	if exited {
		return
	}
	c.s.refused.add(c.isHost, c.pid, pidfd, p.ID)
	c.s.log.WithFields(logrus.Fields{"role": roleName(c.isHost), "link": closedName(refusal{host: c.isHost, link: p.ID}),
		"pid": c.pid, "pidfd": pidfd >= 0}).Info("closed for good: this process's reconnects will be refused while it runs")
}

func closedName(e refusal) string {
	if e.host {
		return "host"
	}
	return strconv.FormatUint(e.link, 10)
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
