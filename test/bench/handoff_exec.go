package main

// How each column hands link OLD over to a new link, shared by the
// hand-off's frame-level and iperf3 rows (scenario 8): multifs through the
// real `multifs handoff PATH OLD -- vde_plug A B` (default --overlap); the
// reference, which has no close file, by starting `vde_plug A B` itself,
// waiting as long as multifs handoff would (the new path carrying a frame
// when the bench can see it, then the same default overlap from the
// start), and ending the old link's vde_plug with SIGTERM.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"multifs/cmd/multifs/handoff"
)

// hoOverlap is how long multifs handoff keeps both links up by default,
// which the reference gets too.
const hoOverlap = handoff.DefaultOverlap

// handoffDone is one hand-off done: when it returns, the old link is gone.
type handoffDone struct {
	startAt, endAt time.Time // the hand-off started; the old link was closed (handoff returned, vde_plug reaped)
	readyMs        float64   // the new link started → it carried a frame; -1: not observed
	overlapMs      float64   // both links up
	newLink        string    // multifs: the new link's id (the next hand-off's OLD)
	// cmd is the new link's vde_plug (multifs: COMMAND, which runs on in
	// a session of its own, adopted by pidfd; nil if it could not be).
	cmd *pidProc
	// ref is the new link's vde_plug in the reference.
	ref *proc
}

// end ends the new link's vde_plug, if it still runs.
func (h *handoffDone) end() {
	if h == nil {
		return
	}
	if h.cmd != nil {
		h.cmd.end()
	}
	if h.ref != nil {
		h.ref.kill()
	}
}

// multifsHandoff runs `multifs handoff A OLD -- vde_plug A B` and reads
// its line (new=N closed=OLD ready_ms=MS overlap_ms=MS dup_dropped=N|-).
// env is the command's environment (nil: ours), which COMMAND inherits.
func (b *bench) multifsHandoff(a, bb, old, log string, env []string) (*handoffDone, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errf, err := os.Create(filepath.Join(b.tmp, log))
	if err != nil {
		return nil, err
	}
	defer errf.Close()
	cmd := exec.CommandContext(ctx, b.multifs, "handoff", "--timeout", "10s", a, old, "--", b.vdePlug, a, bb)
	cmd.Stderr = errf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	h := &handoffDone{startAt: time.Now()}
	out, err := cmd.Output()
	h.endAt = time.Now()
	line := strings.TrimSpace(string(out))
	newLink, ready, overlap, perr := parseHandoffLine(line, old)
	if newLink != "" {
		h.newLink = newLink
		h.cmd = b.adoptLinkCommand(filepath.Join(a, "links", newLink, "stats"))
	}
	if err != nil {
		h.end()
		return nil, fmt.Errorf("multifs handoff %s %s: %v: %q (stderr in %s)", a, old, err, line, log)
	}
	if perr != nil {
		h.end()
		return nil, fmt.Errorf("multifs handoff %s %s: %w", a, old, perr)
	}
	h.readyMs, h.overlapMs = ready, overlap
	return h, nil
}

// parseHandoffLine reads multifs handoff's line. newLink is set whenever
// the line names one (a link to end even if the rest is wrong); err when
// the line is not a hand-off of old to it.
func parseHandoffLine(line, old string) (newLink string, readyMs, overlapMs float64, err error) {
	fields := map[string]string{}
	for _, kv := range strings.Fields(line) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			fields[k] = v
		}
	}
	if n, e := strconv.Atoi(fields["new"]); e == nil && n > 0 {
		newLink = fields["new"]
	}
	if fields["closed"] != old {
		return newLink, 0, 0, fmt.Errorf("link %s was not closed by it: %q", old, line)
	}
	readyMs, e1 := strconv.ParseFloat(fields["ready_ms"], 64)
	overlapMs, e2 := strconv.ParseFloat(fields["overlap_ms"], 64)
	if newLink == "" || e1 != nil || e2 != nil {
		return newLink, 0, 0, fmt.Errorf("unexpected line %q", line)
	}
	return newLink, readyMs, overlapMs, nil
}

// refHandoff starts the reference's new link (`vde_plug A B`), waits for
// carried (the first duplicate at the far host; nil: the bench cannot see
// it, and only the overlap is waited for), then for hoOverlap from the
// start, and ends link1 with SIGTERM. env is the new vde_plug's
// environment (nil: ours).
func (b *bench) refHandoff(mA, mB string, link1 *proc, carried <-chan time.Time, log string, env []string) (*handoffDone, error) {
	h := &handoffDone{startAt: time.Now(), readyMs: -1}
	p, err := b.spawnEnv(env, log, b.vdePlug, mA, mB)
	if err != nil {
		return nil, err
	}
	h.ref = p
	if carried != nil {
		select {
		case t := <-carried:
			h.readyMs = ms(t.Sub(h.startAt))
		case <-time.After(10 * time.Second):
			h.end()
			return nil, fmt.Errorf("the reference's new link carried no frame within 10 s")
		case <-p.done:
			return nil, fmt.Errorf("the reference's new link (vde_plug %s %s) exited", mA, mB)
		}
	}
	time.Sleep(time.Until(h.startAt.Add(hoOverlap)))
	link1.kill()
	h.endAt = time.Now()
	h.overlapMs = ms(h.endAt.Sub(h.startAt))
	return h, nil
}

// pidProc is a process we did not fork but started (multifs handoff's
// COMMAND), held by a pidfd so that ending it later can never signal
// another process that got its pid meanwhile.
type pidProc struct {
	once sync.Once
	fd   int
}

// adoptLinkCommand opens a pidfd on the pid a link's stats file names,
// and keeps it if that process is a vde_plug (looked at after the pidfd is
// open, so the pidfd is the process checked). The bench's clean-up ends it
// too. nil when it cannot.
func (b *bench) adoptLinkCommand(stats string) *pidProc {
	st, err := readStats(stats)
	if err != nil {
		return nil
	}
	pid, ok := st.Uint("pid")
	if !ok || pid == 0 || pid > 1<<22 {
		return nil
	}
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return nil
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "vde_plug" {
		unix.Close(fd)
		return nil
	}
	p := &pidProc{fd: fd}
	b.clean.add(p.end)
	return p
}

// end sends SIGTERM, then SIGKILL if the process is still there after 2 s.
func (p *pidProc) end() {
	p.once.Do(func() {
		defer unix.Close(p.fd)
		if unix.PidfdSendSignal(p.fd, unix.SIGTERM, nil, 0) != nil {
			return // gone already
		}
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 2000); n == 0 {
			unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0)
		}
	})
}
