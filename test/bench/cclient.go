package main

// The real clients: vdeclient (cclient/vdeclient.c), compiled at start,
// run as a child that the bench talks to line by line (see its comment).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// buildCClient compiles vdeclient into the scratch directory; on failure
// the real-client rows are skipped with a notice saying why.
func (b *bench) buildCClient() {
	src := filepath.Join(b.root, "test", "bench", "cclient", "vdeclient.c")
	out := filepath.Join(b.tmp, "vdeclient")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msg, err := exec.CommandContext(ctx, "gcc", "-O2", "-Wall", "-o", out, src, "-lvdeplug").CombinedOutput()
	if err != nil {
		b.res.notice("the real clients (vdeclient.c) did not build, their rows are skipped (apt-get install gcc libvdeplug-dev): %v: %s",
			err, strings.TrimSpace(string(msg)))
		return
	}
	b.cclient = out
}

// startCRetry is startC tried again, 20 times 50 ms apart, while it
// fails: a host that just left may still hold multifs's host entry for a
// moment, and a second host is refused.
func (b *bench) startCRetry(name, mode, url string, args ...string) (*cproc, error) {
	var err error
	for try := 0; try < 20; try++ {
		var c *cproc
		if c, err = b.startC(name, mode, url, args...); err == nil {
			return c, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, err
}

// cproc is one running vdeclient.
type cproc struct {
	*proc
	name  string
	in    io.WriteCloser
	lines chan string // its stdout, line by line; closed at EOF
}

// startC starts vdeclient MODE URL ARGS... and waits (up to 5 s) for its
// "ready": it has joined.
func (b *bench) startC(name, mode, url string, args ...string) (*cproc, error) {
	logf, err := os.Create(filepath.Join(b.tmp, name+".log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(b.cclient, append([]string{mode, url}, args...)...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &cproc{proc: &proc{cmd: cmd, done: make(chan struct{})}, name: name, in: in, lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(outp)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		cmd.Wait()
		close(c.done)
	}()
	b.clean.add(func() { c.kill() })
	if _, err := c.expect("ready", 5*time.Second); err != nil {
		c.kill()
		return nil, err
	}
	return c, nil
}

// expect waits for the next line starting with prefix.
func (c *cproc) expect(prefix string, limit time.Duration) (string, error) {
	timeout := time.After(limit)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("%s ended before %q (see %s.log)", c.name, prefix, c.name)
			}
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-timeout:
			return "", fmt.Errorf("%s: no %q after %v", c.name, prefix, limit)
		}
	}
}

func (c *cproc) say(line string) error {
	_, err := io.WriteString(c.in, line+"\n")
	return err
}

// result waits for the result line and parses its key=value pairs.
func (c *cproc) result(limit time.Duration) (map[string]int64, error) {
	l, err := c.expect("result ", limit)
	if err != nil {
		return nil, err
	}
	return parseKV(strings.TrimPrefix(l, "result "))
}

// finish closes its stdin (a generator leaves then) and waits for it,
// bounded.
func (c *cproc) finish() {
	c.in.Close()
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		c.kill()
	}
}

func parseKV(s string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, kv := range strings.Fields(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("result %q: %q is not key=value", s, kv)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("result %q: %s: %v", s, k, err)
		}
		out[k] = n
	}
	return out, nil
}
