// Command multifs serves a VDE multilink whose control directory is a FUSE
// mount. This package is the command line only: parsing, daemonizing,
// signals and exit codes. The multilink, the sockets and the tree live in
// their own packages.
//
// Exit codes: 0 a clean stop (SIGTERM, SIGINT, unmount) or --help/--version;
// 1 anything that kept multifs from serving, with one line on stderr;
// 2 a command-line mistake, one line starting "multifs:". The Go runtime
// also exits 2 on a panic, after a trace starting "panic:": the first line
// on stderr tells them apart.
//
// The files: args.go the command line, daemon.go daemonizing and the
// ready pipe, run.go signals and the wait for a stop, service.go what is
// set up and torn down around it, allowother.go its named job; handoff.go
// the `multifs handoff` subcommand (its exit codes are its own, said
// there). The log (escaping, rate limits, the log file, syslog) is package
// logging's, the hand-off's sequence package handoff's.
package main

import (
	"errors"
	"fmt"
	"os"

	"multifs/fsys/treeclient"
)

const version = "0.1.0"

func main() {
	if treeclient.IsReader() { // a reader of multifs handoff's (fsys/treeclient: Client)
		os.Exit(treeclient.ServeReader())
	}
	if len(os.Args) > 1 && os.Args[1] == "handoff" {
		os.Exit(handoffMain(os.Args[2:]))
	}
	opts, err := parseArgs(os.Args[1:])
	if err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(os.Stderr, "multifs: %s (see multifs --help)\n", trimUsage(err))
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "multifs: %v\n", err)
		os.Exit(1)
	}
	switch {
	case opts.help:
		fmt.Print(usage + handoffSummary)
		return
	case opts.version:
		fmt.Printf("multifs %s\n", version)
		return
	}
	if !opts.foreground && os.Getenv(readyFDEnv) == "" {
		os.Exit(daemonize(opts))
	}
	if err := run(opts); err != nil {
		fmt.Fprintf(os.Stderr, "multifs: %v\n", err)
		os.Exit(1)
	}
}

func trimUsage(err error) string {
	s := err.Error()
	if errors.Is(err, errUsage) {
		s = s[len(errUsage.Error())+2:]
	}
	return s
}
