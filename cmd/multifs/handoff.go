package main

// `multifs handoff`: the command line of package handoff, which does the
// work. Exit codes: 0 the hand-off is done (one line on stdout); 1 it
// failed after COMMAND was started, and was cleaned up (one line on
// stderr); 2 nothing was started: a command-line mistake, a PATH that is
// not a live multifs run by root or by the caller, an OLD that is not open
// there, a COMMAND not found, a signal before COMMAND's start.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"multifs/cmd/multifs/handoff"
	"multifs/fsys/tree"
)

// handoffSummary is the line multifs --help gives the subcommand.
const handoffSummary = `Hand off from link OLD to a new one (make-before-break):
       multifs handoff [--timeout D] [--overlap D] [-v] PATH OLD -- COMMAND [ARG...]   (multifs handoff --help)
`

const handoffUsage = `usage: multifs handoff [--timeout D] [--overlap D] [-v] PATH OLD -- COMMAND [ARG...]

Make-before-break on the multilink at PATH: start COMMAND, which joins PATH
as a new link (typically vde_plug -- PATH = ssh host2 vde_plug /tmp/vm2);
once that link has received a frame from the far side, and both links have
been up for the overlap, close link OLD. COMMAND runs on, in a session of
its own, owning the new link.

  --timeout D   how long COMMAND has to join and carry a frame from the far
                side (a Go duration: 500ms, 10s, 2m; default 30s)
  --overlap D   how long both links stay up at least, from the new link's
                join, so that what OLD alone carries gets through (default
                500ms; 0: close OLD at the first frame)
  -v, --verbose say on stderr when the new link joins and when it is ready
  -h, --help    print this help and exit

On success it prints one line and exits 0:
  new=N closed=OLD ready_ms=MS overlap_ms=MS dup_dropped=N|-
(ready_ms: COMMAND's start to the first frame; overlap_ms: both links up;
dup_dropped: duplicates the multilink suppressed meanwhile, - if it has no
such counter). Otherwise the new link is closed, COMMAND ended, OLD left as
it was, and it exits 1 with the reason; 2 if nothing was started (bad
arguments, PATH not a multifs run by root or by you, OLD not open).
Every read and write of PATH waits at most the --timeout: a multifs that
stops answering fails the hand-off on time.
`

// handoffOpts is the hand-off's command line.
type handoffOpts struct {
	path    string
	old     uint64
	timeout time.Duration
	overlap time.Duration
	verbose bool
	command []string
	help    bool
}

// parseHandoff reads the arguments after "handoff". Flags come before
// PATH; everything after "--" is COMMAND, untouched.
func parseHandoff(args []string) (*handoffOpts, error) {
	o := &handoffOpts{timeout: handoff.DefaultTimeout, overlap: handoff.DefaultOverlap}
	end := slices.Index(args, "--")
	head := args
	if end >= 0 {
		head = args[:end] // the rest is COMMAND's
	}
	if slices.Contains(head, "-h") || slices.Contains(head, "--help") {
		o.help = true
		return o, nil
	}
	if end < 0 {
		return nil, usageErr("handoff: want PATH OLD -- COMMAND [ARG...]; no -- before COMMAND")
	}
	o.command = args[end+1:]
	var pos []string
	for i := 0; i < end; i++ {
		a := args[i]
		switch {
		case durationFlag(a) != "":
			name := durationFlag(a)
			v, ok := "", false
			if _, v, ok = strings.Cut(a, "="); !ok {
				if i+1 >= end {
					return nil, usageErr("handoff: %s needs a duration", a)
				}
				i++
				v = args[i]
			}
			d, err := time.ParseDuration(v)
			switch {
			case name == "timeout" && (err != nil || d <= 0):
				return nil, usageErr("handoff: --timeout %q: want a duration above 0, such as 500ms, 10s or 2m", v)
			case name == "overlap" && (err != nil || d < 0):
				return nil, usageErr("handoff: --overlap %q: want a duration, 0 or more, such as 0, 200ms or 2s", v)
			case name == "timeout":
				o.timeout = d
			default:
				o.overlap = d
			}
		case a == "-v" || a == "--verbose":
			o.verbose = true
		case strings.HasPrefix(a, "-") && a != "-":
			return nil, usageErr("handoff: unknown flag %s", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, usageErr("handoff: want PATH and OLD before --, got %d argument(s)", len(pos))
	}
	if len(o.command) == 0 || o.command[0] == "" {
		return nil, usageErr("handoff: no COMMAND after --")
	}
	if pos[0] == "" {
		return nil, usageErr("handoff: PATH is empty")
	}
	o.path = pos[0]
	id, err := strconv.ParseUint(pos[1], 10, 64)
	if err != nil || id == 0 || strconv.FormatUint(id, 10) != pos[1] {
		return nil, usageErr("handoff: OLD %q: want a link id (1, 2, ...: a name under PATH/links)", pos[1])
	}
	o.old = id
	return o, nil
}

// durationFlag names the duration flag a is (--timeout, --overlap, with
// one dash or two, the value after = or next), "" if none.
func durationFlag(a string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
	if !strings.HasPrefix(a, "-") || (name != "timeout" && name != "overlap") {
		return ""
	}
	return name
}

// handoffMain runs `multifs handoff ARGS` and returns the exit status.
func handoffMain(args []string) int {
	o, err := parseHandoff(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "multifs: %s (see multifs handoff --help)\n", trimUsage(err))
		return 2
	}
	if o.help {
		fmt.Print(handoffUsage)
		return 0
	}
	// A signal ends the hand-off wherever it is: before COMMAND starts
	// (exit 2), or after, with its clean-up (exit 1). SIGHUP too: a
	// hang-up must not leave a half-made hand-off behind.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := <-sigs; ok {
			cancel(fmt.Errorf("interrupted by %s", signalName(s)))
		}
	}()

	// Before anything starts: PATH a live multifs run by root or by us,
	// OLD open there, COMMAND there to run. Each look at the tree waits
	// at most the --timeout.
	pctx, pcancel := context.WithTimeout(ctx, o.timeout)
	t, err := tree.Start(pctx, o.path)
	pcancel()
	if err != nil {
		var ue *tree.UntrustedError
		if ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "multifs: handoff: %v before COMMAND started\n", context.Cause(ctx))
		} else if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "multifs: handoff: %s: %v\n", o.path, err)
		} else {
			fmt.Fprintf(os.Stderr, "multifs: handoff: %s: not a live multifs: %v\n", o.path, oneLine(err.Error()))
		}
		return 2
	}
	defer t.Close()
	pctx, pcancel = context.WithTimeout(ctx, o.timeout)
	_, err = t.Link(pctx, o.old)
	pcancel()
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "multifs: handoff: %v before COMMAND started\n", context.Cause(ctx))
		} else if errors.Is(err, tree.ErrNoLink) {
			fmt.Fprintf(os.Stderr, "multifs: handoff: %s/links/%d: no such link (open: %s)\n", o.path, o.old, openLinks(ctx, t, o.timeout))
		} else {
			fmt.Fprintf(os.Stderr, "multifs: handoff: %s/links/%d: %v\n", o.path, o.old, oneLine(err.Error()))
		}
		return 2
	}
	if _, err := exec.LookPath(o.command[0]); err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		fmt.Fprintf(os.Stderr, "multifs: handoff: COMMAND %s: %v\n", o.command[0], err)
		return 2
	}

	cfg := handoff.Config{
		Tree: t, Old: o.old, Command: o.command, Timeout: o.timeout, Overlap: o.overlap, Stderr: os.Stderr,
	}
	if o.verbose {
		cfg.Progress = func(line string) { fmt.Fprintf(os.Stderr, "multifs: handoff: %s\n", line) }
	}
	res, err := handoff.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "multifs: handoff: %v\n", oneLine(err.Error()))
		if _, started := err.(*handoff.Error); started {
			return 1
		}
		return 2 // COMMAND was not started
	}
	dups := "-"
	if res.DupsKnown {
		dups = strconv.FormatUint(res.Dups, 10)
	}
	closed := strconv.FormatUint(o.old, 10)
	if res.OldGone {
		closed = "-"
		fmt.Fprintf(os.Stderr, "multifs: handoff: link %d was closed before the switch, not by handoff; link %d carries the traffic now\n", o.old, res.New)
	}
	fmt.Printf("new=%d closed=%s ready_ms=%d overlap_ms=%d dup_dropped=%s\n",
		res.New, closed, res.Ready.Milliseconds(), res.Overlap.Milliseconds(), dups)
	return 0
}

// openLinks lists the open link ids for an error message, a few at most.
func openLinks(ctx context.Context, t *tree.Client, wait time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	ids, err := t.Links(ctx)
	if err != nil {
		return "unreadable"
	}
	if len(ids) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, id := range ids {
		if i == 8 {
			fmt.Fprintf(&b, " ... (%d in all)", len(ids))
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatUint(id, 10))
	}
	return b.String()
}

func signalName(s os.Signal) string {
	if sig, ok := s.(syscall.Signal); ok && unix.SignalName(sig) != "" {
		return unix.SignalName(sig)
	}
	return s.String()
}

// oneLine keeps an error on one line whatever text it carries (a COMMAND's
// name, an errno's words).
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
