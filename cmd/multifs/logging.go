package main

import (
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	lsyslog "github.com/sirupsen/logrus/hooks/syslog"
	"golang.org/x/sys/unix"

	"multifs/control"
	"multifs/multilink/peertext"
)

// Every log line a peer or a local user can trigger (a bad handshake, a
// bad write to a close file, a runt frame at debug level) may come as fast
// as they can make it. Lines are therefore limited per (level, message):
// a burst of lineBurst, then linesPerSecond. The burst covers a legitimate
// crowd (hundreds of peers joining, or refused, at once); what is held
// back is counted in a repeated=N field on the next line let through.
// Messages are constant strings (peer text goes in fields), so the number
// of keys is small; maxLineKeys bounds it all the same.
const (
	lineBurst      = 300
	linesPerSecond = 5
	maxLineKeys    = 512
)

// slowLines are the events (control.EventField) of lines that repeat at
// each retry for as long as their cause lasts: once a second is enough to
// say it still does.
var slowLines = map[string]lineRate{
	control.EventAcceptFailed: {burst: 1, perSecond: 1},
}

// newLogger makes the daemon's logger: level and format from the options,
// every line escaped and rate-limited (safeFormatter), written to
// opts.logFile (an absolute path) or stderr. reopen opens the log file
// again, as logrotate's postrotate expects of SIGHUP; without a log file
// it does nothing.
func newLogger(opts *options) (logger *logrus.Logger, reopen func() error, err error) {
	log := logrus.New()
	lvl, _ := logrus.ParseLevel(opts.logLevel) // checked by parseArgs
	log.SetLevel(lvl)
	out := &logOutput{f: os.Stderr}
	if opts.logFile != "" {
		f, err := openLogFile(opts.logFile)
		if err != nil {
			return nil, nil, fmt.Errorf("log file %w", err)
		}
		out.f = f
	}
	var inner logrus.Formatter
	if opts.logFormat == "json" {
		inner = &logrus.JSONFormatter{}
	} else {
		// logrus colours only an *os.File that is a terminal, and the
		// output is wrapped now: say so ourselves.
		inner = &logrus.TextFormatter{ForceColors: opts.logFile == "" && isTerminal(os.Stderr)}
	}
	safe := newSafeFormatter(inner)
	safe.lim.emit = func(level logrus.Level, msg string, held int) {
		if b, err := inner.Format(summaryEntry(log, level, msg, held)); err == nil {
			out.Write(b)
		}
	}
	log.SetFormatter(safe)
	log.SetOutput(out)
	reopen = func() error { return nil }
	if opts.logFile != "" {
		path := opts.logFile
		reopen = func() error {
			f, err := openLogFile(path)
			if err != nil {
				log.WithError(err).Warn("cannot reopen the log file; still writing to the one open")
				return fmt.Errorf("log file %w", err)
			}
			out.swap(f)
			return nil
		}
	}
	return log, reopen, nil
}

// openLogFile opens path to append to it, creating it (0600) if missing,
// and checks the file it got, not the path: root must not append to
// whatever another user made path name. So path must not be a symbolic
// link (O_NOFOLLOW), and the file must be a regular file with one link
// (a hard link planted in /tmp is another file's second name), owned by
// the daemon's user or root. A refused path is neither created nor
// changed: O_NONBLOCK keeps a FIFO from blocking the open, O_NOCTTY a
// terminal from becoming ours, and nothing is written before the checks.
func openLogFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|
		unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0o600)
	if err != nil && isSymlink(path) {
		// ELOOP, or EACCES for O_CREAT on another user's link in a
		// sticky directory: either way, say what it is.
		err = unix.ELOOP
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%s: a symbolic link; give the file it points to, if that is meant", path)
	case errors.Is(err, unix.EISDIR):
		return nil, fmt.Errorf("%s: not a regular file (a directory)", path)
	case errors.Is(err, unix.ENXIO):
		// A FIFO without a reader, a socket, a device without a driver.
		return nil, fmt.Errorf("%s: not a regular file", path)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("%s: not a regular file (%s)", path, fileKind(st.Mode))
	case st.Uid != euid && st.Uid != 0:
		err = fmt.Errorf("%s: owned by uid %d, not by multifs's user (uid %d) or root", path, st.Uid, euid)
	case st.Nlink > 1:
		err = fmt.Errorf("%s: has %d hard links; a log file must have one", path, st.Nlink)
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

func isSymlink(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFDIR:
		return "a directory"
	}
	return fmt.Sprintf("type %#o", mode&unix.S_IFMT)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// logOutput is the logger's output: a file that reopen may swap, and that
// is not written to at all for a line the limiter held back (which logrus
// still writes, as zero bytes).
type logOutput struct {
	mu sync.Mutex
	f  *os.File
}

func (o *logOutput) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.f.Write(p)
}

// swap makes f the output and closes the previous one, once no line is
// being written to it.
func (o *logOutput) swap(f *os.File) {
	o.mu.Lock()
	old := o.f
	o.f = f
	o.mu.Unlock()
	if old != os.Stderr {
		old.Close()
	}
}

// safeFormatter wraps the text or JSON formatter so that no call site can
// forget what peer text needs: the message and every field value that is
// not a number or a boolean are escaped with peertext (one line of
// printable text, whatever the reader), and lines are rate-limited per
// (level, message), the ones held back counted in repeated=N.
//
// A logrus hook sees an entry before any formatter does: one (syslog, say)
// must get the same treatment by wrapping it in a Fire that calls guard
// on a lineLimiter of its own (the formatter's counts what it printed).
type safeFormatter struct {
	inner logrus.Formatter
	lim   *lineLimiter
}

func newSafeFormatter(inner logrus.Formatter) *safeFormatter {
	return &safeFormatter{inner: inner, lim: newLineLimiter(time.Now)}
}

func (f *safeFormatter) Format(e *logrus.Entry) ([]byte, error) {
	safe, ok := guard(e, f.lim)
	if !ok {
		return nil, nil
	}
	return f.inner.Format(safe)
}

// guard returns the entry as it may be shown, or false if the limiter
// holds it back. e itself is left alone.
func guard(e *logrus.Entry, lim *lineLimiter) (*logrus.Entry, bool) {
	event, _ := e.Data[control.EventField].(string)
	pass, held := lim.admit(e.Level, e.Message, event)
	if !pass {
		return nil, false
	}
	c := *e
	c.Data = make(logrus.Fields, len(e.Data)+1)
	for k, v := range e.Data {
		c.Data[peertext.Escape(k)] = safeValue(v)
	}
	if held > 0 {
		c.Data["repeated"] = held
	}
	c.Message = peertext.Escape(e.Message)
	return &c, true
}

// safeValue is v as it may be shown: numbers and booleans as they are,
// anything else as escaped text (a string, an error, a Stringer, any other
// value as fmt prints it).
func safeValue(v any) any {
	switch x := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return v
	case string:
		return peertext.Escape(x)
	case error:
		return peertext.Escape(x.Error())
	case fmt.Stringer:
		return peertext.Escape(x.String())
	}
	return peertext.Escape(fmt.Sprint(v))
}

// lineRate is a token bucket: burst lines at once, then perSecond.
type lineRate struct {
	burst, perSecond float64
}

type lineKey struct {
	level logrus.Level
	msg   string
}

type lineBucket struct {
	rate   lineRate
	tokens float64
	last   time.Time
	held   int       // lines held back since the last one let through
	heldAt time.Time // when the last of them was
}

// lineLimiter decides which lines go through: see lineBurst.
//
// Lines held back are not lost from the count: the next line of the same
// key let through says repeated=N, and a key that has held lines back and
// then stayed quiet for summaryDelay (a flood that just stopped) has them
// reported on a line of its own (the message, repeated=N, summary=true)
// through emit. So the log accounts for every event, a flood in progress
// adds no line, and an idle daemon has no timer running.
type lineLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	buckets map[lineKey]*lineBucket
	swept   time.Time
	emit    func(level logrus.Level, msg string, held int) // nil: no summaries
	pending bool                                           // a summary is scheduled
}

// summaryDelay is how long held-back counts wait for a line of their own
// key to carry them before a summary line does.
const summaryDelay = time.Second

func newLineLimiter(now func() time.Time) *lineLimiter {
	return &lineLimiter{now: now, buckets: make(map[lineKey]*lineBucket)}
}

// overflowMsg keys the bucket that lines of unknown messages share once
// maxLineKeys keys are in use (no message is empty).
const overflowMsg = ""

// admit reports whether a line may go through now, and if so how many of
// its key were held back since the last one that went; event (its
// control.EventField, "" if none) chooses its rate.
func (l *lineLimiter) admit(level logrus.Level, msg, event string) (bool, int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := lineKey{level, msg}
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= maxLineKeys && now.Sub(l.swept) >= time.Second {
			l.sweep(now)
		}
		r, ok := slowLines[event]
		if !ok {
			r = lineRate{burst: lineBurst, perSecond: linesPerSecond}
		}
		if len(l.buckets) >= maxLineKeys {
			k = lineKey{level, overflowMsg}
			r = lineRate{burst: lineBurst, perSecond: linesPerSecond}
			b = l.buckets[k]
		}
		if b == nil {
			b = &lineBucket{rate: r, tokens: r.burst, last: now}
			l.buckets[k] = b
		}
	}
	b.refill(now)
	if b.tokens < 1 {
		b.held++
		b.heldAt = now
		if l.emit != nil && !l.pending {
			l.pending = true
			time.AfterFunc(summaryDelay, l.summarize)
		}
		return false, 0
	}
	b.tokens--
	held := b.held
	b.held = 0
	return true, held
}

// summarize reports, through emit, every key that holds lines back and has
// been quiet for summaryDelay, clears their counts, and comes again for
// the keys still busy.
func (l *lineLimiter) summarize() {
	type heldLines struct {
		key  lineKey
		held int
	}
	var out []heldLines
	now := l.now()
	l.mu.Lock()
	next := time.Duration(0)
	for k, b := range l.buckets {
		if b.held == 0 {
			continue
		}
		if quiet := now.Sub(b.heldAt); quiet < summaryDelay {
			if wait := summaryDelay - quiet; next == 0 || wait < next {
				next = wait
			}
			continue
		}
		out = append(out, heldLines{k, b.held})
		b.held = 0
	}
	if next > 0 {
		time.AfterFunc(next, l.summarize)
	} else {
		l.pending = false
	}
	l.mu.Unlock()
	for _, h := range out {
		l.emit(h.key.level, h.key.msg, h.held)
	}
}

func (b *lineBucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.rate.burst, b.tokens+d.Seconds()*b.rate.perSecond)
	}
	b.last = now
}

// sweep forgets the keys whose bucket is full again and holds no count:
// a fresh bucket would behave the same. It runs once a second at most, so
// that a full map does not cost a walk per line.
func (l *lineLimiter) sweep(now time.Time) {
	l.swept = now
	for k, b := range l.buckets {
		b.refill(now)
		if b.held == 0 && b.tokens >= b.rate.burst {
			delete(l.buckets, k)
		}
	}
}

// useSyslog sends the log to the local syslog (/dev/log, which journald
// serves too) with the tag multifs, through logrus's syslog hook, and
// nowhere else: what a daemonized multifs without --log-file does. The
// hook sees each entry before any formatter, so it is wrapped to get the
// same escaping and rate limit (a limiter of its own) and a plain text
// line without a timestamp (syslog stamps it).
func useSyslog(log *logrus.Logger) error {
	inner, err := lsyslog.NewSyslogHook("", "", syslog.LOG_DAEMON|syslog.LOG_INFO, "multifs")
	if err != nil {
		return fmt.Errorf("syslog: %w", err)
	}
	text := logrus.New()
	text.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true})
	h := &guardedHook{inner: inner, lim: newLineLimiter(time.Now), text: text}
	h.lim.emit = func(level logrus.Level, msg string, held int) {
		inner.Fire(summaryEntry(text, level, msg, held))
	}
	log.AddHook(h)
	log.SetOutput(io.Discard)
	log.SetFormatter(nullFormatter{})
	return nil
}

// summaryEntry is the line that reports held lines of (level, msg) once
// their flood has stopped (lineLimiter.emit), already escaped: it goes
// straight to a formatter or hook, past guard.
func summaryEntry(log *logrus.Logger, level logrus.Level, msg string, held int) *logrus.Entry {
	e := logrus.NewEntry(log).WithFields(logrus.Fields{"repeated": held, "summary": true})
	e.Level, e.Message, e.Time = level, peertext.Escape(msg), time.Now()
	return e
}

// guardedHook passes an entry to its hook as guard lets it be shown.
type guardedHook struct {
	inner logrus.Hook
	lim   *lineLimiter
	text  *logrus.Logger // its formatter renders the line
}

func (h *guardedHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *guardedHook) Fire(e *logrus.Entry) error {
	safe, ok := guard(e, h.lim)
	if !ok {
		return nil
	}
	safe.Logger = h.text
	return h.inner.Fire(safe)
}

// nullFormatter renders nothing: the output is the hook's alone.
type nullFormatter struct{}

func (nullFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }
