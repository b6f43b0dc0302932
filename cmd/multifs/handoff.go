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
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"multifs/cmd/multifs/handoff"
	"multifs/fsys/treeclient"
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

// parseHandoff reads the arguments after "handoff", with spf13/pflag as
// the daemon's parseArgs does. Everything after the first "--" is
// COMMAND, untouched: it is cut off before pflag sees the rest (which
// would otherwise take a "--" right after --timeout as its value). Before
// it, flags may stand before or between PATH and OLD. -h or --help
// anywhere before "--" wins over every other mistake.
func parseHandoff(args []string) (*handoffOpts, error) {
	o := &handoffOpts{timeout: handoff.DefaultTimeout, overlap: handoff.DefaultOverlap}
	head, command, found := slices.Clone(args), []string(nil), false
	if end := slices.Index(args, "--"); end >= 0 {
		head, command, found = slices.Clone(args[:end]), args[end+1:], true
	}
	for i, a := range head {
		// Go's single-dash spelling of the duration flags (-timeout 2s,
		// as Go's flag package takes it) is taken too: pflag would read
		// -timeout as the shorthands -t -i -m ...
		if name, _, _ := strings.Cut(a, "="); name == "-timeout" || name == "-overlap" {
			head[i] = "-" + a
		}
	}
	fs := handoffFlags(o)
	err := fs.Parse(head)
	if o.help || (err != nil && (slices.Contains(head, "-h") || slices.Contains(head, "--help"))) {
		o.help = true
		return o, nil
	}
	if !found {
		return nil, usageErr("handoff: want PATH OLD -- COMMAND [ARG...]; no -- before COMMAND")
	}
	if err != nil {
		return nil, handoffFlagErr(err, head)
	}
	o.command = command
	pos := fs.Args()
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

// handoffFlags are handoff's flags, set into o: the ones handoffUsage and
// multifs(1)'s HANDOFF section list (drift_test.go holds them to both).
func handoffFlags(o *handoffOpts) *pflag.FlagSet {
	fs := pflag.NewFlagSet("multifs handoff", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are ours to print, in one line
	fs.Usage = func() {}
	fs.SortFlags = false
	fs.Var(setter(func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return usageErr("handoff: --timeout %q: want a duration above 0, such as 500ms, 10s or 2m", v)
		}
		o.timeout = d
		return nil
	}), "timeout", "how long COMMAND has to join and carry a frame")
	fs.Var(setter(func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return usageErr("handoff: --overlap %q: want a duration, 0 or more, such as 0, 200ms or 2s", v)
		}
		o.overlap = d
		return nil
	}), "overlap", "how long both links stay up at least")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "say when the new link joins and is ready")
	fs.BoolVarP(&o.help, "help", "h", false, "print the help")
	return fs
}

// handoffFlagErr is pflag's error in handoff's words: the flag as it was
// typed in head, and what it wants.
func handoffFlagErr(err error, head []string) error {
	var bad *pflag.InvalidValueError
	var need *pflag.ValueRequiredError
	var unknown *pflag.NotExistError
	var syntax *pflag.InvalidSyntaxError
	switch {
	case errors.As(err, &bad) && errors.Is(bad.Unwrap(), errUsage):
		return bad.Unwrap() // refused by one of our setters, in its words
	case errors.As(err, &need):
		return usageErr("handoff: --%s needs a duration", need.GetFlag().Name)
	case errors.As(err, &unknown) && unknown.GetSpecifiedShortnames() != "":
		return usageErr("handoff: unknown flag -%s", unknown.GetSpecifiedShortnames())
	case errors.As(err, &unknown):
		name := "--" + unknown.GetSpecifiedName()
		for _, a := range head {
			if a == name || strings.HasPrefix(a, name+"=") {
				return usageErr("handoff: unknown flag %s", a)
			}
		}
		return usageErr("handoff: unknown flag %s", name)
	case errors.As(err, &syntax):
		return usageErr("handoff: unknown flag %s", syntax.GetSpecifiedFlag())
	}
	return usageErr("handoff: %s", err)
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
	t, err := treeclient.Start(pctx, o.path)
	pcancel()
	if err != nil {
		var ue *treeclient.UntrustedError
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
		} else if errors.Is(err, treeclient.ErrNoLink) {
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
func openLinks(ctx context.Context, t *treeclient.Client, wait time.Duration) string {
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
