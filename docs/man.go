// Package docs holds the man page, multifs(1), the one reference for the
// command line, the tree, the stats keys and the rules; the README points
// to it. The package gives tests the page's text, section by section, so
// that what the code accepts and writes is held to what the page says
// (the drift tests of cmd/multifs and fsys). The daemon does not import it.
package docs

import (
	_ "embed"
	"regexp"
	"strings"
)

//go:embed multifs.1
var page string

// Section is the text of the man page's section NAME (a .SH heading),
// its roff requests kept as lines and its escapes undone: `\-` is `-`,
// font changes are gone.
func Section(name string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(page, "\n") {
		if h, ok := strings.CutPrefix(line, ".SH "); ok {
			in = strings.Trim(h, `"`) == name
			continue
		}
		if in {
			b.WriteString(plain(line))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

var fontEscape = regexp.MustCompile(`\\f(\[[A-Z]*\]|[BIRP])`)

// plain undoes the roff escapes the page uses inside words.
func plain(line string) string {
	line = fontEscape.ReplaceAllString(line, "")
	line = strings.NewReplacer(`\-`, "-", `\(lq`, `"`, `\(rq`, `"`, `\~`, " ", `\&`, "", `\e`, `\`).Replace(line)
	return line
}

// Terms are the words of the item heads (the line after each .TP) of
// section name: the options, keys or files the section describes, one
// entry per word that is made of letters, digits, '_' and '-' (so
// `.BR pid ", " uid` gives pid and uid, and `.BI \-\-sockdir " DIR"`
// gives --sockdir and DIR).
func Terms(name string) []string {
	var terms []string
	for _, head := range Heads(name) {
		terms = append(terms, words.FindAllString(head, -1)...)
	}
	return terms
}

// Heads are the item heads of section name: the line after each .TP,
// without its macro.
func Heads(name string) []string {
	var heads []string
	lines := strings.Split(Section(name), "\n")
	for i, line := range lines {
		if !strings.HasPrefix(line, ".TP") || i+1 >= len(lines) {
			continue
		}
		head := lines[i+1]
		if j := strings.IndexByte(head, ' '); strings.HasPrefix(head, ".") && j > 0 {
			head = head[j+1:] // the macro (.B, .BR, .BI) is no term
		}
		heads = append(heads, head)
	}
	return heads
}

var words = regexp.MustCompile(`[-A-Za-z0-9_]+`)
