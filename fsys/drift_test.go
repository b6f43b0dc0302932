package fsys

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"multifs/docs"
	"multifs/fsys/treeclient"
	"multifs/multilink"
)

// TestStatsKeysDocumented: every key a stats file is written with is an
// item of multifs(1)'s STATS section, and every item there is a key the
// tree writes (package docs holds the page).
func TestStatsKeysDocumented(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	ml := multilink.New(logrus.NewEntry(l))
	defer ml.Close()
	tr := &tree{Config: Config{Multilink: ml}}
	if _, err := ml.AttachHost(multilink.PeerInfo{Transport: "vde"}, newNullConn(), nil); err != nil {
		t.Fatal(err)
	}
	p, _ := addLink(ml, multilink.PeerInfo{Transport: "vde"}, newNullConn(), nil)
	var written []string
	for _, text := range []string{tr.rootStats(), tr.hostStats(), portStats(p, false)} {
		// What the daemon writes, its client must read.
		st, err := treeclient.ParseStats([]byte(text))
		if err != nil {
			t.Fatalf("stats the daemon writes do not parse: %v:\n%s", err, text)
		}
		for k := range st {
			written = append(written, k)
		}
	}
	slices.Sort(written)
	written = slices.Compact(written)
	// host/stats's first line is described in the text that follows the
	// items ("starts with attached: yes|no"), not as an item.
	documented := append(docs.Terms("STATS"), "attached")
	for _, k := range written {
		if !slices.Contains(documented, k) {
			t.Errorf("stats key %s is not in multifs(1)'s STATS section", k)
		}
	}
	for _, k := range docs.Terms("STATS") {
		if !slices.Contains(written, k) {
			t.Errorf("multifs(1)'s STATS section has an item %s, which no stats file carries", k)
		}
	}
	if !strings.Contains(docs.Section("STATS"), ".BR attached: ") {
		t.Error("multifs(1)'s STATS section does not say host/stats starts with attached:")
	}
}
