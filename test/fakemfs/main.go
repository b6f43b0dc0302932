// Command fakemfs mounts a look-alike of a multifs control directory
// (fsys/treeclient/treetest) for the shell tests of `multifs handoff`
// (test/t_handoff_trust.sh), as whichever user runs it: run by an ordinary
// user it is the impostor handoff must refuse; run by root, with
// -hang-after, a trusted mount that stops answering mid-hand-off.
//
// Every open, read, write and hang is logged, one line each, to -log. It
// makes -ready once mounted, and exits at SIGTERM or SIGINT without
// unmounting (a request may be blocked): its end fails every request
// still waiting on it, and the test unmounts.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"multifs/fsys/treeclient/treetest"
)

func main() {
	mountDir := flag.String("mount", "", "the directory to mount on")
	logPath := flag.String("log", "", "where every open, read, write and hang is logged")
	readyPath := flag.String("ready", "", "a file made once the mount is up")
	links := flag.String("links", "1", "the links always open, comma-separated")
	newPID := flag.String("newpid", "", "a file: once it holds a pid, link 2 is open with that pid")
	rx := flag.Uint64("rx", 0, "link 2's rx_packets")
	hangAfter := flag.Int("hang-after", 0, "after this many reads of link 2's stats, every read hangs (0: never)")
	hangAll := flag.Bool("hang-all", false, "every request hangs: lookups, getattr, opens, reads, statfs")
	flag.Parse()
	if *mountDir == "" || *logPath == "" {
		fmt.Fprintln(os.Stderr, "fakemfs: want -mount DIR -log FILE")
		os.Exit(2)
	}
	lf, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakemfs:", err)
		os.Exit(1)
	}
	o := treetest.Options{
		NewPIDFile: *newPID, RX: *rx, HangAfter: *hangAfter, HangAll: *hangAll,
		AllowOther: true, Log: lf,
	}
	for _, s := range strings.Split(*links, ",") {
		if id, err := strconv.ParseUint(s, 10, 64); err == nil {
			o.Links = append(o.Links, id)
		}
	}
	f, err := treetest.Mount(*mountDir, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakemfs: mount:", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		os.Exit(0)
	}()
	if *readyPath != "" {
		os.WriteFile(*readyPath, []byte("ready\n"), 0o644)
	}
	f.Wait()
}
