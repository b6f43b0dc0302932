package probeframe

import (
	"bytes"
	"testing"
)

func TestBuildCheck(t *testing.T) {
	buf := make([]byte, 100)
	f := Build(buf, 1234, 0x01)
	if seq, isProbe, intact := Check(f); seq != 1234 || !isProbe || !intact {
		t.Fatalf("Check(Build(1234)) = %d %v %v", seq, isProbe, intact)
	}
	f[60] ^= 1
	if _, isProbe, intact := Check(f); !isProbe || intact {
		t.Fatalf("a damaged frame reads intact")
	}
	f[HdrLen] ^= 1 // the magic
	if _, isProbe, _ := Check(f); isProbe {
		t.Fatalf("a frame without the magic reads as a probe frame")
	}
}

func TestTally(t *testing.T) {
	tl := NewTally(3)
	buf := make([]byte, 64)
	for _, seq := range []uint64{0, 2, 2, 7} { // 7: beyond the count
		tl.Add(Build(buf, seq, 0x01), len(buf))
	}
	tl.Add(bytes.Repeat([]byte{0}, 64), 64) // other traffic: ignored
	tl.Add(buf, len(buf)+1)                 // truncated
	if tl.Complete() {
		t.Fatal("complete without seq 1")
	}
	if tl.received != 4 || tl.unique != 2 || tl.dups != 1 || tl.corrupt != 2 {
		t.Fatalf("received=%d unique=%d dups=%d corrupt=%d, want 4 2 1 2", tl.received, tl.unique, tl.dups, tl.corrupt)
	}
	if tl.Result() == nil {
		t.Fatal("a tally with a frame lost passed")
	}
	tl.Add(Build(buf, 1, 0x01), len(buf))
	if !tl.Complete() {
		t.Fatal("all three came, not complete")
	}
}
