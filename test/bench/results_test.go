package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestMedianAndSpread(t *testing.T) {
	for _, c := range []struct {
		in          []float64
		med, lo, hi float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{2, 2, 9, 2, 1}, 2, 1, 9},
	} {
		in := append([]float64(nil), c.in...)
		if got := median(in); got != c.med {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.med)
		}
		if lo, hi := spread(in); lo != c.lo || hi != c.hi {
			t.Errorf("spread(%v) = %v, %v, want %v, %v", c.in, lo, hi, c.lo, c.hi)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Fatalf("median reordered its argument: %v", in)
			}
		}
	}
}

func TestPairedRatios(t *testing.T) {
	got := pairedRatios([]float64{2, 0, 3, 1}, []float64{1, 0, 0, 4})
	want := []float64{2, 1, math.Inf(1), 0.25}
	if len(got) != len(want) {
		t.Fatalf("pairedRatios = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ratio %d = %v, want %v", i, got[i], want[i])
		}
	}
	if pairedRatios([]float64{1, 2}, []float64{1}) != nil || pairedRatios(nil, nil) != nil {
		t.Error("runs that do not pair up gave ratios")
	}
}

func fig(m, ref, ceil []float64) *Figure {
	return newResults().add3("s", "k", "l", "fps", m, ref, ceil)
}

func TestDecide(t *testing.T) {
	atLeast := target{"k", vsRef, ">=", 1.25}
	for _, c := range []struct {
		name          string
		m, ref        []float64
		met, noisy    bool
		value, lo, hi float64
	}{
		// Every run's ratio above: met, not within noise.
		{"all above", []float64{130, 140, 150, 160, 170}, []float64{100, 100, 100, 100, 100}, true, false, 1.5, 1.3, 1.7},
		// Every run below: missed.
		{"all below", []float64{100, 110, 120, 100, 105}, []float64{100, 100, 100, 100, 100}, false, false, 1.05, 1, 1.2},
		// The median above, one run below: met, within noise.
		{"straddles, met", []float64{120, 130, 140, 150, 126}, []float64{100, 100, 100, 100, 100}, true, true, 1.3, 1.2, 1.5},
		// The median below, one run above: missed, within noise.
		{"straddles, missed", []float64{120, 121, 122, 150, 110}, []float64{100, 100, 100, 100, 100}, false, true, 1.21, 1.1, 1.5},
		// Paired, not medians against medians: run i against run i.
		{"paired", []float64{200, 100}, []float64{100, 50}, true, false, 2, 2, 2},
	} {
		d, ok := atLeast.decide(fig(c.m, c.ref, nil))
		if !ok {
			t.Fatalf("%s: not decided", c.name)
		}
		if d.Met != c.met || d.WithinNoise != c.noisy || math.Abs(d.Value-c.value) > 1e-9 ||
			math.Abs(d.Min-c.lo) > 1e-9 || math.Abs(d.Max-c.hi) > 1e-9 {
			t.Errorf("%s: %+v, want met %v, within noise %v, %v in %v-%v", c.name, d, c.met, c.noisy, c.value, c.lo, c.hi)
		}
	}

	// At most: retransmits, 0 against 0 is equal (met), anything against
	// 0 is not.
	atMost := target{"k", vsRef, "<=", 1}
	if d, _ := atMost.decide(fig([]float64{0, 0, 0}, []float64{0, 5, 0}, nil)); !d.Met || d.WithinNoise {
		t.Errorf("0 retransmits against 0 and 5: %+v, want met", d)
	}
	if d, _ := atMost.decide(fig([]float64{3, 3, 0}, []float64{0, 0, 0}, nil)); d.Met || !d.WithinNoise {
		t.Errorf("3 retransmits against 0 twice: %+v, want missed within noise", d)
	}

	// Against the ceiling.
	ceil := target{"k", vsCeiling, ">=", 0.8}
	if d, _ := ceil.decide(fig([]float64{79, 90, 95}, []float64{1, 1, 1}, []float64{100, 100, 100})); !d.Met || !d.WithinNoise {
		t.Errorf("0.79, 0.9, 0.95 of the ceiling: %+v, want met within noise", d)
	}

	// Nothing to compare with: no decision.
	if _, ok := atLeast.decide(fig([]float64{1, 2}, nil, nil)); ok {
		t.Error("decided without a reference")
	}
	if _, ok := ceil.decide(fig([]float64{1, 2}, []float64{1, 2}, nil)); ok {
		t.Error("decided without a ceiling")
	}
	abs := target{"k", absolute, "<", 100}
	if d, ok := abs.decide(fig([]float64{90, 110, 95}, nil, nil)); !ok || !d.Met || !d.WithinNoise {
		t.Errorf("90, 110, 95 < 100: %+v, %v; want met within noise", d, ok)
	}
}

func TestEvaluateAndTable(t *testing.T) {
	r := newResults()
	r.add3("2. real", "real.link_to_host.64.fps", "64 B frames/s", "fps",
		[]float64{130, 140, 120, 150, 126}, []float64{100, 100, 100, 100, 100}, []float64{200, 200, 200, 200, 200})
	r.evaluate(true)
	f := r.find("real.link_to_host.64.fps")
	if len(f.Decisions) != 2 {
		t.Fatalf("decisions %+v, want 2 (against the reference and the ceiling)", f.Decisions)
	}
	if !f.Decisions[0].Met || !f.Decisions[0].WithinNoise || f.Decisions[1].Met {
		t.Errorf("decisions %+v: want met within noise, then missed (0.65 of the ceiling)", f.Decisions)
	}
	var buf bytes.Buffer
	r.printTable(&buf, "header")
	out := buf.String()
	for _, want := range []string{"1.300x (1.200-1.500)", "0.650 (0.600-0.750)", "met (within noise)", "MISSED", "targets: 1 met, 1 missed (1 of them within noise)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
