package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"multifs/control"
	"multifs/fsys"
	"multifs/multilink"
	"multifs/perms"
)

// run serves the multilink until it is stopped. Errors before readiness are
// returned (and reach the parent's terminal); a clean stop returns nil.
func run(opts *options) error {
	notify := newReadyNotifier()
	err := serve(opts, notify)
	if err != nil {
		notify.fail(err)
	}
	return err
}

func newLogger(opts *options) (*logrus.Logger, error) {
	log := logrus.New()
	lvl, _ := logrus.ParseLevel(opts.logLevel) // checked by parseArgs
	log.SetLevel(lvl)
	if opts.logFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	}
	if opts.logFile != "" {
		f, err := os.OpenFile(opts.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		log.SetOutput(f)
	}
	return log, nil
}

// serve sets everything up in an order that leaves nothing behind on
// failure, reports ready, then waits for a stop.
func serve(opts *options, notify *readyNotifier) (err error) {
	logger, err := newLogger(opts)
	if err != nil {
		return err
	}
	log := logrus.NewEntry(logger).WithField("path", opts.path)

	p, err := perms.Resolve(opts.spec, uint32(os.Geteuid()), uint32(os.Getegid()))
	if err != nil {
		return err
	}
	if err := checkAllowOther(p); err != nil {
		return err
	}
	sockdir := opts.sockdir
	if sockdir == "" {
		sockdir = control.DefaultSockDir(opts.path)
	}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	created, err := prepareMountpoint(opts.path, sockdir, log)
	if err != nil {
		return err
	}
	if created {
		undo = append(undo, func() { os.Remove(opts.path) })
	}
	if err := control.CreateSockDir(sockdir, p); err != nil {
		return err
	}
	undo = append(undo, func() { control.RemoveSockDir(sockdir) })

	ml := multilink.New(log)
	srv := control.NewServer(sockdir, p, ml, log)
	if err := srv.Listen(); err != nil {
		return err
	}
	undo = append(undo, srv.Close)

	if opts.host != "" {
		name, _ := control.TapName(opts.host)
		tap, err := control.OpenTap(name)
		if err != nil {
			return err
		}
		if _, err := ml.AttachHost(control.TapPeerInfo(name), tap, nil); err != nil {
			tap.Close()
			return err
		}
		undo = append(undo, ml.Close)
	}
	fuseSrv, err := fsys.Mount(opts.path, fsys.Config{
		Multilink: ml, Perms: p, Log: log,
		LinkCtl: srv.LinkCtl(), HostCtl: srv.HostCtl(), LinkSeq: srv.LinkSeqpacket(), HostSeq: srv.HostSeqpacket(),
	})
	if err != nil {
		return fmt.Errorf("mount %s: %w", opts.path, err)
	}
	srv.Serve()
	log.WithFields(logrus.Fields{"sockdir": sockdir, "pid": os.Getpid(), "version": version}).Info("serving")
	notify.ready()

	waitForStop(fuseSrv, opts.path, log)

	// Peers first: every one sees EOF and exits. That matters beyond
	// courtesy: a peer started with `ip netns exec` lives in a mount
	// namespace holding its own copy of our mount, which keeps the FUSE
	// connection alive until that peer is gone.
	srv.Close()
	ml.Close()
	unmount(fuseSrv, opts.path, log)
	if err := control.RemoveSockDir(sockdir); err != nil {
		log.WithError(err).Warn("removing socket directory")
	}
	if created {
		if err := os.Remove(opts.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.WithError(err).Warn("removing mountpoint")
		}
	}
	log.Info("stopped")
	return nil
}

// waitForStop returns on SIGTERM or SIGINT, or once the mount is gone from
// outside (fusermount -u, umount). The FUSE server alone does not tell the
// latter while another mount namespace still holds a copy of the mount, so
// the mount table is looked at too, each time it changes.
func waitForStop(fuseSrv *fuse.Server, path string, log *logrus.Entry) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	served := make(chan struct{})
	go func() {
		fuseSrv.Wait()
		close(served)
	}()
	var changed <-chan struct{} // nil, never ready, without a watch
	if w, err := watchMounts(); err != nil {
		log.WithError(err).Warn("cannot watch the mount table: an unmount from outside stops multifs only once no mount namespace holds a copy")
	} else {
		defer w.Close()
		changed = w.C
	}
	for {
		// Looked at after the watch began, so an unmount just before it
		// is not missed.
		if _, mounted := mountType(path); !mounted {
			log.Info("unmounted from outside")
			return
		}
		select {
		case s := <-sigs:
			log.WithField("signal", s.String()).Info("stopping")
			return
		case <-served:
			log.Info("unmounted from outside")
			return
		case <-changed:
		}
	}
}

// unmount removes the mount if it is still there, retrying while it is busy
// (a shell cd'd into it) and then detaching it lazily, and waits a little
// for the FUSE server to finish. It does not use fuse.Server.Unmount, which
// waits without limit for the kernel connection to end: a copy of the mount
// in another mount namespace (any `ip netns exec` started after the mount)
// keeps it alive. Our exit ends the connection in any case.
func unmount(fuseSrv *fuse.Server, path string, log *logrus.Entry) {
	for i := 0; i < 10; i++ {
		if _, mounted := mountType(path); !mounted {
			break
		}
		err := unmountOnce(path)
		if err == nil {
			break
		}
		log.WithError(err).Debug("unmount failed; retrying")
		time.Sleep(100 * time.Millisecond)
	}
	if _, mounted := mountType(path); mounted {
		log.Warn("mount is busy: detaching it lazily")
		lazyUnmount(path, log)
	}
	done := make(chan struct{})
	go func() {
		fuseSrv.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		log.Info("another mount namespace still holds a copy of the mount; our exit ends it")
	}
}

func unmountOnce(path string) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(path, 0)
	}
	out, err := exec.Command("fusermount3", "-u", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func lazyUnmount(path string, log *logrus.Entry) {
	if err := unix.Unmount(path, unix.MNT_DETACH); err == nil {
		return
	}
	if out, err := exec.Command("fusermount3", "-uz", path).CombinedOutput(); err != nil {
		log.WithError(err).Warnf("lazy unmount: %s", strings.TrimSpace(string(out)))
	}
}

// prepareMountpoint checks PATH and creates it if missing. A multifs that
// died (kill -9) leaves a dead FUSE mount: it is detached here, since
// nothing answers on its socket directory.
func prepareMountpoint(path, sockdir string, log *logrus.Entry) (created bool, err error) {
	if fstype, ok := mountType(path); ok {
		if fstype != "fuse.multifs" {
			return false, fmt.Errorf("%s: already a mount point (%s)", path, fstype)
		}
		if control.Alive(sockdir) {
			return false, fmt.Errorf("%s: already served by a live multifs", path)
		}
		log.Warn("detaching the stale mount of a multifs that died")
		lazyUnmount(path, log)
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(path, 0o700); err != nil {
			return false, fmt.Errorf("creating mountpoint: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("%s: %w", path, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		// Mounting would follow it: in /tmp, to wherever its owner chose.
		return false, fmt.Errorf("%s: a symbolic link; give the directory it points to, if that is meant", path)
	case !fi.IsDir():
		return false, fmt.Errorf("%s: not a directory", path)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if len(entries) > 0 {
		return false, fmt.Errorf("%s: directory not empty (holds %s)", path, entries[0].Name())
	}
	return false, nil
}

// checkAllowOther fails early, in words, where fusermount3 would refuse
// allow_other: a non-root daemon whose modes let other users in needs
// user_allow_other in /etc/fuse.conf.
func checkAllowOther(p perms.Perms) error {
	if !p.NeedsAllowOther() || os.Geteuid() == 0 {
		return nil
	}
	b, err := os.ReadFile("/etc/fuse.conf")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(line) == "user_allow_other" {
				return nil
			}
		}
	}
	return fmt.Errorf("mode %04o/dirmode %04o gives other users access, which needs the FUSE option allow_other, "+
		"and /etc/fuse.conf does not contain user_allow_other (add it, or run as root)", p.Mode, p.Dirmode)
}
