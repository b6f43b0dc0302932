package main

import (
	"encoding/json"
	"testing"
)

func TestParseHandoffLine(t *testing.T) {
	n, ready, overlap, err := parseHandoffLine("new=2 closed=1 ready_ms=34 overlap_ms=508 dup_dropped=51", "1")
	if err != nil || n != "2" || ready != 34 || overlap != 508 {
		t.Errorf("a good line: %q %v %v %v", n, ready, overlap, err)
	}
	for _, c := range []struct{ line, old, wantNew string }{
		{"new=3 closed=- ready_ms=10 overlap_ms=500 dup_dropped=0", "1", "3"}, // OLD closed by someone else
		{"new=3 closed=2 ready_ms=10 overlap_ms=500 dup_dropped=0", "1", "3"}, // another link closed
		{"new=3 closed=1 ready_ms=x overlap_ms=500", "1", "3"},
		{"closed=1 ready_ms=1 overlap_ms=500", "1", ""},
		{"new=../x closed=1 ready_ms=1 overlap_ms=500", "1", ""}, // never a path to follow
		{"", "1", ""},
	} {
		n, _, _, err := parseHandoffLine(c.line, c.old)
		if err == nil {
			t.Errorf("%q: no error", c.line)
		}
		if n != c.wantNew {
			t.Errorf("%q: new link %q, want %q", c.line, n, c.wantNew)
		}
	}
}

func TestHandoffPhases(t *testing.T) {
	// iperf3 -t 3 -i 0.5: six intervals; a hand-off from 1.1 s to 1.7 s.
	var r iperfIntervals
	doc := `{"intervals":[
		{"sum":{"start":0,"end":0.5,"bits_per_second":100,"retransmits":1}},
		{"sum":{"start":0.5,"end":1.0,"bits_per_second":300,"retransmits":2}},
		{"sum":{"start":1.0,"end":1.5,"bits_per_second":40,"retransmits":7}},
		{"sum":{"start":1.5,"end":2.0,"bits_per_second":60,"retransmits":5}},
		{"sum":{"start":2.0,"end":2.5,"bits_per_second":500,"retransmits":0}},
		{"sum":{"start":2.5,"end":3.0,"bits_per_second":700,"retransmits":0}}],
		"end":{"sum_sent":{"retransmits":15}}}`
	if err := json.Unmarshal([]byte(doc), &r); err != nil {
		t.Fatal(err)
	}
	p := r.phases(1.1, 1.7)
	if p.nBefore != 2 || p.nDuring != 2 || p.nAfter != 2 {
		t.Fatalf("intervals before/during/after: %d/%d/%d, want 2/2/2", p.nBefore, p.nDuring, p.nAfter)
	}
	if p.before != 200 || p.during != 50 || p.after != 600 || p.retrDuring != 12 {
		t.Errorf("phases = %+v", p)
	}
	// An interval ending within hoSlack of the start may already carry
	// some of the hand-off: it is counted as during.
	p = r.phases(1.05, 1.7)
	if p.nBefore != 1 || p.nDuring != 3 {
		t.Errorf("start at 1.05 s: before/during %d/%d, want 1/3", p.nBefore, p.nDuring)
	}
}

func TestGaps(t *testing.T) {
	seen := []uint8{1, 0, 0, 1, 2, 0, 1}
	if got, want := gaps(seen, 1000), "1-2 (1-3 ms), 5-5 (5-6 ms)"; got != want {
		t.Errorf("gaps = %q, want %q", got, want)
	}
}
