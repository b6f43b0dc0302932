package main

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestCClientCounts builds vdeclient and sends 2,000 paced frames from a
// generator to a sink that holds a hub (the ceiling's shape), with a second
// sink of another run id on the same hub: the first must count every frame
// once, in order, with latencies; the second none of them.
func TestCClientCounts(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{root: root, tmp: t.TempDir(), clean: newCleaner(), res: newResults()}
	defer b.clean.run()
	b.buildCClient()
	if b.cclient == "" {
		t.Fatalf("vdeclient did not build (gcc, libvdeplug-dev): %v", b.res.Notices)
	}
	hub := filepath.Join(b.tmp, "hub")
	sink, err := b.startC("sink", "sink", "hub://"+hub, "-i", "7", "-n", "100000", "-l", "-T", "20")
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.startC("other", "sink", "vde://"+hub, "-i", "8", "-n", "100000", "-T", "20")
	if err != nil {
		t.Fatal(err)
	}
	gen, err := b.startC("gen", "gen", "vde://"+hub, "-i", "7", "-s", "100", "-r", "20000", "-t", "0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := gen.say("go"); err != nil {
		t.Fatal(err)
	}
	g, err := gen.result(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if g["sent"] != 2000 {
		t.Fatalf("generator sent %d, want 2000 (20,000/s for 0.1 s)", g["sent"])
	}
	for _, c := range []*cproc{sink, other} {
		if err := c.say(fmt.Sprint(g["sent"])); err != nil {
			t.Fatal(err)
		}
	}
	r, err := sink.result(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r["frames"] != 2000 || r["unique"] != 2000 || r["dups"] != 0 || r["gaps"] != 0 || r["bytes"] != 2000*100 {
		t.Errorf("sink: %v; want 2000 frames of 100 bytes, all unique, no gap", r)
	}
	if r["lat_n"] != 2000 || r["p50_ns"] <= 0 || r["p99_ns"] < r["p50_ns"] || r["max_ns"] < r["p99_ns"] {
		t.Errorf("sink latencies: %v", r)
	}
	if r["first_ns"] < g["start_ns"] || r["last_ns"] < r["first_ns"] {
		t.Errorf("sink times %v before the generator's start %d", r, g["start_ns"])
	}
	o, err := other.result(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if o["frames"] != 0 {
		t.Errorf("the sink of run 8 counted %d frames of run 7", o["frames"])
	}
	gen.finish()
}
