package docs

import (
	"slices"
	"strings"
	"testing"
)

func TestSections(t *testing.T) {
	for _, name := range []string{"SYNOPSIS", "OPTIONS", "HANDOFF", "FILES", "STATS"} {
		if strings.TrimSpace(Section(name)) == "" {
			t.Errorf("section %s is missing or empty", name)
		}
	}
	if Section("NO SUCH SECTION") != "" {
		t.Error("a missing section has text")
	}
	if s := Section("OPTIONS"); strings.Contains(s, `\-`) || strings.Contains(s, `\fB`) {
		t.Error("escapes left in the text")
	}
}

func TestTerms(t *testing.T) {
	opts := Terms("OPTIONS")
	for _, want := range []string{"--sockdir", "--foreground", "-f", "mode", "dedup"} {
		if !slices.Contains(opts, want) {
			t.Errorf("OPTIONS terms lack %q: %q", want, opts)
		}
	}
	stats := Terms("STATS")
	for _, want := range []string{"pid", "uid", "rx_dup_dropped", "links_total"} {
		if !slices.Contains(stats, want) {
			t.Errorf("STATS terms lack %q: %q", want, stats)
		}
	}
}
