package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"multifs/control"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// TestLineLimiter: a burst goes through, then a line per 1/linesPerSecond,
// the first after a hold saying how many were held; keys are independent.
func TestLineLimiter(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newLineLimiter(clk.now)
	for i := 0; i < lineBurst; i++ {
		if ok, held := l.admit(logrus.WarnLevel, "refused", ""); !ok || held != 0 {
			t.Fatalf("line %d of the burst: %v, %d held", i, ok, held)
		}
	}
	for i := 0; i < 1000; i++ {
		if ok, _ := l.admit(logrus.WarnLevel, "refused", ""); ok {
			t.Fatalf("line %d past the burst went through", i)
		}
	}
	if ok, _ := l.admit(logrus.InfoLevel, "refused", ""); !ok {
		t.Fatal("another level is another key")
	}
	if ok, _ := l.admit(logrus.WarnLevel, "link joined", ""); !ok {
		t.Fatal("another message is another key")
	}
	clk.t = clk.t.Add(time.Second / linesPerSecond)
	if ok, held := l.admit(logrus.WarnLevel, "refused", ""); !ok || held != 1000 {
		t.Fatalf("after 1/%d s: %v, %d held; want through, 1000", linesPerSecond, ok, held)
	}
	if ok, _ := l.admit(logrus.WarnLevel, "refused", ""); ok {
		t.Fatal("the refilled token was used twice")
	}
	clk.t = clk.t.Add(time.Hour)
	for i := 0; i < lineBurst; i++ {
		if ok, _ := l.admit(logrus.WarnLevel, "refused", ""); !ok {
			t.Fatalf("after a quiet hour, line %d of a new burst held back", i)
		}
	}
}

// TestLineLimiterSlow: accept failures go through once a second, as the
// accept loop's own limiter let them before.
func TestLineLimiterSlow(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newLineLimiter(clk.now)
	if ok, held := l.admit(logrus.WarnLevel, "accept failed", control.EventAcceptFailed); !ok || held != 0 {
		t.Fatalf("first: %v, %d held; want through, 0", ok, held)
	}
	for i := 1; i <= 99; i++ {
		clk.t = clk.t.Add(10 * time.Millisecond)
		if ok, _ := l.admit(logrus.WarnLevel, "accept failed", control.EventAcceptFailed); ok {
			t.Fatalf("failure %d, %d ms after the first, went through", i, i*10)
		}
	}
	clk.t = clk.t.Add(10 * time.Millisecond)
	if ok, held := l.admit(logrus.WarnLevel, "accept failed", control.EventAcceptFailed); !ok || held != 99 {
		t.Fatalf("a second later: %v, %d held; want through, 99", ok, held)
	}
}

// TestLineLimiterBounded: however many distinct messages, the limiter
// keeps at most maxLineKeys keys (plus one overflow key per level), and
// still limits the overflow.
func TestLineLimiterBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newLineLimiter(clk.now)
	passed := 0
	for i := 0; i < 20000; i++ {
		msg := "m" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()
		if ok, _ := l.admit(logrus.WarnLevel, msg, ""); ok {
			passed++
		}
	}
	if n := len(l.buckets); n > maxLineKeys+1 {
		t.Fatalf("%d keys kept, more than %d+1", n, maxLineKeys)
	}
	if max := maxLineKeys + lineBurst; passed > max {
		t.Fatalf("%d distinct lines went through at once, more than %d", passed, max)
	}
	// Once the buckets are full again they are forgotten and new keys fit.
	clk.t = clk.t.Add(time.Hour)
	if ok, _ := l.admit(logrus.WarnLevel, "fresh", ""); !ok {
		t.Fatal("a new message after an hour held back")
	}
	if _, ok := l.buckets[lineKey{logrus.WarnLevel, "fresh"}]; !ok {
		t.Fatal("idle keys were not swept for a new one")
	}
}

func testLogger(format string, buf *bytes.Buffer) *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	var inner logrus.Formatter = &logrus.TextFormatter{DisableColors: true}
	if format == "json" {
		inner = &logrus.JSONFormatter{}
	}
	l.SetFormatter(newSafeFormatter(inner))
	l.SetOutput(buf)
	return l
}

const hostile = "$(id>/tmp/x)\nlevel=error msg=forged\n\x1b[2J\u0085\u2028\u2029\u202e\xff"

// checkOneLine: out is whole lines, none holding a control character, a
// Unicode line or paragraph separator or invalid UTF-8, and none forged.
func checkOneLine(t *testing.T, out string, lines int) {
	t.Helper()
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != lines {
		t.Fatalf("want %d lines, got %q", lines, out)
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		for _, r := range line {
			if r == utf8.RuneError || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
				t.Fatalf("%U in %q", r, line)
			}
		}
		if strings.HasPrefix(line, "level=error") {
			t.Fatalf("forged line %q", line)
		}
	}
}

func TestSafeFormatter(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		l := testLogger(format, &buf)
		e := logrus.NewEntry(l).WithFields(logrus.Fields{"peer": hostile, "pid": 42, "ok": true})
		e.WithError(errors.New("/tmp/sock" + hostile + ": no such file")).Warn("refused: bad data socket")
		e.Info("message " + hostile)
		e.WithField("since", 3*time.Second).Info("stringer")
		out := buf.String()
		checkOneLine(t, out, 3)
		if format == "text" && !strings.Contains(out, "$(id>/tmp/x)") {
			t.Errorf("%s: printable text should stay as it is: %q", format, out)
		}
		if format == "json" {
			for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("json line %d: %v: %q", i, err, line)
				}
				if i == 0 {
					if m["pid"] != float64(42) || m["ok"] != true {
						t.Errorf("numbers and booleans must stay so: %v", m)
					}
					if p, _ := m["peer"].(string); !strings.HasPrefix(p, `$(id>/tmp/x)\x0alevel=error`) || !strings.Contains(p, `\u0085\u2028\u2029\u202e\xff`) {
						t.Errorf("peer not escaped as peertext does: %q", p)
					}
				}
			}
		}
	}
}

// TestSafeFormatterRepeated: past the burst, lines are held back, and the
// next one let through counts them.
func TestSafeFormatterRepeated(t *testing.T) {
	var buf bytes.Buffer
	l := testLogger("text", &buf)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l.Formatter.(*safeFormatter).lim.now = clk.now
	for i := 0; i < lineBurst+50; i++ {
		l.WithField("len", 1).Debug("dropping frame of bad size")
	}
	if n := strings.Count(buf.String(), "\n"); n != lineBurst {
		t.Fatalf("%d lines, want the burst of %d", n, lineBurst)
	}
	clk.t = clk.t.Add(time.Second)
	l.WithField("len", 1).Debug("dropping frame of bad size")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, " repeated=50") {
		t.Fatalf("last line %q lacks repeated=50", last)
	}
}

func logOpts(path string) *options {
	return &options{logLevel: "info", logFormat: "text", logFile: path}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOpenLogFile: a new file is created 0600; an existing regular file
// of ours is appended to; a symbolic link, a directory, a FIFO (with or
// without a reader) and a second hard link are refused, and neither the
// path nor what it leads to is changed.
func TestOpenLogFile(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "new.log")
	f, err := openLogFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("one\n")
	f.Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("a new log file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	f, err = openLogFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("two\n")
	f.Close()
	if got := mustRead(t, fresh); got != "one\ntwo\n" {
		t.Fatalf("appending: %q", got)
	}

	target := filepath.Join(dir, "precious")
	os.WriteFile(target, []byte("keep\n"), 0o644)
	link := filepath.Join(dir, "link.log")
	os.Symlink(target, link)
	dangling := filepath.Join(dir, "dangling.log")
	os.Symlink(filepath.Join(dir, "nothing"), dangling)
	hard := filepath.Join(dir, "hard.log")
	os.Link(target, hard)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o600)

	for _, c := range []struct{ path, want string }{
		{link, "a symbolic link"},
		{dangling, "a symbolic link"},
		{hard, "has 2 hard links"},
		{sub, "not a regular file"},
		{fifo, "not a regular file"},
	} {
		if f, err := openLogFile(c.path); err == nil {
			f.Close()
			t.Errorf("%s opened", c.path)
		} else if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %q, want one line saying %q", c.path, err, c.want)
		}
	}
	// A FIFO with a reader opens at once: fstat must refuse it, too.
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if f, err := openLogFile(fifo); err == nil || !strings.Contains(err.Error(), "a FIFO") {
		if f != nil {
			f.Close()
		}
		t.Errorf("FIFO with a reader: %v", err)
	}
	if got := mustRead(t, target); got != "keep\n" {
		t.Fatalf("the link's target changed: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nothing")); err == nil {
		t.Fatal("the dangling link's target was created")
	}

	if os.Geteuid() == 0 {
		// Another user's link in a sticky directory, as in /tmp: the
		// kernel says EACCES to O_CREAT there, not ELOOP.
		sticky := filepath.Join(dir, "sticky")
		os.Mkdir(sticky, 0o1777)
		os.Chmod(sticky, 0o1777)
		planted := filepath.Join(sticky, "planted.log")
		os.Symlink(target, planted)
		os.Lchown(planted, 4242, 4242)
		if f, err := openLogFile(planted); err == nil {
			f.Close()
			t.Error("another user's symlink in a sticky directory was followed")
		} else if !strings.Contains(err.Error(), "a symbolic link") {
			t.Errorf("another user's symlink in a sticky directory: %v", err)
		}
		if got := mustRead(t, target); got != "keep\n" {
			t.Fatalf("the planted link's target changed: %q", got)
		}

		theirs := filepath.Join(dir, "theirs.log")
		os.WriteFile(theirs, nil, 0o666)
		os.Chown(theirs, 4242, 4242)
		if f, err := openLogFile(theirs); err == nil {
			f.Close()
			t.Error("a file owned by uid 4242 was opened")
		} else if !strings.Contains(err.Error(), "owned by uid 4242") {
			t.Errorf("another user's file: %v", err)
		}
	}
}

// TestReopen: reopen follows a rotation (the old file renamed away); a
// path that became unacceptable is refused, and the logger keeps writing
// to the file it has, saying so there.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.log")
	l, reopen, err := newLogger(logOpts(path))
	if err != nil {
		t.Fatal(err)
	}
	l.Info("before")
	os.Rename(path, path+".1")
	if err := reopen(); err != nil {
		t.Fatal(err)
	}
	l.Info("after")
	if old := mustRead(t, path+".1"); !strings.Contains(old, "before") || strings.Contains(old, "after") {
		t.Fatalf("rotated file: %q", old)
	}
	if cur := mustRead(t, path); !strings.Contains(cur, "after") || strings.Contains(cur, "before") {
		t.Fatalf("reopened file: %q", cur)
	}

	os.Rename(path, path+".2")
	os.Symlink(filepath.Join(dir, "elsewhere"), path)
	if err := reopen(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("reopen onto a symlink: %v", err)
	}
	l.Info("still")
	if cur := mustRead(t, path+".2"); !strings.Contains(cur, "cannot reopen the log file") || !strings.Contains(cur, "still") {
		t.Fatalf("the file kept: %q", cur)
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Fatal("reopen created the symlink's target")
	}

	_, reopen, err = newLogger(logOpts(""))
	if err != nil || reopen() != nil {
		t.Fatalf("without a log file: %v, reopen must do nothing", err)
	}
	if _, _, err := newLogger(logOpts(filepath.Join(dir, "sub-missing", "x.log"))); err == nil ||
		!strings.HasPrefix(err.Error(), "log file ") {
		t.Fatalf("an unopenable log file: %v", err)
	}
}

// TestHeldLinesAreSummarized: a flood that just stops is still accounted
// for. The lines written plus the repeated=N counts (on the lines let
// through, and on the summary line that comes a second later) add up to
// every line logged, in both formats.
func TestHeldLinesAreSummarized(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		path := filepath.Join(t.TempDir(), "m.log")
		o := logOpts(path)
		o.logFormat = format
		l, _, err := newLogger(o)
		if err != nil {
			t.Fatal(err)
		}
		const n = lineBurst + 1234
		for i := 0; i < n; i++ {
			l.WithField("i", i).Info("link joined")
		}
		lines, total, summaries := 0, 0, 0
		deadline := time.Now().Add(3 * time.Second)
		for {
			lines, total, summaries = 0, 0, 0
			for _, line := range strings.Split(strings.TrimSpace(mustRead(t, path)), "\n") {
				var rep int
				var summary bool
				if format == "json" {
					var m struct {
						Repeated int  `json:"repeated"`
						Summary  bool `json:"summary"`
					}
					json.Unmarshal([]byte(line), &m)
					rep, summary = m.Repeated, m.Summary
				} else {
					if i := strings.Index(line, " repeated="); i >= 0 {
						fmt.Sscanf(line[i:], " repeated=%d", &rep)
					}
					summary = strings.Contains(line, " summary=true")
				}
				if summary {
					summaries++
				} else {
					lines++
				}
				total += rep
			}
			if lines+total == n || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if lines+total != n || summaries != 1 || lines > lineBurst+linesPerSecond*3 {
			t.Errorf("%s: %d lines + %d repeated (%d summary lines), want %d in all, one summary, at most %d lines",
				format, lines, total, summaries, n, lineBurst+linesPerSecond*3)
		}
	}
}

// TestGuardKnowsSlowLinesByEvent: the formatter's guard finds a slow line
// by its event field, whatever its message says; the same message without
// the event gets the ordinary burst.
func TestGuardKnowsSlowLinesByEvent(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	lim := newLineLimiter(clk.now)
	log := logrus.New()
	slow := logrus.NewEntry(log).WithField(control.EventField, control.EventAcceptFailed)
	slow.Level, slow.Message = logrus.WarnLevel, "the words may change"
	if _, ok := guard(slow, lim); !ok {
		t.Fatal("the first slow line was held")
	}
	if _, ok := guard(slow, lim); ok {
		t.Fatal("a second slow line in the same instant went through")
	}
	plain := logrus.NewEntry(log).WithField("other", 1)
	plain.Level, plain.Message = logrus.WarnLevel, "the words may change, plainly"
	for i := 0; i < 3; i++ {
		if _, ok := guard(plain, lim); !ok {
			t.Fatalf("line %d without the event was held", i+1)
		}
	}
}
