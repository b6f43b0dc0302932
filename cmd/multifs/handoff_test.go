package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"multifs/cmd/multifs/handoff"
	"multifs/fsys/treeclient"
	"multifs/fsys/treeclient/treetest"
)

func TestParseHandoff(t *testing.T) {
	for _, c := range []struct {
		args    []string
		path    string
		old     uint64
		timeout time.Duration
		overlap time.Duration
		command []string
	}{
		{[]string{"/tmp/vm1", "1", "--", "vde_plug", "/tmp/vm1", "/tmp/vm2"}, "/tmp/vm1", 1, handoff.DefaultTimeout, handoff.DefaultOverlap, []string{"vde_plug", "/tmp/vm1", "/tmp/vm2"}},
		{[]string{"--timeout", "2s", "/tmp/vm1", "12", "--", "sleep", "60"}, "/tmp/vm1", 12, 2 * time.Second, handoff.DefaultOverlap, []string{"sleep", "60"}},
		{[]string{"--timeout=1m30s", "--overlap=0", "p", "3", "--", "x"}, "p", 3, 90 * time.Second, 0, []string{"x"}},
		{[]string{"-timeout", "500ms", "-overlap", "2s", "p", "3", "--", "x"}, "p", 3, 500 * time.Millisecond, 2 * time.Second, []string{"x"}},
		{[]string{"p", "3", "--overlap", "1ms", "--", "x"}, "p", 3, handoff.DefaultTimeout, time.Millisecond, []string{"x"}},
		// COMMAND's own flags and "--" are its own.
		{[]string{"p", "3", "--", "vde_plug", "--", "p", "=", "ssh", "-p", "2222", "h", "--timeout", "9s", "-h"}, "p", 3, handoff.DefaultTimeout, handoff.DefaultOverlap,
			[]string{"vde_plug", "--", "p", "=", "ssh", "-p", "2222", "h", "--timeout", "9s", "-h"}},
	} {
		o, err := parseHandoff(c.args)
		if err != nil {
			t.Errorf("parseHandoff(%q): %v", c.args, err)
			continue
		}
		if o.path != c.path || o.old != c.old || o.timeout != c.timeout || o.overlap != c.overlap || !reflect.DeepEqual(o.command, c.command) || o.help {
			t.Errorf("parseHandoff(%q) = %+v", c.args, *o)
		}
	}
	if o, err := parseHandoff([]string{"-v", "p", "1", "--", "x"}); err != nil || !o.verbose {
		t.Errorf("-v: %+v, %v", o, err)
	}
	if o, err := parseHandoff([]string{"p", "1", "--", "x", "-v"}); err != nil || o.verbose {
		t.Errorf("COMMAND's -v taken as handoff's: %+v, %v", o, err)
	}
	if o, err := parseHandoff([]string{"--help"}); err != nil || !o.help {
		t.Errorf("--help: %+v, %v", o, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no --"},
		{[]string{"p", "1", "vde_plug", "p"}, "no --"},
		{[]string{"p", "--", "x"}, "got 1 argument"},
		{[]string{"p", "1", "2", "--", "x"}, "got 3 argument"},
		{[]string{"p", "1", "--"}, "no COMMAND"},
		{[]string{"p", "1", "--", ""}, "no COMMAND"},
		{[]string{"", "1", "--", "x"}, "PATH is empty"},
		{[]string{"p", "0", "--", "x"}, `OLD "0"`},
		{[]string{"p", "01", "--", "x"}, `OLD "01"`},
		{[]string{"p", "+1", "--", "x"}, `OLD "+1"`},
		{[]string{"p", "links/1", "--", "x"}, `OLD "links/1"`},
		{[]string{"p", "-1", "--", "x"}, "unknown flag -1"},
		{[]string{"--timeout", "0", "p", "1", "--", "x"}, `--timeout "0"`},
		{[]string{"--timeout", "-1s", "p", "1", "--", "x"}, `--timeout "-1s"`},
		{[]string{"--timeout", "10", "p", "1", "--", "x"}, `--timeout "10"`},
		{[]string{"--timeout=soon", "p", "1", "--", "x"}, `--timeout "soon"`},
		{[]string{"p", "1", "--timeout", "--", "x"}, "needs a duration"},
		{[]string{"p", "1", "sh", "-c", "x"}, "no --"},
		{[]string{"--dedup=off", "p", "1", "--", "x"}, "unknown flag --dedup=off"},
		{[]string{"---timeout", "1s", "p", "1", "--", "x"}, "unknown flag ---timeout"},
		{[]string{"--overlap", "-1s", "p", "1", "--", "x"}, `--overlap "-1s"`},
		{[]string{"--overlap", "x", "p", "1", "--", "x"}, `--overlap "x"`},
		{[]string{"p", "1", "--overlap", "--", "x"}, "needs a duration"},
	} {
		_, err := parseHandoff(c.args)
		if err == nil {
			t.Errorf("parseHandoff(%q) succeeded", c.args)
			continue
		}
		if !errors.Is(err, errUsage) {
			t.Errorf("parseHandoff(%q): %v is not a usage error", c.args, err)
		}
		if msg := trimUsage(err); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("parseHandoff(%q): %q, want one line saying %q", c.args, msg, c.want)
		}
	}
}

// TestHandoffStartsNothing: what validation refuses exits 2 before
// COMMAND runs (it would leave a file behind).
func TestHandoffStartsNothing(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	cmd := []string{"--", "sh", "-c", "touch " + marker}
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o600)
	for _, args := range [][]string{
		append([]string{dir, "1"}, cmd...),                          // not a multifs
		append([]string{notDir, "1"}, cmd...),                       // not a directory
		append([]string{filepath.Join(dir, "absent"), "1"}, cmd...), // not there
		append([]string{"--timeout", "0", dir, "1"}, cmd...),        // a bad duration
		append([]string{dir, "x"}, cmd...),                          // a bad OLD
	} {
		if rc := handoffMain(args); rc != 2 {
			t.Errorf("handoff %q: exit status %d, want 2", args, rc)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("COMMAND ran although the arguments were refused")
	}
}

// TestMain lets this test binary be a tree reader: handoffMain starts one
// by re-executing /proc/self/exe, which is this binary here.
func TestMain(m *testing.M) {
	if treeclient.IsReader() {
		os.Exit(treeclient.ServeReader())
	}
	// The readers' exit need not sleep (race-enabled binaries do, 1 s).
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	os.Exit(m.Run())
}

// stderrOf runs f with os.Stderr in a file, and returns what f wrote there.
func stderrOf(t *testing.T, f func()) string {
	t.Helper()
	tmp, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	saved := os.Stderr
	os.Stderr = tmp
	defer func() { os.Stderr = saved }()
	f()
	b, _ := os.ReadFile(tmp.Name())
	return string(b)
}

// TestHandoffOwner: a look-alike multifs whose mount says user_id 4242
// (neither root nor us) is refused with exit 2, one line naming the
// owner, COMMAND not run and not one request sent to it; the same
// look-alike mounted as ours is handed off on (exit 0, OLD's close
// written): the owner alone made the difference.
func TestHandoffOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE with another user_id needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
	for _, c := range []struct {
		owner uint32
		rc    int
	}{{4242, 2}, {uint32(os.Geteuid()), 0}} {
		base := t.TempDir()
		dir := filepath.Join(base, "fake")
		os.Mkdir(dir, 0o755)
		pidFile := filepath.Join(base, "pid")
		marker := filepath.Join(base, "started")
		owner := c.owner
		f, err := treetest.Mount(dir, treetest.Options{Links: []uint64{1}, NewPIDFile: pidFile, RX: 5, Owner: &owner, AllowOther: true})
		if err != nil {
			t.Fatalf("mounting the fake (user_id %d) on %s: %v", c.owner, dir, err)
		}
		t.Cleanup(func() { f.Unmount() })
		var rc int
		msg := stderrOf(t, func() {
			rc = handoffMain([]string{"--timeout", "5s", "--overlap", "0", dir, "1", "--",
				"sh", "-c", "echo $$ >" + pidFile + "; touch " + marker + "; exec sleep 30"})
		})
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		requests, closed := f.Requests(), f.Closed()
		f.Unmount()
		if rc != c.rc {
			t.Errorf("user_id %d: exit status %d, want %d (%q)", c.owner, rc, c.rc, msg)
		}
		_, err = os.Stat(marker)
		started := err == nil
		if c.rc == 2 {
			want := "multifs: handoff: " + dir + ": refused: mounted by uid 4242, neither root nor you"
			if !strings.HasPrefix(msg, want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("user_id 4242: stderr %q, want one line starting %q", msg, want)
			}
			if started || requests != 0 || len(closed) != 0 {
				t.Errorf("user_id 4242: COMMAND started %v, %d requests, closes %v", started, requests, closed)
			}
		} else if !started || !reflect.DeepEqual(closed, []uint64{1}) {
			t.Errorf("user_id %d: COMMAND started %v, closes %v, want OLD's", c.owner, started, closed)
		}
	}
}
