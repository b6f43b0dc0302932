package control

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/control/vhostuser"
	"multifs/multilink"
)

// The vhost-user entry: SOCKDIR/host.vhost-user, where a vhost-user
// frontend (QEMU's -netdev vhost-user, libvirt's <interface
// type='vhostuser'>, DPDK's virtio_user) connects to attach a VM as the
// host. multifs is the backend: package vhostuser serves the connection
// and moves frames through the guest's own rings.

// HostVhostUserName is the vhost-user entry's name in the socket
// directory.
const HostVhostUserName = "host.vhost-user"

// HostVhostUser is the path of the vhost-user entry.
func (s *Server) HostVhostUser() string { return filepath.Join(s.dir, HostVhostUserName) }

// listenVhostUser creates the entry's listening socket.
func (s *Server) listenVhostUser() error {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.at(HostVhostUserName), Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.HostVhostUser(), err)
	}
	s.vhostListener = l
	return s.apply(HostVhostUserName)
}

// joinVhostUser admits a frontend as the host, then serves its requests
// until it goes, which ends the host.
func (s *Server) joinVhostUser(c *net.UnixConn) {
	log := s.log.WithFields(logrus.Fields{"role": "host", "transport": "vhost-user"})
	cred, err := peerCred(c)
	if err != nil {
		log.WithError(err).Warn("refused: no peer credentials")
		c.Close()
		return
	}
	log = log.WithFields(logrus.Fields{"pid": cred.Pid, "uid": cred.Uid})
	if vhostuser.Blocked() {
		log.Warn("refused: too many vhost-user call signals blocked by their frontends")
		c.Close()
		return
	}
	vc, err := vhostuser.New(c, log)
	if err != nil {
		log.WithError(err).Warn("refused")
		c.Close()
		return
	}
	info := multilink.PeerInfo{Transport: "vhost-user", PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, Since: time.Now()}
	port, err := s.ml.Admit(true, info, vc, nil, nil)
	if err != nil {
		if errors.Is(err, multilink.ErrHostAttached) {
			log.Warn("refused: a host is already attached")
		} else {
			log.WithError(err).Warn("refused")
		}
		vc.Close()
		return
	}
	go func() {
		err := vc.Serve()
		log.WithError(err).Debug("vhost-user: frontend gone")
		port.Leave()
	}()
}
