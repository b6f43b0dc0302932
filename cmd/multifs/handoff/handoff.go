// Package handoff is make-before-break on a multilink: start the program
// that makes a new link, wait until that link has carried a frame from the
// far side, then close the old one. It is what `multifs handoff` does; the
// command only parses, validates, catches signals and prints. It is a
// package of its own because it is more than a command line: a process
// started apart (its own session, outliving us), a search for the link it
// joined by the pids of its process tree, a poll of the tree with a
// deadline, and a clean-up that must run on every way out.
//
// The sequence, and what ends it:
//
//	snapshot links/          the ids open before; OLD among them
//	start COMMAND            setsid, stdin and stdout /dev/null, stderr ours
//	poll every Poll:
//	  a link not in the snapshot whose pid is COMMAND's, or one of its
//	  descendants'                              -> the new link (joined)
//	  the new link's rx_packets > 0             -> ready
//	  ready, and both up for Overlap            -> the switch
//	  OLD gone (closed by someone else, its
//	  peer left)                                -> no overlap to wait for;
//	                                               done once ready, OldGone
//	  COMMAND exited, the new link gone,
//	  Timeout passed before ready, ctx done     -> fail
//	the switch: echo 1 > links/OLD/close        -> done; COMMAND runs on
//	fail:  echo 1 > links/NEW/close (if joined, and the tree answers),
//	       TERM COMMAND's process group (and session), KILL after
//	       EndWait; OLD untouched
//
// Every read and write of the tree goes through a treeclient.Client: a reader
// process of its own, killed and abandoned when it does not answer in
// time. Each request ends at the context (a signal), at the Timeout's
// deadline while there is one, and after Timeout in any case; one that
// the tree does not answer in time fails the hand-off, and handoff makes
// no further request to that tree (the new link goes with COMMAND). So a
// mount that stops answering never keeps handoff from ending on time: a
// request the server has taken is waited out uninterruptibly by the
// kernel, and only the reader waits.
//
// rx_packets is what the new link received from its peer, so a frame from
// the far side: the path works both ways, not only the local half of it
// (a vde_plug = ssh joins before ssh has even logged in). The overlap is
// for the frames OLD alone carries, sent before the new link joined: they
// get through before OLD goes (see DefaultOverlap). An OLD that goes by
// itself meanwhile (its path broke: often why a hand-off is made) does not
// fail the hand-off: the new link is then all the host has, and tearing it
// down would leave the host with nothing.
package handoff

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"multifs/fsys/treeclient"
)

// Defaults.
const (
	DefaultTimeout = 30 * time.Second
	// DefaultOverlap is how long both links stay up at least. Frames
	// sent before the new link joined travel over OLD alone; closing it
	// while they are on their way loses them. Measured here (2026-12-01,
	// 2 cores, three busy loops beside, 15000 frames at 5000/s, dedup on
	// both sides): with no overlap one run in three lost 23 frames that
	// the far multilink never got (its host refused none); with 500ms
	// three runs lost none. Duplicate suppression makes a longer overlap
	// invisible to the hosts.
	DefaultOverlap = 500 * time.Millisecond
	DefaultPoll    = 20 * time.Millisecond
	// EndWait is how long COMMAND's processes get to go after SIGTERM
	// before SIGKILL, and again after SIGKILL before we give up on them.
	EndWait = 2 * time.Second
)

// Config is one hand-off.
type Config struct {
	Tree    *treeclient.Client
	Old     uint64        // the link to close once the new one works
	Command []string      // argv; Command[0] as exec.Command finds it
	Timeout time.Duration // from COMMAND's start to the first frame from the far side
	Overlap time.Duration // both links up at least this long, from the new link's join
	Poll    time.Duration // how often the tree is read (DefaultPoll if 0)
	Stderr  *os.File      // COMMAND's standard error (nil: /dev/null)
	// Progress, if set, is told of each step (joined, ready) in a line.
	Progress func(string)
}

// Result is a hand-off done.
type Result struct {
	New     uint64        // the link COMMAND joined
	PID     int           // COMMAND's pid (it runs on)
	Ready   time.Duration // COMMAND's start to its link's first received frame
	Overlap time.Duration // the new link's join to OLD's close: both were up
	// OldGone: OLD was closed before the switch, not by us (someone
	// else's close, its peer gone); Overlap is then up to when we saw it.
	OldGone bool
	// Dups is how many frames the multilink dropped as duplicates
	// meanwhile (root stats dup_dropped, before and after); DupsKnown
	// false when the daemon has no such counter.
	Dups      uint64
	DupsKnown bool
}

// Error is a failed hand-off, after its clean-up: Reason says why in one
// line; Cleanup what the clean-up could not do, if anything.
type Error struct {
	Reason  string
	Cleanup []string
}

func (e *Error) Error() string {
	if len(e.Cleanup) == 0 {
		return e.Reason
	}
	s := e.Reason + " (clean-up:"
	for i, c := range e.Cleanup {
		if i > 0 {
			s += ";"
		}
		s += " " + c
	}
	return s + ")"
}

// Run does the hand-off. ctx ending (a signal to the command) fails it,
// with the clean-up; context.Cause(ctx) is the reason given.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if len(cfg.Command) == 0 {
		return Result{}, errors.New("no COMMAND")
	}
	// Nothing is started yet: these errors are not *Error.
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	before, err := cfg.Tree.Links(rctx)
	cancel()
	if err != nil {
		return Result{}, fmt.Errorf("reading links: %w", err)
	}
	known := make(map[uint64]bool, len(before))
	for _, id := range before {
		known[id] = true
	}
	if !known[cfg.Old] {
		return Result{}, fmt.Errorf("link %d is not open", cfg.Old)
	}
	rctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
	root, err := cfg.Tree.Root(rctx)
	cancel()
	if err != nil {
		return Result{}, fmt.Errorf("reading stats: %w", err)
	}
	dup0, dupsKnown := root.Uint("dup_dropped")

	cmd := exec.Command(cfg.Command[0], cfg.Command[1:]...)
	// Its own session: no signal of our terminal (SIGINT of a ^C, SIGHUP
	// of a hang-up) reaches it, and it outlives us, owning the new link.
	// stdin and stdout are /dev/null: a vde_plug = uses pipes of its own,
	// and a COMMAND holding our stdout would keep `$(multifs handoff ...)`
	// waiting for as long as it runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cfg.Stderr != nil {
		cmd.Stderr = cfg.Stderr
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("starting %s: %w", cfg.Command[0], err)
	}
	h := &run{cfg: cfg, ctx: ctx, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		h.waitErr = cmd.Wait()
		close(h.exited)
	}()

	res, reason := h.watch(start, known)
	if reason != "" {
		return Result{}, h.fail(reason)
	}
	if dupsKnown {
		// Done already: a tree that does not answer costs the count only.
		if dup1, ok := h.dupDropped(); ok && dup1 >= dup0 {
			res.Dups, res.DupsKnown = dup1-dup0, true
		}
	}
	return res, nil
}

// run is one hand-off under way.
type run struct {
	cfg     Config
	ctx     context.Context // ends the hand-off: a signal
	until   time.Time       // the Timeout's deadline; zero once ready
	hung    bool            // a request was not answered in time: the tree is not asked again
	pid     int
	newID   uint64 // 0 until COMMAND joined
	exited  chan struct{}
	waitErr error // valid once exited is closed
}

// ask bounds one request to the tree: it ends with the hand-off's context,
// at the Timeout's deadline while there is one, and after Timeout anyway.
func (h *run) ask() (context.Context, context.CancelFunc) {
	end := time.Now().Add(h.cfg.Timeout)
	if !h.until.IsZero() && h.until.Before(end) {
		end = h.until
	}
	return context.WithDeadline(h.ctx, end)
}

// treeFailed is the reason for a request that failed, ready the time the
// new link was (zero: not yet).
func (h *run) treeFailed(what string, err error, ready time.Time) string {
	var na *treeclient.NoAnswerError
	switch {
	case h.ctx.Err() != nil:
		return fmt.Sprintf("%v %s", context.Cause(h.ctx), h.stage(ready))
	case errors.As(err, &na) && h.cutShort(na):
		return h.expiry()
	case errors.As(err, &na):
		h.hung = true
		return fmt.Sprintf("the tree stopped answering (%v) %s", err, h.stage(ready))
	case errors.Is(err, context.DeadlineExceeded):
		return h.expiry() // the deadline passed before the request was made
	}
	return fmt.Sprintf("%s: %v", what, err)
}

// cutShort says whether an unanswered request was cut by the Timeout's
// deadline after less than half the Timeout: too short a wait to say the
// tree stopped answering (a poll made a few ms before the deadline, on a
// loaded machine), so the Timeout is the reason.
func (h *run) cutShort(na *treeclient.NoAnswerError) bool {
	return !h.until.IsZero() && !time.Now().Before(h.until) && na.Waited < h.cfg.Timeout/2
}

// expiry is the reason of a Timeout passed before the new link was ready.
func (h *run) expiry() string {
	if h.newID == 0 {
		return fmt.Sprintf("COMMAND joined no link within %v", h.cfg.Timeout)
	}
	return fmt.Sprintf("link %d received no frame from the far side within %v", h.newID, h.cfg.Timeout)
}

// watch polls the tree until the new link is ready and OLD is closed
// (reason ""), or something ends the hand-off (the reason, one line).
func (h *run) watch(start time.Time, known map[uint64]bool) (Result, string) {
	cfg, ctx := h.cfg, h.ctx
	h.until = start.Add(cfg.Timeout)
	deadline := time.NewTimer(time.Until(h.until))
	defer deadline.Stop()
	expired := deadline.C // nil once ready: the timeout is for getting there
	tick := time.NewTicker(cfg.Poll)
	defer tick.Stop()
	var joined, ready, oldGone time.Time
	for {
		select {
		case <-ctx.Done():
			return Result{}, fmt.Sprintf("%v %s", context.Cause(ctx), h.stage(ready))
		case <-h.exited:
			return Result{}, fmt.Sprintf("COMMAND exited (%s) %s", exitText(h.waitErr), h.stage(ready))
		case <-expired:
			return Result{}, h.expiry()
		case <-tick.C:
		}
		if oldGone.IsZero() {
			rctx, cancel := h.ask()
			_, err := cfg.Tree.Link(rctx, cfg.Old)
			cancel()
			if errors.Is(err, treeclient.ErrNoLink) {
				oldGone = time.Now()
				h.progress("link %d (OLD) closed before the switch, not by us; waiting for the new link still", cfg.Old)
			} else if err != nil {
				return Result{}, h.treeFailed(fmt.Sprintf("link %d (OLD) unreadable before the switch", cfg.Old), err, ready)
			}
		}
		if h.newID == 0 {
			id, err := h.findNew(known)
			if err != nil {
				return Result{}, h.treeFailed("reading links", err, ready)
			}
			if id == 0 {
				continue
			}
			h.newID, joined = id, time.Now()
			h.progress("link %d joined, %d ms after COMMAND's start", id, joined.Sub(start).Milliseconds())
		}
		rctx, cancel := h.ask()
		st, err := cfg.Tree.Link(rctx, h.newID)
		cancel()
		if errors.Is(err, treeclient.ErrNoLink) {
			return Result{}, fmt.Sprintf("link %d (new) closed %s", h.newID, h.stage(ready))
		} else if err != nil {
			return Result{}, h.treeFailed(fmt.Sprintf("link %d (new) unreadable %s", h.newID, h.stage(ready)), err, ready)
		}
		if ready.IsZero() {
			if rx, _ := st.Uint("rx_packets"); rx == 0 {
				continue
			}
			ready, expired, h.until = time.Now(), nil, time.Time{}
			h.progress("link %d received its first frame, %d ms after COMMAND's start; link %d closes once both were up for %v",
				h.newID, ready.Sub(start).Milliseconds(), cfg.Old, cfg.Overlap)
		}
		res := Result{New: h.newID, PID: h.pid, Ready: ready.Sub(start)}
		if !oldGone.IsZero() {
			res.OldGone, res.Overlap = true, max(0, oldGone.Sub(joined))
			return res, ""
		}
		if time.Since(joined) < cfg.Overlap {
			continue // OLD still carries what was sent before the new link joined
		}
		// The switch. OLD may still go between the last look and this
		// write: then it went by itself.
		rctx, cancel = h.ask()
		err = cfg.Tree.CloseLink(rctx, cfg.Old)
		cancel()
		var na *treeclient.NoAnswerError
		switch {
		case errors.Is(err, treeclient.ErrNoLink):
			res.OldGone = true
		case errors.As(err, &na):
			h.hung = true
			return Result{}, fmt.Sprintf("the tree stopped answering (%v): link %d (OLD) may be closed or not", err, cfg.Old)
		case err != nil:
			return Result{}, h.treeFailed(fmt.Sprintf("link %d (OLD) could not be closed", cfg.Old), err, ready)
		}
		res.Overlap = time.Since(joined)
		return res, ""
	}
}

func (h *run) progress(format string, a ...any) {
	if h.cfg.Progress != nil {
		h.cfg.Progress(fmt.Sprintf(format, a...))
	}
}

// stage says how far the hand-off got, for a reason.
func (h *run) stage(ready time.Time) string {
	switch {
	case h.newID == 0:
		return "before joining a link"
	case ready.IsZero():
		return fmt.Sprintf("before link %d carried a frame", h.newID)
	}
	return fmt.Sprintf("before the switch (link %d ready, both links up for less than the overlap)", h.newID)
}

// findNew returns the lowest new link that COMMAND or a descendant of it
// joined, 0 if none yet. A new link of someone else's is remembered as
// known, and not read again.
func (h *run) findNew(known map[uint64]bool) (uint64, error) {
	rctx, cancel := h.ask()
	ids, err := h.cfg.Tree.Links(rctx)
	cancel()
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if known[id] {
			continue
		}
		rctx, cancel := h.ask()
		st, err := h.cfg.Tree.Link(rctx, id)
		cancel()
		if errors.Is(err, treeclient.ErrNoLink) {
			continue // gone already; if it was ours, COMMAND will have more to say
		}
		if err != nil {
			return 0, err
		}
		pid, ok := st.Uint("pid")
		if ok && pid > 0 && pid < 1<<31 && Descends(int(pid), h.pid, ReadProc) {
			return id, nil
		}
		known[id] = true
	}
	return 0, nil
}

// fail cleans up after a hand-off that did not happen and returns its
// error: the new link closed, COMMAND ended, OLD untouched. A tree that
// stopped answering is not asked to close the new link: COMMAND's end
// takes it down.
func (h *run) fail(reason string) error {
	e := &Error{Reason: reason}
	switch {
	case h.newID == 0:
	case h.hung:
		e.Cleanup = append(e.Cleanup, fmt.Sprintf("link %d not closed through the tree, which does not answer; it goes with COMMAND", h.newID))
	default:
		// The hand-off's context may be over (a signal): the close has a
		// bound of its own.
		rctx, cancel := context.WithTimeout(context.Background(), EndWait)
		err := h.cfg.Tree.CloseLink(rctx, h.newID)
		cancel()
		if err != nil && !errors.Is(err, treeclient.ErrNoLink) {
			e.Cleanup = append(e.Cleanup, fmt.Sprintf("closing link %d: %v", h.newID, err))
		}
	}
	if err := End(h.pid, h.exited); err != nil {
		e.Cleanup = append(e.Cleanup, err.Error())
	}
	return e
}

func exitText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + unix.SignalName(ws.Signal())
		}
		return fmt.Sprintf("status %d", ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "status 0"
}

// dupDropped is the root stats' dup_dropped, if the daemon has it and
// answers within EndWait.
func (h *run) dupDropped() (uint64, bool) {
	rctx, cancel := context.WithTimeout(h.ctx, EndWait)
	defer cancel()
	st, err := h.cfg.Tree.Root(rctx)
	if err != nil {
		return 0, false
	}
	return st.Uint("dup_dropped")
}

// End ends the processes of the session that leader (a child of ours,
// started with Setsid) made: SIGTERM to its process group and to every
// live process of its session (some may have left the group), SIGKILL to
// what is left after EndWait, and an error if some are still there EndWait
// after that. exited is closed once leader has been reaped (by whoever
// waits for it). Zombies do not count: their parent, or init, reaps them.
func End(leader int, exited <-chan struct{}) error {
	send := func(sig syscall.Signal) {
		syscall.Kill(-leader, sig)
		for _, p := range Session(leader, ReadProc) {
			syscall.Kill(p, sig)
		}
	}
	left := func() bool {
		select {
		case <-exited:
		default:
			return true
		}
		return len(Session(leader, ReadProc)) > 0
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		send(sig)
		deadline := time.Now().Add(EndWait)
		for left() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !left() {
			return nil
		}
	}
	return fmt.Errorf("processes of COMMAND (session %d) still there after SIGKILL", leader)
}
