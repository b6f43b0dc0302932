package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"multifs/cmd/multifs/logging"
	"multifs/control"
	"multifs/fsys/mount"
)

// run serves the multilink until it is stopped. Errors before readiness are
// returned (and reach the parent's terminal); a clean stop returns nil.
func run(opts *options) error {
	// Caught from the start: a SIGTERM while setting up stops cleanly at
	// the end of the setup; SIGHUP (a terminal's hang-up, logrotate) and
	// SIGPIPE (stderr a pipe whose reader left) never kill the daemon.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	defer signal.Stop(sigs)
	notify := newReadyNotifier()
	err := serve(opts, notify, sigs)
	if err != nil {
		notify.fail(err)
	}
	return err
}

// serve starts the service (see start), reports ready, waits for a stop,
// and stops it. Errors before readiness are returned.
func serve(opts *options, notify *readyNotifier, sigs <-chan os.Signal) error {
	lg, err := logging.New(logging.Options{Level: opts.logLevel, Format: opts.logFormat, File: opts.logFile, Slow: slowLine})
	if err != nil {
		return err
	}
	if notify.daemon() && opts.logFile == "" {
		// Daemonized, stderr is gone: the log goes where people look.
		if err := lg.ToSyslog(); err != nil {
			notify.warn(fmt.Sprintf("%v: the daemon's log is discarded; give --log-file FILE to keep it", err))
			lg.Logger.SetOutput(io.Discard)
		}
	}
	log := logrus.NewEntry(lg.Logger).WithField("path", opts.path)
	svc, err := start(opts, log)
	if err != nil {
		return err
	}
	notify.ready()
	if opts.foreground {
		systemdNotify(daemon.SdNotifyReady, log)
	}
	waitForStop(sigs, svc.fuse, svc.mount, lg.Reopen, log)
	if opts.foreground {
		systemdNotify(daemon.SdNotifyStopping, log)
	}
	svc.stop()
	log.Info("stopped")
	return nil
}

// slowLine picks the log lines that repeat at each retry for as long as
// their cause lasts, which the log lets through once a second
// (logging.Options.Slow): an accept failing every 10 ms while the daemon
// is out of descriptors.
func slowLine(e *logrus.Entry) bool { return e.Data[control.EventField] == control.EventAcceptFailed }

// systemdNotify tells systemd (a Type=notify unit runs multifs -f with
// NOTIFY_SOCKET set) of readiness or a stop; without NOTIFY_SOCKET it does
// nothing.
func systemdNotify(state string, log *logrus.Entry) {
	if sent, err := daemon.SdNotify(false, state); err != nil {
		log.WithError(err).Warn("cannot notify systemd")
	} else if sent {
		log.WithField("state", state).Debug("notified systemd")
	}
}

// checkApart refuses a socket directory that is PATH, inside it, or holds
// it: the mount would hide the sockets, or the sockets' clean-up reach
// into the mount.
func checkApart(path, sockdir string) error {
	inside := func(a, b string) bool { // a is b or below it
		rel, err := filepath.Rel(resolved(b), resolved(a))
		return err == nil && (rel == "." || (rel != ".." && !strings.HasPrefix(rel, "../")))
	}
	switch {
	case inside(sockdir, path):
		return fmt.Errorf("--sockdir %s is inside PATH %s: the mount would hide it; put it beside PATH", sockdir, path)
	case inside(path, sockdir):
		return fmt.Errorf("PATH %s is inside --sockdir %s; put the socket directory beside PATH", path, sockdir)
	}
	return nil
}

// resolved is p with the symbolic links of its longest existing prefix
// resolved: what the kernel will reach, as far as that can be told before
// the rest exists (/a/alias/vm/sub is /a/real/vm/sub).
func resolved(p string) string {
	rest := ""
	for cur := filepath.Clean(p); ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// waitForStop returns on SIGTERM or SIGINT, or once the mount is gone from
// outside (fusermount -u, umount). The FUSE server alone does not tell the
// latter while another mount namespace still holds a copy of the mount, so
// the mount table is looked at too, each time it changes, for our mount's
// id. SIGHUP reopens the log file and nothing else.
func waitForStop(sigs <-chan os.Signal, fuseSrv *fuse.Server, m *mount.Mount, reopen func() error, log *logrus.Entry) {
	served := make(chan struct{})
	go func() {
		fuseSrv.Wait()
		close(served)
	}()
	var changed <-chan struct{} // nil, never ready, without a watch
	if w, err := mount.WatchMounts(); err != nil {
		log.WithError(err).Warn("cannot watch the mount table: an unmount from outside stops multifs only once no mount namespace holds a copy")
	} else {
		defer w.Close()
		changed = w.C
	}
	var recheck <-chan time.Time // while the table cannot be read
	for {
		// Looked at after the watch began, so an unmount just before it
		// is not missed.
		switch ok, err := m.Mounted(); {
		case err != nil:
			// Out of descriptors, say, which a peer can bring about:
			// that tells nothing about the mount. Look again soon.
			if recheck == nil {
				log.WithError(err).Warn("cannot read the mount table; looking again every second")
			}
			recheck = time.After(time.Second)
		case !ok:
			log.Info("unmounted from outside")
			return
		default:
			recheck = nil
		}
		select {
		case <-recheck:
		case s := <-sigs:
			if s == syscall.SIGHUP {
				// A failure is logged by reopen, to the file still open.
				if reopen() == nil {
					log.Info("SIGHUP: log file reopened")
				}
				continue
			}
			log.WithField("signal", s.String()).Info("stopping")
			return
		case <-served:
			log.Info("unmounted from outside")
			return
		case <-changed:
		}
	}
}

// unmount removes our mount if it is still there (see mount.Unmount) and
// waits a little for the FUSE server to finish. It does not use
// fuse.Server.Unmount, which waits without limit for the kernel connection
// to end: a copy of the mount in another mount namespace (any `ip netns
// exec` started after the mount) keeps it alive. Our exit ends the
// connection in any case.
func unmount(fuseSrv *fuse.Server, m *mount.Mount, log *logrus.Entry) {
	lazy, err := m.Unmount(func(err error) { log.WithError(err).Debug("unmount failed; retrying") })
	switch {
	case err != nil:
		log.WithError(err).Error("cannot unmount")
	case lazy:
		log.Warn("mount is busy: detaching it lazily")
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
