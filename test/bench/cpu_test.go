package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A real line's shape, with a command name holding ") (" and spaces:
	// utime 1234 and stime 567 are fields 14 and 15.
	line := "4242 (vde_plug) (x y) S 1 4242 4242 0 -1 4194560 120 0 0 0 1234 567 0 0 20 0 3 0 99 1000 200 18446744073709551615\n"
	got, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got != 1234+567 {
		t.Fatalf("parseStat = %d, want %d", got, 1234+567)
	}
	for _, bad := range []string{"", "4242 vde_plug S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 120 0 0 0 12a4 567 0"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
}

func TestProcCPUOfSelfGrows(t *testing.T) {
	m, err := startCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until /proc shows at least two ticks more.
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		cpu, wall, err := m.stop()
		if err != nil {
			t.Fatal(err)
		}
		if cpu >= 2*clockTick {
			if wall <= 0 {
				t.Fatalf("wall time %v", wall)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s of spinning showed %v of CPU (%d)", cpu, x)
		}
	}
}
