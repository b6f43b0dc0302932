package control

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"multifs/control/engine"
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

// seqListener is a listening SOCK_SEQPACKET socket that waits in Go's
// poller, as the vde-2 listeners (net.UnixListener) do: a listener wakes
// once per join. It is an os.File rather than a net.UnixListener because
// the accepted socket goes to the engine as a bare descriptor, which
// net's listener does not give (its raw Read is not supported), and a dup
// of a net.Conn's would need one descriptor more at each accept.
type seqListener struct {
	f    *os.File
	rc   syscall.RawConn
	path string
}

func listenSeqpacket(path string) (*seqListener, error) {
	return listenRaw(path, unix.SOCK_SEQPACKET)
}

// listenRaw makes a seqListener of the socket type sotype at path.
func listenRaw(path string, sotype int) (*seqListener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, sotype|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	// The kernel caps the backlog at net.core.somaxconn, the backlog Go's
	// net listeners (the vde-2 and vhost-user entries) get. A small one
	// refuses a burst of joins: a non-blocking connect gets EAGAIN once
	// it is full, however fast the daemon accepts.
	if err := unix.Listen(fd, math.MaxInt32); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Non-blocking, so os.NewFile puts it in Go's poller.
	f := os.NewFile(uintptr(fd), path)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &seqListener{f: f, rc: rc, path: path}, nil
}

// accept returns a connected, non-blocking socket; after close, an error
// that is os.ErrClosed.
func (l *seqListener) accept() (int, error) {
	nfd := -1
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return aerr != unix.EAGAIN
	})
	if err != nil {
		return -1, err
	}
	return nfd, aerr
}

func (l *seqListener) close() {
	l.f.Close()
	os.Remove(l.path)
}

// joinSeqpacket admits one seqpacket peer: ack, then hand over.
func (s *Server) joinSeqpacket(fd int, isHost bool) {
	cred, log, ok := s.peerCred(fd, isHost, "seqpacket")
	if !ok {
		return
	}
	if e, ok := s.refused.refuses(isHost, cred.Pid); ok {
		// The process whose port was closed for good, reconnecting (a
		// ptp client does so at once): the ack fails its reconnect.
		unix.Write(fd, wire.Refusal(ackRefused))
		unix.Close(fd)
		log.WithField("closed", closedName(e)).WithField("ack", ackRefused.Error()).
			WithField(EventField, EventRefusedClosed).Warn("refused: this process's port was closed for good through its close file")
		return
	}
	pc, err := s.eng.NewSocket(fd, "seqpacket", engine.Options{EOFOnEmpty: true, OwnThread: isHost})
	if err != nil {
		log.WithError(err).Warn("refused")
		return
	}
	conn := &seqConn{FD: pc, s: s, isHost: isHost, pid: cred.Pid}
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

// peerCred is where a seqpacket or stream join begins: the peer's
// credentials (SO_PEERCRED) and a log entry that names the peer by them.
// Without credentials fd is closed, the refusal logged, and ok false.
func (s *Server) peerCred(fd int, isHost bool, transport string) (cred *unix.Ucred, log *logrus.Entry, ok bool) {
	log = s.log.WithField("role", roleName(isHost)).WithField("transport", transport)
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		log.WithError(err).Warn("refused: no peer credentials")
		unix.Close(fd)
		return nil, nil, false
	}
	return cred, log.WithField("pid", cred.Pid).WithField("uid", cred.Uid), true
}

// MsgRefusalsFull is the warning logged when a process closed for good
// cannot be remembered: the record of closed processes is full of other
// users' entries, none of which may go for it (refuse.go).
const MsgRefusalsFull = "closed, but not remembered: the record of closed processes is full of other users' entries; this process may rejoin"

// seqConn is a seqpacket peer's socket. Its peer may be a ptp client,
// which comes straight back when hung up: Final remembers it so that it
// does not.
type seqConn struct {
	*engine.FD
	s      *Server
	isHost bool
	pid    int32
}

// Final runs when the port is closed for good, before the socket is
// closed: the socket tells us which process to refuse from now on.
func (c *seqConn) Final(p *multilink.Port) {
	var pidfd int
	var exited bool
	if !c.Control(func(fd int) { pidfd, exited = peerPidfd(fd, c.pid) }) {
		return // closing already: the peer left by itself, or we stop
	}
	if exited {
		return
	}
	log := c.s.log.WithFields(logrus.Fields{"role": roleName(c.isHost), "link": closedName(refusal{host: c.isHost, link: p.ID}),
		"pid": c.pid, "uid": p.Info.UID, "pidfd": pidfd >= 0})
	if !c.s.refused.add(c.isHost, c.pid, p.Info.UID, pidfd, p.ID) {
		log.Warn(MsgRefusalsFull)
		return
	}
	log.Info("closed for good: this process's reconnects will be refused while it runs")
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
