package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// readyFDEnv names the fd on which a daemon child reports to its parent:
// "ready\n" once PATH is mounted and ctl accepts connections, or one line
// of error. The parent passes that on as its exit status.
const readyFDEnv = "MULTIFS_READY_FD"

// daemonize re-executes multifs in the background (as gocryptfs does: a
// fork without exec is not safe in Go) and waits for it to be ready.
func daemonize(opts *options) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "multifs: %v\n", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "multifs: %v\n", err)
		return 1
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "multifs: %v\n", err)
		return 1
	}
	// The options as parsed here, not os.Args: relative paths were made
	// absolute against our working directory, and the child runs in /.
	cmd := exec.Command(exe, opts.argv()...)
	// The child is not systemd's main process: only -f notifies.
	cmd.Env = append(withoutEnv(os.Environ(), "NOTIFY_SOCKET"), readyFDEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "multifs: starting daemon: %v\n", err)
		return 1
	}
	w.Close()
	devnull.Close()
	// Lines until "ready" or an error. Warnings are passed on once the
	// daemon is ready: a start that fails says one thing, its error.
	line := ""
	var warnings []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line = strings.TrimSpace(sc.Text())
		if w, ok := strings.CutPrefix(line, warningPrefix); ok {
			warnings = append(warnings, w)
			line = ""
			continue
		}
		break
	}
	r.Close()
	if line == "ready" {
		for _, w := range warnings {
			fmt.Fprintf(os.Stderr, "multifs: warning: %s\n", w)
		}
		cmd.Process.Release()
		return 0
	}
	state, _ := cmd.Process.Wait()
	if line == "" {
		line = fmt.Sprintf("daemon exited before it was ready (%v)", state)
	}
	fmt.Fprintf(os.Stderr, "multifs: %s\n", line)
	return 1
}

// readyNotifier reports readiness or failure to a waiting parent, if any.
type readyNotifier struct {
	f *os.File
}

func newReadyNotifier() *readyNotifier {
	s := os.Getenv(readyFDEnv)
	os.Unsetenv(readyFDEnv)
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return &readyNotifier{}
	}
	// Children we start (fusermount3) must not hold the parent's pipe open.
	unix.CloseOnExec(fd)
	return &readyNotifier{f: os.NewFile(uintptr(fd), "ready")}
}

func (n *readyNotifier) daemon() bool { return n.f != nil }

func (n *readyNotifier) ready() { n.send("ready") }

func (n *readyNotifier) fail(err error) { n.send(err.Error()) }

// warningPrefix marks a line the parent prints and goes on reading after.
const warningPrefix = "warning: "

// warn passes a warning to the waiting parent's terminal, if any.
func (n *readyNotifier) warn(msg string) {
	if n.f != nil {
		fmt.Fprintln(n.f, warningPrefix+msg)
	}
}

// withoutEnv is env less the variable name.
func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func (n *readyNotifier) send(line string) {
	if n.f == nil {
		return
	}
	fmt.Fprintln(n.f, line)
	n.f.Close()
	n.f = nil
}
