package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatsValue: the bench reads stats with the daemon's client's parser,
// bounded, and takes nothing from text that is not a stats file.
func TestStatsValue(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "stats"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("links: 3\nlinks_total: 17\nhost: attached\ndescription: a: b\n")
	if v, err := statsValue(dir, "links_total"); err != nil || v != 17 {
		t.Errorf("links_total: %d, %v", v, err)
	}
	if v, err := statsValue(dir, "links"); err != nil || v != 3 {
		t.Errorf("links: %d, %v", v, err)
	}
	for _, key := range []string{"host", "absent", "link"} {
		if v, err := statsValue(dir, key); err == nil {
			t.Errorf("%s: %d, want an error", key, v)
		}
	}
	for name, text := range map[string]string{
		"a line that is not key: value": "links: 3\nnot a stats line\n",
		"an upper-case key":             "Junk: 1\nlinks: 3\n",
		"more than a stats file holds":  "links: 3\n" + strings.Repeat("k: v\n", 4000),
	} {
		write(text)
		if v, err := statsValue(dir, "links"); err == nil {
			t.Errorf("%s: read links %d, want an error", name, v)
		}
	}
}
