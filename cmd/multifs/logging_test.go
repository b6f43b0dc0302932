package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/cmd/multifs/logging"
	"multifs/control"
)

// TestAcceptFailuresAreSlow: the daemon's log lets accept failures through
// once a second (slowLine, as serve gives it to the log), and other lines
// with the ordinary burst.
func TestAcceptFailuresAreSlow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.log")
	lg, err := logging.New(logging.Options{Level: "info", Format: "text", File: path, Slow: slowLine})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.NewEntry(lg.Logger)
	start := time.Now()
	for i := 0; i < 5; i++ {
		log.WithField("i", i).WithField(control.EventField, control.EventAcceptFailed).Warn("accept failed")
		log.WithField("i", i).Warn("link joined")
	}
	took := time.Since(start)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	// A slow line's bucket holds one, and gets another each second (the
	// loop takes microseconds, unless the machine stalls it).
	want := 1 + int(took/time.Second)
	if n := strings.Count(out, `msg="accept failed"`); n != want {
		t.Errorf("%d accept failures logged in %v, want %d: %q", n, took, want, out)
	}
	if n := strings.Count(out, `msg="link joined"`); n != 5 {
		t.Errorf("%d other lines logged at once, want all 5: %q", n, out)
	}
}
