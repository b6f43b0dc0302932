package control

import (
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"multifs/control/engine"
	"multifs/multilink"
)

// The stream entries speak QEMU's `-netdev stream` (and passt's,
// gvisor-tap-vsock's, `-netdev socket`'s): a SOCK_STREAM unix socket on
// which each frame is a 4-byte big-endian length followed by the frame,
// both ways, from the first byte; nothing else. The framing is package
// engine's (engine.NewStream). Admission is the seqpacket entries' without
// the ack, which this protocol has not: a connection is a peer at once,
// and one that is refused (a second host, a process closed for good, a
// daemon stopping) is closed at once, the reason in the log.

// Names of the stream listening sockets inside the socket directory.
const (
	LinkStreamName = "stream"
	HostStreamName = "host.stream"
)

// LinkStream is the path of the links' stream entry.
func (s *Server) LinkStream() string { return filepath.Join(s.dir, LinkStreamName) }

// HostStream is the path of the host's stream entry.
func (s *Server) HostStream() string { return filepath.Join(s.dir, HostStreamName) }

// listenStream creates the stream entries, with the modes and group of
// the others.
func (s *Server) listenStream() error {
	for _, name := range []string{LinkStreamName, HostStreamName} {
		l, err := listenStreamAt(s.at(name))
		if err != nil {
			return fmt.Errorf("%w (%s)", err, filepath.Join(s.dir, name))
		}
		s.streamListeners = append(s.streamListeners, l)
		if err := s.apply(name); err != nil {
			return err
		}
	}
	return nil
}

// listenStreamAt is listenSeqpacket for a SOCK_STREAM socket: the same
// listener, which waits in Go's poller and hands out bare descriptors.
func listenStreamAt(path string) (*seqListener, error) {
	return listenRaw(path, unix.SOCK_STREAM)
}

// serveStream starts the stream entries' accept loops.
func (s *Server) serveStream() {
	for i, l := range s.streamListeners {
		s.wg.Add(1)
		go s.acceptRawLoop(l, i == 1, s.joinStream)
	}
}

func (s *Server) closeStream() {
	for _, l := range s.streamListeners {
		l.close()
	}
}

// joinStream admits one stream peer.
func (s *Server) joinStream(fd int, isHost bool) {
	cred, log, ok := s.peerCred(fd, isHost, "stream")
	if !ok {
		return
	}
	if e, ok := s.refused.refuses(isHost, cred.Pid); ok {
		// QEMU ≥ 8.0 with reconnect=N comes back by itself: a close
		// through the close file must stay a close.
		unix.Close(fd)
		log.WithField("closed", closedName(e)).WithField(EventField, EventRefusedClosed).Warn("refused: this process's port was closed for good through its close file")
		return
	}
	p, err := s.eng.NewStream(fd, "stream", engine.Options{OwnThread: isHost})
	if err != nil {
		log.WithError(err).Warn("refused")
		return
	}
	// The seqpacket peer's Final (refuse for good on close) serves as is:
	// it asks the socket who its peer is.
	c := &seqConn{FD: p, s: s, isHost: isHost, pid: cred.Pid}
	info := multilink.PeerInfo{Transport: "stream", PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, Since: time.Now()}
	if _, err := s.ml.Admit(isHost, info, c, nil, nil); err != nil {
		// A second host, or the daemon stopping: closed at once.
		log.WithError(err).Warn("refused")
		c.Close()
	}
}
