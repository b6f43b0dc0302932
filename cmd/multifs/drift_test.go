package main

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"multifs/docs"
)

// The drift tests hold --help and the man page (package docs) to what the
// parsers accept, both ways: a flag or key added to one and not the others
// fails here.

// flagNames are the spellings of fs's flags: --long and -s. pflag makes
// every flag a long one; a one-letter long name (-o's) is the shorthand's
// double and is not spelled out anywhere.
func flagNames(fs *pflag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if len(f.Name) > 1 {
			names = append(names, "--"+f.Name)
		}
		if f.Shorthand != "" {
			names = append(names, "-"+f.Shorthand)
		}
	})
	sort.Strings(names)
	return names
}

var flagWord = regexp.MustCompile(`(?:^|[\s,\[(])(--?[a-zA-Z][-a-zA-Z]*)`)

// helpFlags are the flags named on the flag lines of a usage text (the
// lines that start with blanks and a dash).
func helpFlags(usage string) []string {
	var names []string
	for _, line := range strings.Split(usage, "\n") {
		if t := strings.TrimLeft(line, " "); t == line || !strings.HasPrefix(t, "-") {
			continue
		}
		for _, m := range flagWord.FindAllStringSubmatch(line, -1) {
			names = append(names, m[1])
		}
	}
	return uniq(names)
}

// manFlags are the flags the item heads of a man page section name.
func manFlags(section string) []string {
	var names []string
	for _, t := range docs.Terms(section) {
		if strings.HasPrefix(t, "-") {
			names = append(names, t)
		}
	}
	return uniq(names)
}

func uniq(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

// sameSet fails t unless got and want hold the same names.
func sameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	for _, n := range want {
		if !slices.Contains(got, n) {
			t.Errorf("%s lacks %s", what, n)
		}
	}
	for _, n := range got {
		if !slices.Contains(want, n) {
			t.Errorf("%s has %s, which the parser does not accept", what, n)
		}
	}
}

func TestDaemonFlagsDocumented(t *testing.T) {
	accepted := flagNames(daemonFlags(&options{}))
	sameSet(t, "multifs --help", helpFlags(usage), accepted)
	sameSet(t, "multifs(1) OPTIONS", manFlags("OPTIONS"), accepted)
}

var keyWord = regexp.MustCompile(`\b([a-z]+)=`)

func TestOptionKeysDocumented(t *testing.T) {
	// --help names each key as KEY= on its -o lines.
	var help []string
	for _, m := range keyWord.FindAllStringSubmatch(usage[strings.Index(usage, "  -o "):strings.Index(usage, "  --mode")], -1) {
		help = append(help, m[1])
	}
	sameSet(t, "multifs --help -o", uniq(help), uniq(slices.Clone(optionKeys)))
	// The man page gives each key an item of its own (mode=, dirmode=,
	// grp=, dedup=) or names it in -o's (the netnode keys).
	opts := docs.Section("OPTIONS")
	var man []string
	for _, h := range docs.Heads("OPTIONS") {
		for _, m := range keyWord.FindAllStringSubmatch(h, -1) {
			man = append(man, m[1])
		}
	}
	for _, k := range optionKeys {
		if !slices.Contains(man, k) && !strings.Contains(opts, ".BR "+k) && !strings.Contains(opts, ".B "+k+"\n") {
			t.Errorf("multifs(1) OPTIONS does not name the key %s", k)
		}
	}
	for _, k := range man {
		if !slices.Contains(optionKeys, k) {
			t.Errorf("multifs(1) OPTIONS has an item for %s=, which the parser does not accept", k)
		}
	}
	// Every key is one the parser takes, and nothing else is.
	for _, k := range optionKeys {
		if err := (&options{}).setKey(k, "x", "test"); err != nil && strings.Contains(err.Error(), "unknown option") {
			t.Errorf("optionKeys has %s, which setKey refuses", k)
		}
	}
	if err := (&options{}).setKey("nokey", "x", "test"); err == nil || !strings.Contains(err.Error(), "unknown option") {
		t.Errorf("setKey took an unknown key: %v", err)
	}
}

func TestLogLevelsDocumented(t *testing.T) {
	opts := docs.Section("OPTIONS")
	i := strings.Index(opts, "--log-level")
	j := strings.Index(opts[i:], ".TP")
	item := opts[i : i+j]
	for _, l := range []string{"panic", "fatal", "trace", "debug", "info", "warn", "error"} {
		inMan := regexp.MustCompile(`\.BR? ` + l + `\b`).MatchString(item)
		if inMan != slices.Contains(logLevels, l) {
			t.Errorf("log level %s: accepted %v, in multifs(1) %v", l, slices.Contains(logLevels, l), inMan)
		}
		if strings.Contains(usage, l) != slices.Contains(logLevels, l) {
			t.Errorf("log level %s: accepted %v, in --help %v", l, slices.Contains(logLevels, l), strings.Contains(usage, l))
		}
	}
}

func TestHandoffFlagsDocumented(t *testing.T) {
	accepted := flagNames(handoffFlags(&handoffOpts{}))
	sameSet(t, "multifs handoff --help", helpFlags(handoffUsage), accepted)
	sameSet(t, "multifs(1) HANDOFF", manFlags("HANDOFF"), accepted)
	// The synopses name the same flags, each one a flag the parser takes:
	// handoff --help's usage line, multifs --help's line for handoff, and
	// the man page's, in SYNOPSIS and at the head of HANDOFF.
	usageLine, _, _ := strings.Cut(handoffUsage, "\n")
	want := synopsisFlags(usageLine)
	if len(want) == 0 {
		t.Fatalf("multifs handoff --help's usage line names no flag: %q", usageLine)
	}
	for _, f := range want {
		if !slices.Contains(accepted, f) {
			t.Errorf("multifs handoff --help's usage line has %s, which the parser does not accept", f)
		}
	}
	synopsis := docs.Section("SYNOPSIS")
	synopsis = synopsis[strings.Index(synopsis, "multifs handoff"):]
	handoffHead := docs.Section("HANDOFF")
	for what, text := range map[string]string{
		"multifs --help's handoff line": handoffSummary,
		"multifs(1) SYNOPSIS":           synopsis[:strings.Index(synopsis, ".PP")],
		"multifs(1) HANDOFF's head":     handoffHead[:strings.Index(handoffHead, ".PP")],
	} {
		if got := synopsisFlags(text); !slices.Equal(got, want) {
			t.Errorf("%s names %v, the usage line %v", what, got, want)
		}
	}
}

var optionalFlag = regexp.MustCompile(`\[\s*(--?[a-zA-Z][-a-zA-Z]*)`)

// synopsisFlags are the flags a synopsis names in brackets ([--timeout D],
// or the man page's ".RB [ --timeout"), in order.
func synopsisFlags(text string) []string {
	var names []string
	for _, m := range optionalFlag.FindAllStringSubmatch(text, -1) {
		names = append(names, m[1])
	}
	return names
}
