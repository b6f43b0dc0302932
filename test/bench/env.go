package main

// The systems under test and their lifetimes: multifs daemons, reference
// vde_plug processes, and the cleanup that removes them whatever happens.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"multifs/control/client"
)

// cleaner runs registered functions once, last registered first.
type cleaner struct {
	mu   sync.Mutex
	fns  []func()
	done bool
}

func newCleaner() *cleaner { return &cleaner{} }

func (c *cleaner) add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, f)
}

func (c *cleaner) run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
}

// removeScratch deletes our directory, first lazily unmounting anything
// still mounted below it (RemoveAll must not walk into a live FUSE mount).
func removeScratch(dir string) {
	unmountScratch(dir)
	os.RemoveAll(dir)
}

func unmountScratch(dir string) {
	for _, m := range mountsUnder(dir) {
		exec.Command("umount", "-l", m).Run()
	}
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// multifs daemons

// daemon is one multifs serving path.
type daemon struct {
	path string
	pid  int
}

// startMultifs starts a daemon on tmp/name and registers its stop.
func (b *bench) startMultifs(name string, args ...string) (*daemon, error) {
	path := filepath.Join(b.tmp, name)
	d := &daemon{path: path}
	b.clean.add(func() { d.stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.multifs, append(append([]string{"--log-file", path + ".log"}, args...), path)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("multifs %s: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
	d.pid = findPid(path)
	if d.pid == 0 {
		return nil, fmt.Errorf("multifs %s is ready but no process has it on its command line", path)
	}
	return d, nil
}

// stop unmounts (which stops the daemon), then insists if it must.
func (d *daemon) stop() {
	if len(mountsUnder(d.path)) > 0 {
		fm := "fusermount3"
		if _, err := exec.LookPath(fm); err != nil {
			fm = "fusermount"
		}
		exec.Command(fm, "-u", d.path).Run()
	}
	if d.pid > 0 && !waitGone(d.pid, 5*time.Second) {
		syscall.Kill(d.pid, syscall.SIGTERM)
		if !waitGone(d.pid, 2*time.Second) {
			syscall.Kill(d.pid, syscall.SIGKILL)
			waitGone(d.pid, 2*time.Second)
		}
	}
	if len(mountsUnder(d.path)) > 0 {
		exec.Command("umount", "-l", d.path).Run()
	}
}

// findPid returns the pid of the process having path as one of its
// arguments (the daemonized multifs), or 0.
func findPid(path string) int {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(data, []byte{0}) {
			if string(arg) == path {
				return pid
			}
		}
	}
	return 0
}

// waitGone waits until pid no longer exists (or is a zombie).
func waitGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// The state follows the parenthesised command name.
		if i := bytes.LastIndexByte(data, ')'); i > 0 && i+2 < len(data) && data[i+2] == 'Z' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// processes we start (vde_plug)

// proc is a child process that is killed at cleanup if still running.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// spawn starts a child with its output in tmp/<log>, dying with us.
func (b *bench) spawn(log string, name string, args ...string) (*proc, error) {
	return b.spawnEnv(nil, log, name, args...)
}

// spawnEnv is spawn with the environment env (nil: ours).
func (b *bench) spawnEnv(env []string, log string, name string, args ...string) (*proc, error) {
	f, err := os.Create(filepath.Join(b.tmp, log))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	b.clean.add(func() { p.kill() })
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the child's process group (vde_plug A = vde_plug B is two
// processes), politely first.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
}

// ---------------------------------------------------------------------------
// the reference: vde_plug multi:// relaying its host side to a Port1

// refEnv is one reference multilink: `vde_plug multi://DIR/multi
// vde://DIR/port1`, the vde_plug being the multilink and its host, whose
// far side is a Port1 in the bench.
type refEnv struct {
	multi string         // links Dial this
	host  *client.Client // the Port1 end: the host's traffic
	proc  *proc
}

func (b *bench) startRef(name string) (*refEnv, error) {
	if b.vdePlug == "" {
		return nil, errors.New("vde_plug missing")
	}
	dir := filepath.Join(b.tmp, name)
	side := filepath.Join(dir, "port1")
	multi := filepath.Join(dir, "multi")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	type result struct {
		c   *client.Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := client.Port1(side)
		ch <- result{c, err}
	}()
	if err := waitFor(2*time.Second, func() bool { return exists(filepath.Join(side, "ctl")) }); err != nil {
		return nil, fmt.Errorf("Port1 %s: no ctl", side)
	}
	p, err := b.spawn(name+".vde_plug.log", b.vdePlug, "multi://"+multi, "vde://"+side)
	if err != nil {
		return nil, err
	}
	var host *client.Client
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("Port1 %s: %w", side, r.err)
		}
		host = r.c
	case <-time.After(5 * time.Second):
		// Unblock Port1's accept so that its goroutine ends.
		if c, err := net.Dial("unix", filepath.Join(side, "ctl")); err == nil {
			c.Close()
		}
		return nil, fmt.Errorf("vde_plug multi://%s did not join %s within 5 s (see %s.vde_plug.log)", multi, side, name)
	}
	b.clean.add(func() { host.Close() })
	if err := waitFor(2*time.Second, func() bool { return exists(filepath.Join(multi, "ctl")) }); err != nil {
		return nil, fmt.Errorf("vde_plug multi://%s: no ctl after 2 s", multi)
	}
	return &refEnv{multi: multi, host: host, proc: p}, nil
}

// ---------------------------------------------------------------------------
// the two columns behind one interface

// system is what a data-plane scenario needs of either column: where links
// join, the bench's end of the host side, and the process to watch.
type system struct {
	name    string // "multifs" or "reference"
	linkDir string
	host    *client.Client
	pid     int
}

// multifsSystem starts a daemon and attaches the bench as its host.
func (b *bench) multifsSystem(name string) (*system, error) {
	d, err := b.startMultifs(name)
	if err != nil {
		return nil, err
	}
	h, err := client.Dial(filepath.Join(d.path, "host"), "bench host")
	if err != nil {
		return nil, fmt.Errorf("attaching the host to %s: %w", d.path, err)
	}
	b.clean.add(func() { h.Close() })
	return &system{name: "multifs", linkDir: d.path, host: h, pid: d.pid}, nil
}

func (b *bench) refSystem(name string) (*system, error) {
	r, err := b.startRef(name)
	if err != nil {
		return nil, err
	}
	return &system{name: "reference", linkDir: r.multi, host: r.host, pid: r.proc.pid()}, nil
}

// systems returns multifs and, when vde_plug exists, the reference.
func (b *bench) systems(name string) ([]*system, error) {
	m, err := b.multifsSystem(name)
	if err != nil {
		return nil, err
	}
	out := []*system{m}
	if b.vdePlug != "" {
		r, err := b.refSystem("ref-" + name)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// dialLinks joins k links, retrying briefly while the listener starts.
func dialLinks(dir string, k int) ([]*client.Client, error) {
	var cs []*client.Client
	for i := 0; i < k; i++ {
		c, err := dialRetry(dir, fmt.Sprintf("bench link %d", i))
		if err != nil {
			closeAll(cs)
			return nil, fmt.Errorf("link %d of %d: %w", i+1, k, err)
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func dialRetry(dir, descr string) (*client.Client, error) {
	var err error
	for i := 0; i < 20; i++ {
		var c *client.Client
		if c, err = client.Dial(dir, descr); err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EAGAIN) {
			return nil, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, err
}

func closeAll(cs []*client.Client) {
	for _, c := range cs {
		c.Close()
	}
}

// ---------------------------------------------------------------------------
// small helpers

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// waitFor polls cond every millisecond until it holds or limit passes.
func waitFor(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", limit)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// procStatus returns a "VmRSS"-like field of /proc/PID/status in bytes.
func procStatus(pid int, key string) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return n * 1024, nil // the kernel writes kB
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, key)
}
