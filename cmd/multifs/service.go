package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"multifs/control"
	"multifs/control/engine"
	"multifs/fsys"
	"multifs/fsys/mount"
	"multifs/multilink"
	"multifs/perms"
)

// service is one multilink being served: what start made, which stop
// undoes in reverse.
type service struct {
	log   *logrus.Entry
	sd    *control.SockDir
	point *mount.Point
	ml    *multilink.Multilink
	eng   *engine.Engine
	srv   *control.Server
	fuse  *fuse.Server
	mount *mount.Mount
}

// start sets everything up in an order that leaves nothing behind on
// failure, and returns once PATH is mounted and ctl accepts connections.
//
// The order matters for concurrent starts and hostile neighbours: the
// socket directory's lock comes first (two starts on one PATH share it, so
// only one of them goes on to create PATH), then PATH is checked and
// locked (a dead mount there is known by its dead connection), and only
// then does the socket directory lose what a dead multifs left in it
// (Take): a start refused for PATH changes nothing there. The mount goes on
// the directory held open (package mount), and the daemon knows its mount
// by id from then on.
func start(opts *options, log *logrus.Entry) (svc *service, err error) {
	p, err := perms.Resolve(opts.spec, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err != nil {
		return nil, err
	}
	allow, err := allowOther(p, os.Geteuid(), readFuseConf())
	if err != nil {
		return nil, err
	}
	sockdir := opts.sockdir
	if sockdir == "" {
		sockdir = control.DefaultSockDir(opts.path)
	}
	if err := checkApart(opts.path, sockdir); err != nil {
		return nil, err
	}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	s := &service{log: log}
	if s.sd, err = control.OpenSockDir(sockdir, p); err != nil {
		return nil, err
	}
	undo = append(undo, func() { s.sd.Remove() })
	if s.point, err = mount.Open(opts.path, "fuse.multifs", func(msg string) { log.Warn(msg) }); err != nil {
		return nil, err
	}
	undo = append(undo, s.point.Close)
	if err := s.sd.Take(p); err != nil {
		return nil, err
	}
	// A multifs killed with -9 cannot remove the mountpoint it made; it
	// said so in its lock, and this one removes it at its stop instead.
	createdLine := "mountpoint-created " + opts.path + "\n"
	if strings.Contains(s.sd.Stale(), createdLine) {
		s.point.Created = true
	}
	if s.point.Created {
		s.sd.Record(createdLine)
	}

	if s.eng, err = engine.New(); err != nil {
		return nil, err
	}
	undo = append(undo, func() { s.eng.Close() })
	s.ml = multilink.New(log, multilink.Dedup(opts.dedup))
	s.srv = control.NewServer(s.sd, p, s.ml, s.eng, log)
	if err := s.srv.Listen(); err != nil {
		return nil, err
	}
	undo = append(undo, s.srv.Close)
	if opts.tap != "" {
		tap, err := s.eng.OpenTap(opts.tap)
		if err != nil {
			return nil, err
		}
		if _, err := s.ml.AttachHost(engine.TapPeerInfo(opts.tap), tap, nil); err != nil {
			tap.Close()
			return nil, err
		}
		undo = append(undo, s.ml.Close)
	}

	cfg := fsys.Config{
		Multilink: s.ml, Perms: p, Log: log,
		LinkCtl: s.srv.LinkCtl(), HostCtl: s.srv.HostCtl(), LinkSeq: s.srv.LinkSeqpacket(), HostSeq: s.srv.HostSeqpacket(),
		HostVhost: s.srv.HostVhostUser(),
		FsName:    opts.path, AllowOther: allow,
	}
	if opts.source != "" {
		cfg.FsName = opts.source
	}
	for _, kv := range opts.noEffect {
		log.WithField("option", kv).Info("option of the reference's netnode: no effect on a multilink")
	}
	s.mount, err = s.point.Mount(mount.Options{FsName: cfg.FsName, Subtype: "multifs", AllowOther: allow}, func(mountpoint string) error {
		var err error
		s.fuse, err = fsys.Mount(mountpoint, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", opts.path, err)
	}
	s.srv.Serve()
	log.WithFields(logrus.Fields{"sockdir": sockdir, "pid": os.Getpid(), "version": version, "mount_id": s.mount.ID, "dedup": dedupString(opts.dedup)}).Info("serving")
	return s, nil
}

// stop ends the service: the peers, the mount, the socket directory.
//
// Peers first: every one sees EOF and exits. That matters beyond
// courtesy: a peer started with `ip netns exec` lives in a mount namespace
// holding its own copy of our mount, which keeps the FUSE connection alive
// until that peer is gone.
//
// A ptp (seqpacket) client of the newest vdeplug4 reconnects the moment
// it is hung up, and finding no entry it would bind one of its own at
// PATH/seqpacket, in the mountpoint once we are gone. So the listeners
// outlive the multilink a moment: a reconnect then gets the ack ESHUTDOWN
// (the multilink is closed), which ends the client.
func (s *service) stop() {
	ptp := seqpacketPeers(s.ml)
	s.ml.Close()
	if ptp > 0 {
		time.Sleep(ptpLinger)
	}
	s.srv.Close()
	s.eng.Close() // the peers' sockets are closed: it stops its goroutines
	unmount(s.fuse, s.mount, s.log)
	if err := s.sd.Remove(); err != nil {
		s.log.WithError(err).Warn("removing socket directory")
	}
	s.point.Close()
}

// ptpLinger is how long the seqpacket listeners stay up after the peers
// are hung up at a stop: a ptp client's reconnect comes within
// milliseconds.
const ptpLinger = 200 * time.Millisecond

// seqpacketPeers counts the peers joined through a seqpacket entry.
func seqpacketPeers(ml *multilink.Multilink) int {
	n := 0
	for _, p := range ml.Links() {
		if p.Info.Transport == "seqpacket" {
			n++
		}
	}
	if h := ml.Host(); h != nil && h.Info.Transport == "seqpacket" {
		n++
	}
	return n
}
