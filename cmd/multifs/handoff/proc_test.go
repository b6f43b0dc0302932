package handoff

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		line string
		want Proc
	}{
		{"4242 (vde_plug) S 4200 4242 4242 34816 ...", Proc{'S', 4200, 4242, 4242}},
		// A process names itself: spaces and parentheses in comm.
		{"17 (a) b) (c d) R 1 17 9 0 -1", Proc{'R', 1, 17, 9}},
		{"5 () Z 3 4 4", Proc{'Z', 3, 4, 4}},
	} {
		got, err := ParseStat([]byte(c.line))
		if err != nil || got != c.want {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "12 (x S 1 2 3", "12 (x) S 1 2", "12 (x) S one 2 3", "12 (x) SS 1 2 3"} {
		if p, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) = %+v, want an error", bad, p)
		}
	}
}

// table is a process table for Descends: pid -> what /proc would say.
type table map[int]Proc

func (tb table) read(pid int) (Proc, error) {
	if p, ok := tb[pid]; ok {
		return p, nil
	}
	return Proc{}, os.ErrNotExist
}

func TestDescends(t *testing.T) {
	const cmd = 100
	tb := table{
		cmd:        {'S', 50, cmd, cmd},
		101:        {'S', cmd, cmd, cmd}, // COMMAND's child
		102:        {'S', 101, cmd, cmd}, // its grandchild
		103:        {'S', 1, 103, cmd},   // orphaned, still in the session
		104:        {'S', 102, 104, 104}, // left the session, parents still there
		105:        {'S', 1, 105, 105},   // left the session and was orphaned: not found
		200:        {'S', 50, 200, 200},  // someone else's
		201:        {'S', 200, 200, 200}, // their child
		300:        {'S', 301, 300, 300}, // a loop (pids reused while walking)
		301:        {'S', 300, 300, 300}, //
		400:        {'S', 999, 400, 400}, // a parent gone meanwhile
		500:        {'S', 2, 500, 500},   // kthreadd's
		50:         {'S', 1, 50, 50},     // our own parent, above COMMAND
		1:          {'S', 0, 1, 1},       // init
		2:          {'S', 0, 0, 0},       // kthreadd
		cmd + 1000: {'S', 1, 1, 1},       // unrelated
	}
	for pid, want := range map[int]bool{
		cmd: true, 101: true, 102: true, 103: true, 104: true,
		105: false, 200: false, 201: false, 300: false, 400: false, 500: false,
		50: false, 1: false, 777: false,
	} {
		if got := Descends(pid, cmd, tb.read); got != want {
			t.Errorf("Descends(%d, %d) = %v, want %v", pid, cmd, got, want)
		}
	}
}

// started runs sh -c script as a session leader, as Run starts COMMAND,
// and returns it with the channel End waits on.
func started(t *testing.T, script string) (*exec.Cmd, chan struct{}) {
	t.Helper()
	c := exec.Command("sh", "-c", script)
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { c.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return c, exited
}

// children waits until pid has n children and returns them.
func children(t *testing.T, pid, n int) []int {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has %d children, want %d", pid, len(out), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDescendsReal(t *testing.T) {
	c, _ := started(t, "sleep 30 & wait")
	kids := children(t, c.Process.Pid, 1)
	if !Descends(kids[0], c.Process.Pid, ReadProc) {
		t.Errorf("the sleep %d is not found descending from its shell %d", kids[0], c.Process.Pid)
	}
	if Descends(os.Getpid(), c.Process.Pid, ReadProc) {
		t.Error("the test process is found descending from its own child")
	}
}

func alive(pid int) bool {
	p, err := ReadProc(pid)
	return err == nil && p.State != 'Z' && p.State != 'X'
}

func TestEnd(t *testing.T) {
	// A group of two, and one that left the group for a group of its own
	// in the same session (a signal to the group misses it).
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3 to leave the process group with")
	}
	c, exited := started(t, `sleep 30 & sleep 30 & python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(30)' & wait`)
	kids := children(t, c.Process.Pid, 3)
	all := append([]int{c.Process.Pid}, kids...)
	outside := func() []int {
		var out []int
		for _, p := range Session(c.Process.Pid, ReadProc) {
			if st, err := ReadProc(p); err == nil && st.PGID != c.Process.Pid {
				out = append(out, p)
			}
		}
		return out
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(outside()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(outside()) == 0 {
		t.Fatal("no process of the session outside its group: the test proves nothing")
	}
	all = append(all, outside()...)
	start := time.Now()
	if err := End(c.Process.Pid, exited); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > EndWait {
		t.Errorf("End took %v for processes that obey SIGTERM", d)
	}
	for _, p := range all {
		if alive(p) {
			t.Errorf("process %d still alive after End", p)
		}
	}
}

func TestEndKillsWhatIgnoresTerm(t *testing.T) {
	c, exited := started(t, `trap "" TERM; sleep 30 & wait; sleep 30`)
	kids := children(t, c.Process.Pid, 1)
	start := time.Now()
	if err := End(c.Process.Pid, exited); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < EndWait || d > 2*EndWait {
		// sleep inherited the ignored SIGTERM: only SIGKILL ends it.
		t.Errorf("End took %v, want between EndWait and twice that (SIGTERM ignored, SIGKILL obeyed)", d)
	}
	for _, p := range append(kids, c.Process.Pid) {
		if alive(p) {
			t.Errorf("process %d still alive after End", p)
		}
	}
}

func TestExitText(t *testing.T) {
	err := exec.Command("sh", "-c", "exit 3").Run()
	if got := exitText(err); got != "status 3" {
		t.Errorf("exitText(exit 3) = %q", got)
	}
	err = exec.Command("sh", "-c", "kill -KILL $$").Run()
	if got := exitText(err); got != "killed by SIGKILL" {
		t.Errorf("exitText(kill -9) = %q", got)
	}
	if got := exitText(nil); got != "status 0" {
		t.Errorf("exitText(nil) = %q", got)
	}
	if got := exitText(errors.New("x")); got != "x" {
		t.Errorf("exitText(other) = %q", got)
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Reason: "COMMAND joined no link within 2s"}
	if e.Error() != "COMMAND joined no link within 2s" {
		t.Errorf("%q", e.Error())
	}
	e.Cleanup = []string{"a", "b"}
	if want := "COMMAND joined no link within 2s (clean-up: a; b)"; e.Error() != want {
		t.Errorf("%q, want %q", e.Error(), want)
	}
}
