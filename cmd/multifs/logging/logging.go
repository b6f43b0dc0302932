// Package logging is the multifs daemon's log: a logrus logger that is
// safe to feed with what peers send. The command sets it up (New, from
// its options) and reopens it on SIGHUP; the daemon's packages (control,
// fsys, multilink) log through the *logrus.Entry they are given and never
// import this one, which is why it sits under cmd/multifs.
//
// What it guarantees, whatever a call site logs:
//
//   - One line per entry, printable: the message and every field value
//     that is not a number or a boolean are escaped with peertext, once
//     (format.go). Messages are constant strings; peer text goes in
//     fields.
//   - Bounded: lines are rate-limited per (level, message), a burst of
//     300 then 5 a second, and the lines held back are counted in a
//     repeated=N field on the next line of the same key, or on a summary
//     line of their own once the flood stops (limit.go). Lines that
//     Options.Slow picks (a failure repeated at each retry) go through
//     once a second.
//   - Written where it was asked: a log file opened without following a
//     symbolic link and checked by its descriptor (file.go), reopened by
//     Reopen (SIGHUP, as logrotate expects); stderr; or the local syslog
//     (syslog.go), with the same escaping and limits.
package logging

import (
	"fmt"
	"os"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Options say how and where to log.
type Options struct {
	Level  string // a logrus level name: trace, debug, info, warn, error
	Format string // "json", or anything else for logrus's text format
	File   string // an absolute path to append to; "" for stderr
	// Slow picks the lines that repeat at each retry for as long as their
	// cause lasts (an accept failing every 10 ms while descriptors run
	// out): once a second is enough to say it still does. nil picks none.
	// A line is still limited with the others of its level and message:
	// Slow sets the rate of that key, asked of the first line that makes
	// it.
	Slow func(*logrus.Entry) bool
}

// Log is the daemon's logger and the output it writes to.
type Log struct {
	Logger *logrus.Logger
	out    *output
	file   string
	slow   func(*logrus.Entry) bool
}

// New makes the daemon's logger: level and format from o, every line
// escaped and rate-limited, written to o.File or stderr. An error (a bad
// level, a refused log file) is one line, starting "log ".
func New(o Options) (*Log, error) {
	lvl, err := logrus.ParseLevel(o.Level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", o.Level, err)
	}
	log := logrus.New()
	log.SetLevel(lvl)
	out := &output{f: os.Stderr}
	if o.File != "" {
		f, err := openFile(o.File)
		if err != nil {
			return nil, fmt.Errorf("log file %w", err)
		}
		out.f = f
	}
	var inner logrus.Formatter
	if o.Format == "json" {
		inner = &logrus.JSONFormatter{}
	} else {
		// logrus colours only an *os.File that is a terminal, and the
		// output is wrapped now: say so ourselves.
		inner = newTextFormatter(&logrus.TextFormatter{ForceColors: o.File == "" && isTerminal(os.Stderr)})
	}
	safe := newSafeFormatter(inner, o.Slow)
	safe.lim.emit = func(level logrus.Level, msg string, held int) {
		if b, err := inner.Format(summaryEntry(log, level, msg, held)); err == nil {
			out.Write(b)
		}
	}
	log.SetFormatter(safe)
	log.SetOutput(out)
	return &Log{Logger: log, out: out, file: o.File, slow: o.Slow}, nil
}

// Reopen opens the log file again, as logrotate's postrotate expects of
// SIGHUP; without a log file it does nothing. If the path is refused now,
// the log goes on to the file already open, and says so there.
func (l *Log) Reopen() error {
	if l.file == "" {
		return nil
	}
	f, err := openFile(l.file)
	if err != nil {
		l.Logger.WithError(err).Warn("cannot reopen the log file; still writing to the one open")
		return fmt.Errorf("log file %w", err)
	}
	l.out.swap(f)
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// output is the logger's output: a file that Reopen may swap, and that is
// not written to at all for a line the limiter held back (which logrus
// still writes, as zero bytes).
type output struct {
	mu sync.Mutex
	f  *os.File
}

func (o *output) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.f.Write(p)
}

// swap makes f the output and closes the previous one, once no line is
// being written to it.
func (o *output) swap(f *os.File) {
	o.mu.Lock()
	old := o.f
	o.f = f
	o.mu.Unlock()
	if old != os.Stderr {
		old.Close()
	}
}
