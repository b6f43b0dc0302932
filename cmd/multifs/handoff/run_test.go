package handoff

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"multifs/fsys/treeclient"
	"multifs/fsys/treeclient/treetest"
)

// TestMain lets this test binary be a tree reader: a treeclient.Client starts
// one by re-executing /proc/self/exe, which is this binary here.
func TestMain(m *testing.M) {
	if treeclient.IsReader() {
		os.Exit(treeclient.ServeReader())
	}
	// The readers' exit need not sleep (race-enabled binaries do, 1 s).
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	os.Exit(m.Run())
}

// stuck is a trusted look-alike multifs (mounted by us) with link 1 open,
// whose link 2 joins with the pid COMMAND writes to pidFile, never carries
// a frame, and which blocks every read once link 2's stats were read
// twice: a mount that stops answering mid-hand-off.
func stuck(t *testing.T) (f *treetest.Fake, pidFile string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root here")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
	base := t.TempDir()
	dir := filepath.Join(base, "fake")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pidFile = filepath.Join(base, "pid")
	f, err := treetest.Mount(dir, treetest.Options{Links: []uint64{1}, NewPIDFile: pidFile, HangAfter: 2})
	if err != nil {
		t.Fatalf("mounting the fake: %v", err)
	}
	t.Cleanup(func() { f.Unmount() })
	return f, pidFile
}

// commandGone: COMMAND (its pid in pidFile) ran and is gone.
func commandGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("COMMAND wrote no pid: %v", err)
	}
	if p, err := ReadProc(pid); err == nil && p.State != 'Z' {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("COMMAND (pid %d) still running after Run returned", pid)
	}
}

// TestRunTreeStopsAnswering: the tree stops answering after the new link
// joined: Run fails at the Timeout, not later, with the reason, COMMAND
// ended, nothing written to the tree (OLD not closed).
func TestRunTreeStopsAnswering(t *testing.T) {
	f, pidFile := stuck(t)
	ctx := context.Background()
	c, err := treeclient.Start(ctx, f.Path)
	if err != nil {
		t.Fatalf("treeclient.Start: %v", err)
	}
	defer c.Close()
	t0 := time.Now()
	_, err = Run(ctx, Config{
		Tree: c, Old: 1, Timeout: time.Second,
		Command: []string{"sh", "-c", "echo $$ >" + pidFile + "; exec sleep 30"},
	})
	d := time.Since(t0)
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(e.Reason, "the tree stopped answering") || !strings.Contains(e.Reason, "before link 2 carried a frame") {
		t.Errorf("Run on a tree that stops answering: %v", err)
	}
	if d < time.Second || d > 4*time.Second {
		t.Errorf("Run returned after %v, want the 1s timeout and the clean-up", d)
	}
	if f.Blocked() == 0 {
		t.Error("the fake blocked nothing: the test tested nothing")
	}
	if n := f.Writes(); n != 0 {
		t.Errorf("%d writes reached the tree (OLD's close, or the new link's through a tree that does not answer)", n)
	}
	commandGone(t, pidFile)
}

// TestRunSignalWhileStuck: a signal (the context cancelled) while a read
// hangs ends Run at once, with the signal as the reason; COMMAND ended,
// OLD not closed.
func TestRunSignalWhileStuck(t *testing.T) {
	f, pidFile := stuck(t)
	c, err := treeclient.Start(context.Background(), f.Path)
	if err != nil {
		t.Fatalf("treeclient.Start: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var cancelled time.Time
	go func() {
		for deadline := time.Now().Add(10 * time.Second); f.Blocked() == 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		cancelled = time.Now()
		cancel(errors.New("interrupted by SIGTERM"))
	}()
	_, err = Run(ctx, Config{
		Tree: c, Old: 1, Timeout: 30 * time.Second,
		Command: []string{"sh", "-c", "echo $$ >" + pidFile + "; exec sleep 30"},
	})
	if f.Blocked() == 0 {
		t.Fatalf("the fake blocked nothing: %v", err)
	}
	d := time.Since(cancelled)
	var e *Error
	if !errors.As(err, &e) || !strings.HasPrefix(e.Reason, "interrupted by SIGTERM") {
		t.Errorf("Run cancelled while a read hangs: %v", err)
	}
	// The clean-up's close of the new link may wait EndWait at most, and
	// ending COMMAND takes a moment.
	if d > EndWait+2*time.Second {
		t.Errorf("Run returned %v after the cancel", d)
	}
	if slices.Contains(f.Closed(), 1) {
		t.Errorf("OLD closed: closes written %v", f.Closed())
	}
	commandGone(t, pidFile)
}

// TestRunTimeoutNotBlamedOnTree: a request the Timeout's deadline cuts
// short, having had a sliver of time, is the Timeout's failure, not the
// tree's: Run says COMMAND joined no link within the Timeout, not that
// the tree stopped answering (which a loaded machine made a hand-off say
// of a healthy multifs, its last poll given 4 ms).
func TestRunTimeoutNotBlamedOnTree(t *testing.T) {
	f, _ := stuck(t)
	c, err := treeclient.Start(context.Background(), f.Path)
	if err != nil {
		t.Fatalf("treeclient.Start: %v", err)
	}
	defer c.Close()
	const timeout = time.Second
	t0 := time.Now()
	// Link 2 never joins (COMMAND writes no pid); every request blocks from
	// 100 ms before the deadline, so the poll in flight then has at most
	// that long.
	hang := time.AfterFunc(timeout-100*time.Millisecond, f.Hang)
	defer hang.Stop()
	_, err = Run(context.Background(), Config{
		Tree: c, Old: 1, Timeout: timeout,
		Command: []string{"sh", "-c", "exec sleep 30"},
	})
	d := time.Since(t0)
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(e.Reason, "COMMAND joined no link within 1s") {
		t.Errorf("Run cut short by its Timeout: %v", err)
	}
	if d > 4*time.Second {
		t.Errorf("Run returned after %v, want the 1s timeout and the clean-up", d)
	}
	if f.Blocked() == 0 {
		t.Error("the fake blocked nothing: the test tested nothing")
	}
}
