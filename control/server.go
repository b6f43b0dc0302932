// Package control admits peers into a multilink: it holds the socket
// directory beside the mount (sockdir.go) and serves its entries, the
// vde-2 switch protocol's (how vde_plug, qemu and friends join) and the
// seqpacket ones of vdeplug4's ptp:// (seqpacket.go), QEMU's -netdev
// stream ones (stream.go) and the host's vhost-user one
// (vhostuser_entry.go, package vhostuser), refusing for good the processes
// an operator closed (refuse.go).
//
// A vde-2 join goes: accept on a listening SOCK_STREAM socket (SOCKDIR/ctl
// for links, SOCKDIR/host.ctl for the host); read one request (bounded in
// size and time, in its own goroutine so a stalled client blocks nobody;
// its bytes are package wire's to parse); make a SOCK_DGRAM data socket
// connected to the client's, bound in SOCKDIR; reply with its address;
// hand the data socket to the multilink. The control stream then carries
// nothing; its EOF, from either side, ends the peer.
//
// The listeners wait in Go's poller, as any Go server's do: they wake once
// per join. The data sockets are package engine's descriptors, which wait
// in the engine's own; their policy (a host's keeps its own thread, a
// seqpacket socket reads an empty message at EOF, a stream is framed) is
// set here, at admission. The client side of these protocols, for tests,
// the benchmark and vdeprobe, is package control/client.
package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"multifs/control/engine"
	"multifs/control/wire"
	"multifs/multilink"
	"multifs/perms"
)

// Names of the listening sockets inside the socket directory.
const (
	LinkCtlName = "ctl"
	HostCtlName = "host.ctl"
)

// Server accepts vde-2, seqpacket and stream peers into a multilink.
type Server struct {
	dir   string   // SOCKDIR, as peers name it
	sd    *SockDir // SOCKDIR held
	perms perms.Perms
	ml    *multilink.Multilink
	eng   *engine.Engine // where the data sockets go
	log   *logrus.Entry

	listeners    []*net.UnixListener // vde-2: links, host
	seqListeners []*seqListener      // seqpacket: links, host
	seq          atomic.Uint64       // names data sockets; independent of link ids
	wg           sync.WaitGroup
	closing      atomic.Bool
	refused      refusals // seqpacket peers closed for good (refuse.go)

	streamListeners []*seqListener    // QEMU's stream: links, host (stream.go)
	vhostListener   *net.UnixListener // vhost-user: the host (vhostuser_entry.go)
}

// NewServer returns a server that will place its sockets in sd and admit
// peers into ml, their data sockets served by eng. It binds, chmods and
// removes its sockets through sd's descriptor, never through a path that
// a rename above SOCKDIR could redirect.
func NewServer(sd *SockDir, p perms.Perms, ml *multilink.Multilink, eng *engine.Engine, log *logrus.Entry) *Server {
	return &Server{dir: sd.Path, sd: sd, perms: p, ml: ml, eng: eng, log: log}
}

// at is where to bind name: through the held directory (sd.Unlink
// removes one relative to it).
func (s *Server) at(name string) string { return s.sd.At(name) }

func (s *Server) apply(name string) error {
	return s.sd.Apply(name, s.perms, s.perms.SocketMode())
}

// LinkCtl is the path of the links' listening socket.
func (s *Server) LinkCtl() string { return filepath.Join(s.dir, LinkCtlName) }

// HostCtl is the path of the host's listening socket.
func (s *Server) HostCtl() string { return filepath.Join(s.dir, HostCtlName) }

// LinkSeqpacket is the path of the links' seqpacket entry.
func (s *Server) LinkSeqpacket() string { return filepath.Join(s.dir, LinkSeqpacketName) }

// HostSeqpacket is the path of the host's seqpacket entry.
func (s *Server) HostSeqpacket() string { return filepath.Join(s.dir, HostSeqpacketName) }

// Listen creates the listening sockets. Errors here reach the terminal,
// since the CLI listens before it reports ready.
func (s *Server) Listen() error {
	// A listener removes its socket file when closed, by the name it
	// was bound at: the held directory's, while the SockDir is open.
	for _, name := range []string{LinkCtlName, HostCtlName} {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.at(name), Net: "unix"})
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("listen on %s: %w", filepath.Join(s.dir, name), err)
		}
		s.listeners = append(s.listeners, l)
		if err := s.apply(name); err != nil {
			s.closeListeners()
			return err
		}
	}
	for _, name := range []string{LinkSeqpacketName, HostSeqpacketName} {
		l, err := listenSeqpacket(s.at(name))
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("%w (%s)", err, filepath.Join(s.dir, name))
		}
		s.seqListeners = append(s.seqListeners, l)
		if err := s.apply(name); err != nil {
			s.closeListeners()
			return err
		}
	}
	if err := s.listenStream(); err != nil {
		s.closeListeners()
		return err
	}
	if err := s.listenVhostUser(); err != nil {
		s.closeListeners()
		return err
	}
	return nil
}

// Serve accepts peers until Close. It returns at once; work runs in
// goroutines.
func (s *Server) Serve() {
	for i, l := range s.listeners {
		s.wg.Add(1)
		go s.acceptLoop(l, s.joinAside(i == 1))
	}
	for i, l := range s.seqListeners {
		s.wg.Add(1)
		go s.acceptRawLoop(l, i == 1, s.joinSeqpacket)
	}
	s.serveStream()
	s.wg.Add(1)
	// Nothing is read before a frontend is admitted: no goroutine needed
	// until then.
	go s.acceptLoop(s.vhostListener, s.joinVhostUser)
}

// Close stops accepting. Peers already joined belong to the multilink.
func (s *Server) Close() {
	s.closing.Store(true)
	s.closeListeners()
	s.wg.Wait()
	s.refused.closeAll()
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		l.Close()
	}
	for _, l := range s.seqListeners {
		l.close()
	}
	s.closeStream()
	if s.vhostListener != nil {
		s.vhostListener.Close()
	}
}

// joinAside is join for a vde-2 entry's accept loop: a vde-2 join reads
// the peer's request, so it runs in a goroutine of its own, and a client
// that stalls blocks nobody.
func (s *Server) joinAside(isHost bool) func(c *net.UnixConn) {
	return func(c *net.UnixConn) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.join(c, isHost)
		}()
	}
}

// acceptLoop accepts on a vde-2 or vhost-user entry and hands each
// connection to join.
func (s *Server) acceptLoop(l *net.UnixListener, join func(c *net.UnixConn)) {
	defer s.wg.Done()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if s.acceptFailed(err) {
				return
			}
			continue
		}
		join(c)
	}
}

// acceptRawLoop accepts on a seqpacket or stream entry and has join admit
// each connection, in turn: a join reads nothing from the peer (a
// seqpacket peer's ack is ours to send, a stream peer is a peer at once),
// so a stalled client blocks nobody and no goroutine is needed.
func (s *Server) acceptRawLoop(l *seqListener, isHost bool, join func(fd int, isHost bool)) {
	defer s.wg.Done()
	for {
		fd, err := l.accept()
		if err != nil {
			if s.acceptFailed(err) {
				return
			}
			continue
		}
		join(fd, isHost)
	}
}

// acceptFailed reports whether the accept loop should end; other errors
// (EMFILE, say) are logged and slowed down so the loop does not spin.
func (s *Server) acceptFailed(err error) bool {
	if s.closing.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return true
	}
	s.log.WithError(err).WithField(EventField, EventAcceptFailed).Warn("accept failed")
	time.Sleep(10 * time.Millisecond)
	return false
}

// peerCred returns SO_PEERCRED of a connected unix socket.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// join runs one client's handshake and, on success, hands it over.
func (s *Server) join(c *net.UnixConn, isHost bool) {
	role := roleName(isHost)
	log := s.log.WithField("role", role).WithField("transport", "vde")
	cred, err := peerCred(c)
	if err != nil {
		log.WithError(err).Warn("refused: no peer credentials")
		c.Close()
		return
	}
	log = log.WithFields(logrus.Fields{"pid": cred.Pid, "uid": cred.Uid})

	req, err := wire.ReadRequest(c)
	if err != nil {
		log.WithError(err).Warn("refused: bad handshake")
		c.Close()
		return
	}
	log = log.WithField("peer", req.Description)
	if isHost && s.ml.HostAttached() {
		log.Warn("refused: a host is already attached")
		c.Close()
		return
	}
	pinned, unpin, err := pinClientSocket(req.SockPath, cred)
	if err != nil {
		log.WithError(err).Warn("refused: bad data socket")
		c.Close()
		return
	}
	// The peer's exit shows on its control stream, not on the datagram
	// socket: a host reattaching is admitted once the old one's stream
	// has hung up, even before watchStream has read that.
	opts := engine.Options{OwnThread: isHost, PeerLeft: func() bool { return connHungUp(c) }}
	data, dataName, err := s.dataSocket(role, pinned, opts)
	unpin()
	if err != nil {
		log.WithError(err).Warn("refused: cannot make data socket")
		c.Close()
		return
	}
	dataPath := filepath.Join(s.dir, dataName) // what the client connects to
	cleanup := func() {
		c.Close()
		s.sd.Unlink(dataName)
	}
	// The reply is written inside Admit: a client holding its reply is a
	// member (listed, holding the host slot), so a second host racing the
	// first is refused before it gets a reply, not after.
	info := multilink.PeerInfo{
		Transport: "vde", Description: req.Description,
		PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, Since: time.Now(),
	}
	reply := func() error {
		_, err := c.Write(wire.EncodeSockaddr(dataPath))
		return err
	}
	port, err := s.ml.Admit(isHost, info, data, cleanup, reply)
	if err != nil {
		log.WithError(err).Warn("refused")
		data.Close()
		cleanup()
		return
	}
	c.SetDeadline(time.Time{})
	// The stream's watcher lives as long as the peer, not the handshake,
	// so Close (which waits for handshakes) must not wait for it.
	go watchStream(c, port)
}

// watchStream waits for the control stream to end, which ends the peer.
// Nothing is expected on it; anything sent is discarded. A peer that
// leaves (vde_plug exiting) may have sent its last frames just before:
// Leave takes them before the port closes.
func watchStream(c *net.UnixConn, port *multilink.Port) {
	var buf [256]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			break
		}
	}
	port.Leave()
}

// connHungUp reports, without reading, whether c's peer has gone.
func connHungUp(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	if rc.Control(func(fd uintptr) { gone = engine.HungUp(int(fd)) }) != nil {
		return true
	}
	return gone
}

// pinClientSocket opens the client's data socket path and checks the very
// object it got: a socket, belonging to the connecting process's uid
// unless that process is root. Otherwise any client could make multifs
// send frames to a third party's socket (the confused deputy). The check
// and the connect must concern the same object, or a client could swap a
// directory in the path between them; so the object is held open (O_PATH,
// the last component not followed) and connected to through its
// /proc/self/fd name, which cannot be swapped. Call unpin once connected.
func pinClientSocket(path string, cred *unix.Ucred) (pinned string, unpin func(), err error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(fd)
		return "", nil, fmt.Errorf("%s: not a socket", path)
	}
	if cred.Uid != 0 && st.Uid != cred.Uid {
		unix.Close(fd)
		return "", nil, fmt.Errorf("%s: owned by uid %d, not by the peer (uid %d)", path, st.Uid, cred.Uid)
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { unix.Close(fd) }, nil
}

// dataSocket makes the server's end of a vde-2 data channel: a datagram
// socket bound at SOCKDIR/ROLE.N, with the multilink's mode and group, and
// connected to the client's socket; it returns the socket and its name in
// SOCKDIR. A name already taken (nobody but the daemon's user can write
// SOCKDIR, but a socket file may outlive its socket) is skipped for the
// next one. o is the socket's policy in the engine.
func (s *Server) dataSocket(role, peer string, o engine.Options) (*engine.FD, string, error) {
	var fd int
	var name string
	var err error
	for try := 0; try < 4096; try++ { // each taken name costs a failed bind
		name = fmt.Sprintf("%s.%d", role, s.seq.Add(1))
		fd, err = s.dataSocketRaw(name, peer)
		if !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(s.dir, name)
	p, err := s.eng.NewSocket(fd, path, o)
	if err != nil {
		s.sd.Unlink(name)
		return nil, "", err
	}
	if err := s.apply(name); err != nil {
		p.Close()
		s.sd.Unlink(name)
		return nil, "", err
	}
	return p, name, nil
}

// dataSocketRaw makes the socket, bound at name and connected, without
// applying permissions, and returns its descriptor.
func (s *Server) dataSocketRaw(name, peer string) (int, error) {
	at := s.at(name)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: at}); err != nil {
		unix.Close(fd) // the name is someone else's: leave it
		return -1, fmt.Errorf("bind %s: %w", filepath.Join(s.dir, name), err)
	}
	if err := connectPeer(fd, peer); err != nil {
		unix.Close(fd)
		s.sd.Unlink(name)
		return -1, err
	}
	return fd, nil
}

// connectPeer connects the data socket to the client's. A client of the
// daemon's own user may have made its socket 0700 or even 000 (qemu passes
// 0700); root connects anyway, an ordinary daemon cannot. As vde_switch
// users expect that to work, the daemon then lends itself write permission
// on that socket, which it may since it owns it, and which matters for the
// moment only: the client deletes the file once connected.
func connectPeer(fd int, peer string) error {
	err := unix.Connect(fd, &unix.SockaddrUnix{Name: peer})
	if err == unix.EACCES {
		var st unix.Stat_t
		if unix.Stat(peer, &st) == nil && st.Uid == uint32(os.Geteuid()) {
			if unix.Chmod(peer, (st.Mode&0o7777)|0o200) == nil {
				err = unix.Connect(fd, &unix.SockaddrUnix{Name: peer})
			}
		}
	}
	if err != nil {
		return fmt.Errorf("connect to %s: %w", peer, err)
	}
	return nil
}
