package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// TestLineLimiter: a burst goes through, then a line per 1/linesPerSecond,
// the first after a hold saying how many were held; keys are independent.
func TestLineLimiter(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newLineLimiter(clk.now, nil)
	for i := 0; i < lineBurst; i++ {
		if ok, held := l.admit(logrus.WarnLevel, "refused", false); !ok || held != 0 {
			t.Fatalf("line %d of the burst: %v, %d held", i, ok, held)
		}
	}
	for i := 0; i < 1000; i++ {
		if ok, _ := l.admit(logrus.WarnLevel, "refused", false); ok {
			t.Fatalf("line %d past the burst went through", i)
		}
	}
	if ok, _ := l.admit(logrus.InfoLevel, "refused", false); !ok {
		t.Fatal("another level is another key")
	}
	if ok, _ := l.admit(logrus.WarnLevel, "link joined", false); !ok {
		t.Fatal("another message is another key")
	}
	clk.t = clk.t.Add(time.Second / linesPerSecond)
	if ok, held := l.admit(logrus.WarnLevel, "refused", false); !ok || held != 1000 {
		t.Fatalf("after 1/%d s: %v, %d held; want through, 1000", linesPerSecond, ok, held)
	}
	if ok, _ := l.admit(logrus.WarnLevel, "refused", false); ok {
		t.Fatal("the refilled token was used twice")
	}
	clk.t = clk.t.Add(time.Hour)
	for i := 0; i < lineBurst; i++ {
		if ok, _ := l.admit(logrus.WarnLevel, "refused", false); !ok {
			t.Fatalf("after a quiet hour, line %d of a new burst held back", i)
		}
	}
}

// TestLineLimiterSlow: slow lines (accept failures, as the daemon's
// Options.Slow picks them) go through once a second, as the accept loop's
// own limiter let them before.
func TestLineLimiterSlow(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newLineLimiter(clk.now, nil)
	if ok, held := l.admit(logrus.WarnLevel, "accept failed", true); !ok || held != 0 {
		t.Fatalf("first: %v, %d held; want through, 0", ok, held)
	}
	for i := 1; i <= 99; i++ {
		clk.t = clk.t.Add(10 * time.Millisecond)
		if ok, _ := l.admit(logrus.WarnLevel, "accept failed", true); ok {
			t.Fatalf("failure %d, %d ms after the first, went through", i, i*10)
		}
	}
	clk.t = clk.t.Add(10 * time.Millisecond)
	if ok, held := l.admit(logrus.WarnLevel, "accept failed", true); !ok || held != 99 {
		t.Fatalf("a second later: %v, %d held; want through, 99", ok, held)
	}
}

// TestLineLimiterBounded: however many distinct messages, the limiter
// keeps at most maxLineKeys keys (plus one overflow key per level), and
// still limits the overflow.
func TestLineLimiterBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newLineLimiter(clk.now, nil)
	passed := 0
	for i := 0; i < 20000; i++ {
		msg := "m" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()
		if ok, _ := l.admit(logrus.WarnLevel, msg, false); ok {
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
	if ok, _ := l.admit(logrus.WarnLevel, "fresh", false); !ok {
		t.Fatal("a new message after an hour held back")
	}
	if _, ok := l.buckets[lineKey{logrus.WarnLevel, "fresh"}]; !ok {
		t.Fatal("idle keys were not swept for a new one")
	}
}

func testLogger(format string, buf *bytes.Buffer) *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	var inner logrus.Formatter = newTextFormatter(&logrus.TextFormatter{DisableColors: true})
	if format == "json" {
		inner = &logrus.JSONFormatter{}
	}
	l.SetFormatter(newSafeFormatter(inner, nil))
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

func logOpts(path string) Options {
	return Options{Level: "info", Format: "text", File: path}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOpenFile: a new file is created 0600; an existing regular file
// of ours is appended to; a symbolic link, a directory, a FIFO (with or
// without a reader) and a second hard link are refused, and neither the
// path nor what it leads to is changed.
func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "new.log")
	f, err := openFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("one\n")
	f.Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("a new log file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	f, err = openFile(fresh)
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
		if f, err := openFile(c.path); err == nil {
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
	if f, err := openFile(fifo); err == nil || !strings.Contains(err.Error(), "a FIFO") {
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
		if f, err := openFile(planted); err == nil {
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
		if f, err := openFile(theirs); err == nil {
			f.Close()
			t.Error("a file owned by uid 4242 was opened")
		} else if !strings.Contains(err.Error(), "owned by uid 4242") {
			t.Errorf("another user's file: %v", err)
		}
	}
}

// TestReopen: Reopen follows a rotation (the old file renamed away); a
// path that became unacceptable is refused, and the logger keeps writing
// to the file it has, saying so there.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.log")
	lg, err := New(logOpts(path))
	if err != nil {
		t.Fatal(err)
	}
	l := lg.Logger
	l.Info("before")
	os.Rename(path, path+".1")
	if err := lg.Reopen(); err != nil {
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
	if err := lg.Reopen(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("reopen onto a symlink: %v", err)
	}
	l.Info("still")
	if cur := mustRead(t, path+".2"); !strings.Contains(cur, "cannot reopen the log file") || !strings.Contains(cur, "still") {
		t.Fatalf("the file kept: %q", cur)
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Fatal("reopen created the symlink's target")
	}

	lg, err = New(logOpts(""))
	if err != nil || lg.Reopen() != nil {
		t.Fatalf("without a log file: %v, reopen must do nothing", err)
	}
	if _, err := New(logOpts(filepath.Join(dir, "sub-missing", "x.log"))); err == nil ||
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
		o.Format = format
		lg, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		l := lg.Logger
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

// peerText is what a peer may send, and what its escape must be: once,
// peertext's notation, in quotes that a logfmt reader unquotes the Go way
// back to what the peer sent.
const peerText = "vm\nlevel=error \"x\" a\\b"

// checkEscapedOnce: line (a text-format log line) carries peer=... shown
// with peertext's escapes once, and unquoting it gives peerText back.
func checkEscapedOnce(t *testing.T, line string) {
	t.Helper()
	if strings.Contains(line, `\\x0a`) {
		t.Errorf("peer text escaped twice: %q", line)
	}
	want := `peer="vm\x0alevel=error \"x\" a\\b"`
	if !strings.Contains(line, want) {
		t.Errorf("line lacks %s: %q", want, line)
	}
	m := regexp.MustCompile(`peer=("(?:[^"\\]|\\.)*")`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no quoted peer= in %q", line)
	}
	if got, err := strconv.Unquote(m[1]); err != nil || got != peerText {
		t.Errorf("unquoting %s: %q, %v; want %q", m[1], got, err, peerText)
	}
	if !strings.Contains(line, `msg="link joined"`) {
		t.Errorf("the message is not quoted as before: %q", line)
	}
}

func TestTextEscapedOnce(t *testing.T) {
	var buf bytes.Buffer
	l := testLogger("text", &buf)
	l.WithField("peer", peerText).WithField("pid", 7).WithField("transport", "vde").Info("link joined")
	line := buf.String()
	checkOneLine(t, line, 1)
	checkEscapedOnce(t, line)
	if !regexp.MustCompile(`^time="[^"]+" level=info msg="link joined" peer="[^\n]*" pid=7 transport=vde\n$`).MatchString(line) {
		t.Errorf("the line's shape changed: %q", line)
	}
}

// TestSyslogEscapedOnce: what reaches the syslog socket, through log/syslog
// and logrus's syslog hook, shows a peer's newline as \x0a, once.
func TestSyslogEscapedOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	lg, err := New(logOpts(""))
	if err != nil {
		t.Fatal(err)
	}
	l := lg.Logger
	if err := lg.toSyslogAt("unixgram", path); err != nil {
		t.Fatal(err)
	}
	l.WithField("peer", peerText).WithField("pid", 7).Warn("link joined")
	sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := sock.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line := string(buf[:n])
	if !strings.Contains(line, "multifs[") || !strings.Contains(line, "level=warning") {
		t.Fatalf("not the daemon's syslog line: %q", line)
	}
	checkEscapedOnce(t, line)
}

// retrying is an Options.Slow as the daemon's could be: it picks lines by
// a field, whatever their message says.
func retrying(e *logrus.Entry) bool { return e.Data["event"] == "retry" }

// TestSlowLines: the lines Options.Slow picks go through once a second,
// in the log file and in syslog alike; the others keep the burst. A bad
// level is refused in one line.
func TestSlowLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.log")
	sockPath := filepath.Join(dir, "syslog")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	toFile, err := New(Options{Level: "info", Format: "text", File: path, Slow: retrying})
	if err != nil {
		t.Fatal(err)
	}
	toSyslog, err := New(Options{Level: "info", Format: "text", Slow: retrying})
	if err != nil {
		t.Fatal(err)
	}
	if err := toSyslog.toSyslogAt("unixgram", sockPath); err != nil {
		t.Fatal(err)
	}
	logLines := func(l *logrus.Logger) time.Duration {
		start := time.Now()
		for i := 0; i < 5; i++ {
			l.WithField("event", "retry").Warn("accept failed")
			l.Warn("link joined")
		}
		l.Warn("done")
		return time.Since(start)
	}
	// A slow key's bucket holds one line and gets another each second
	// (the loop takes microseconds, unless the machine stalls it).
	took := logLines(toFile.Logger)
	out := mustRead(t, path)
	if n, want := strings.Count(out, `msg="accept failed"`), 1+int(took/time.Second); n != want {
		t.Errorf("log file: %d slow lines in %v, want %d: %q", n, took, want, out)
	}
	if n := strings.Count(out, `msg="link joined"`); n != 5 {
		t.Errorf("log file: %d other lines, want all 5: %q", n, out)
	}

	took = logLines(toSyslog.Logger)
	slow, other := 0, 0
	buf := make([]byte, 4096)
	for done := false; !done; {
		sock.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("syslog: %v after %d slow and %d other lines", err, slow, other)
		}
		line := string(buf[:n])
		slow += strings.Count(line, `msg="accept failed"`)
		other += strings.Count(line, `msg="link joined"`)
		done = strings.Contains(line, "msg=done")
	}
	if want := 1 + int(took/time.Second); slow != want || other != 5 {
		t.Errorf("syslog: %d slow lines in %v and %d others, want %d and 5", slow, took, other, want)
	}

	if _, err := New(Options{Level: "loud", Format: "text"}); err == nil ||
		!strings.HasPrefix(err.Error(), "log level ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("level loud: %v, want one line starting \"log level \"", err)
	}
}
