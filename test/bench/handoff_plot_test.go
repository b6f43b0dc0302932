package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotter"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func checkXYs(t *testing.T, what string, got plotter.XYs, want [][2]float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d points %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i, w := range want {
		if !near(got[i].X, w[0]) || !near(got[i].Y, w[1]) {
			t.Errorf("%s[%d] = (%v, %v), want (%v, %v)", what, i, got[i].X, got[i].Y, w[0], w[1])
		}
	}
}

// The recorded samples become the plotted series: cumulative counters at
// uneven sample times into per-second rates at each interval's middle,
// per-bin receipts into per-second rates at each bin's middle, iperf3's
// intervals into steps.
func TestHandoffSeries(t *testing.T) {
	tr := &hoTrace{
		col:   hoDedup,
		binMs: 25,
		at:    []float64{0, 25, 50, 100, 100},
		link: [2][]uint64{
			{0, 250, 500, 500, 500},
			{0, 0, 100, 1100, 1200}, // the last sample has no time of its own: skipped
		},
		dropped: []uint64{0, 0, 50, 40, 40}, // a counter that went down gives 0
		first:   []uint64{250, 0, 125},
		again:   []uint64{0, 10, 0},
	}
	links, host := frameSeries(tr)
	if len(links) != 2 || links[0].name != "link 1" || links[1].name != "new link" {
		t.Fatalf("link series %+v", links)
	}
	checkXYs(t, "link 1", links[0].pts, [][2]float64{{12.5, 10000}, {37.5, 10000}, {75, 0}})
	checkXYs(t, "new link", links[1].pts, [][2]float64{{12.5, 0}, {37.5, 4000}, {75, 20000}})
	if len(host) != 3 {
		t.Fatalf("host series %+v", host)
	}
	checkXYs(t, host[0].name, host[0].pts, [][2]float64{{12.5, 10000}, {37.5, 0}, {62.5, 5000}})
	checkXYs(t, host[1].name, host[1].pts, [][2]float64{{12.5, 0}, {37.5, 400}, {62.5, 0}})
	checkXYs(t, host[2].name, host[2].pts, [][2]float64{{12.5, 0}, {37.5, 2000}, {75, 0}})

	// The reference: no dup_dropped series, and without the shim no
	// per-link series.
	ref := &hoTrace{col: hoRef, binMs: 25, first: []uint64{1}, again: []uint64{1}}
	links, host = frameSeries(ref)
	if len(links) != 0 || len(host) != 2 {
		t.Errorf("reference without counters: %d link series, %d host series; want 0, 2", len(links), len(host))
	}

	tcp := &hoTCPTrace{start: []float64{0, 0.5}, end: []float64{0.5, 1.0}, mbps: []float64{300, 100}}
	checkXYs(t, "tcp", tcpSeries(tcp), [][2]float64{{0, 300}, {0.5, 300}, {0.5, 100}, {1, 100}})
}

// The sink's bins: receipts land in the bin of their time, first copies
// and duplicates apart; nothing before t0, nothing past maxBins.
func TestRxBins(t *testing.T) {
	b := &rxBins{t0: 1000, width: 10}
	b.add(999, false) // before the run
	b.add(1000, false)
	b.add(1009, true)
	b.add(1035, false)
	b.add(1000+10*maxBins, false) // too late to keep
	if got, want := b.first, []uint64{1, 0, 0, 1}; !equalU(got, want) {
		t.Errorf("first %v, want %v", got, want)
	}
	if got, want := b.again, []uint64{1, 0, 0, 0}; !equalU(got, want) {
		t.Errorf("again %v, want %v", got, want)
	}
}

func equalU(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// drawHandoff writes an SVG holding both columns and every series' name.
func TestDrawHandoff(t *testing.T) {
	b := &bench{runs: 1, dur: 0, res: newResults(), picture: &hoPicture{}, root: t.TempDir()}
	for _, col := range []string{hoDedup, hoRef} {
		tr := &hoTrace{col: col, binMs: 25, rate: handoffRate,
			at:    []float64{0, 25, 50},
			link:  [2][]uint64{{0, 250, 250}, {0, 0, 250}},
			first: []uint64{250, 250}, again: []uint64{0, 250}}
		if col == hoDedup {
			tr.dropped = []uint64{0, 0, 250}
		}
		b.picture.keep(tr, &rxBins{first: tr.first, again: tr.again}, 20, 40, 50)
		b.picture.keepTCP(col, 3, &iperfIntervals{}, 1.1, 1.6, 0)
	}
	out := filepath.Join(t.TempDir(), "h.svg")
	if err := b.drawHandoff(out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	svg := string(data)
	for _, want := range []string{"<svg", "multifs: frames each link", "reference: frames each link", "new link",
		"duplicates dropped by B", "duplicates received", "TCP A → B"} {
		if !strings.Contains(svg, want) {
			t.Errorf("the SVG lacks %q", want)
		}
	}
}

// The sink fills the bins as it counts: a frame's first copy and its
// duplicate apart, other runs' frames not at all.
func TestSinkBins(t *testing.T) {
	bins := &rxBins{t0: 0, width: 100}
	o := sinkOpts{run: 7, seqs: 4, bins: bins}
	var r sinkResult
	r.seen = make([]uint8, o.seqs)
	f := newFrame(64)
	stamp(f, 7, 2)
	r.count(o, f, 50)
	r.count(o, f, 150)
	stamp(f, 8, 1) // another run's
	r.count(o, f, 160)
	if !equalU(bins.first, []uint64{1, 0}) || !equalU(bins.again, []uint64{0, 1}) {
		t.Errorf("first %v again %v, want [1 0] and [0 1]", bins.first, bins.again)
	}
}
