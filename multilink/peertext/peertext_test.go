package peertext

import (
	"bufio"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"vde_plug user=1000 pid=4242", "vde_plug user=1000 pid=4242"},
		{"$(id>/tmp/x) `id` ;|&<>'\"", "$(id>/tmp/x) `id` ;|&<>'\""},
		{"héllo wörld 日本語 🦀 \u00a0nbsp", "héllo wörld 日本語 🦀 \u00a0nbsp"},
		{"a\nid: 99", `a\x0aid: 99`},
		{"a\r\nb\tc\x00d\x1be[31m\x7f", `a\x0d\x0ab\x09c\x00d\x1be[31m\x7f`},
		{`back\slash \x41`, `back\\slash \\x41`},
		{"nel\u0085ls\u2028ps\u2029", `nel\u0085ls\u2028ps\u2029`},
		{"csi\u009b1m", `csi\u009b1m`},
		{"rlo\u202eevil\u2066\u200b\ufeff", `rlo\u202eevil\u2066\u200b\ufeff`},
		{"bad\xff\xfe utf8 \xe2\x80", `bad\xff\xfe utf8 \xe2\x80`},
		{"real \ufffd stays", "real \ufffd stays"},
		{"tag \U000e0041 private \ue000", `tag \U000e0041 private \ue000`},
	} {
		if got := Escape(c.in); got != c.want {
			t.Errorf("Escape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestEscapeNoAlloc: the common case, a plain description, costs nothing.
func TestEscapeNoAlloc(t *testing.T) {
	s := "vde_plug user=1000 pid=4242 日本"
	if n := testing.AllocsPerRun(100, func() { _ = Escape(s) }); n != 0 {
		t.Fatalf("%v allocations for a string that needs no escape", n)
	}
}

// lineBreaks are what some reader takes for the end of a line: '\n' for
// strings.Split and bufio.Scanner, all of these for Python's splitlines(),
// and the Unicode line and paragraph separators.
var lineBreaks = []rune{'\n', '\r', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029}

// checkSafe is the property every output must have, whatever the input.
func checkSafe(t *testing.T, in string) {
	t.Helper()
	out := Escape(in)
	if !utf8.ValidString(out) {
		t.Fatalf("Escape(%q) = %q: not valid UTF-8", in, out)
	}
	if n := len(strings.Split(out, "\n")); n != 1 {
		t.Fatalf("Escape(%q) = %q: strings.Split sees %d lines", in, out, n)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	lines := 0
	for sc.Scan() {
		lines++
		if sc.Text() != out {
			t.Fatalf("Escape(%q) = %q: bufio.Scanner line %q", in, out, sc.Text())
		}
	}
	if lines > 1 {
		t.Fatalf("Escape(%q) = %q: bufio.Scanner sees %d lines", in, out, lines)
	}
	for _, r := range out {
		for _, lb := range lineBreaks {
			if r == lb {
				t.Fatalf("Escape(%q) = %q holds line break %U", in, out, r)
			}
		}
		if unicode.In(r, unicode.Zl, unicode.Zp, unicode.Cc, unicode.Cf) || !unicode.IsGraphic(r) {
			t.Fatalf("Escape(%q) = %q holds %U", in, out, r)
		}
	}
	// Unambiguous: the escapes decode back to exactly the input.
	back, err := strconv.Unquote(`"` + strings.ReplaceAll(out, `"`, `\"`) + `"`)
	if err != nil || back != in {
		t.Fatalf("Escape(%q) = %q does not decode back (%q, %v)", in, out, back, err)
	}
}

// TestEscapeProperty: random mixes of plain text, every kind of line
// break and control, and random bytes.
func TestEscapeProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "id: 99", "\\", "\\x41", "\"", " ", "é", "日", "🦀", "\ufffd", "\u00a0"}
	for r := rune(0); r < 0x100; r++ {
		pieces = append(pieces, string(r))
	}
	for _, r := range []rune{0x2028, 0x2029, 0x202a, 0x202e, 0x2066, 0x2069, 0x200b, 0x200e, 0xfeff, 0xe000, 0x10ffff, 0xe0001} {
		pieces = append(pieces, string(r))
	}
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for n := rng.IntN(12); n > 0; n-- {
			if rng.IntN(4) == 0 {
				b.WriteByte(byte(rng.IntN(256)))
			} else {
				b.WriteString(pieces[rng.IntN(len(pieces))])
			}
		}
		checkSafe(t, b.String())
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "plain", "a\nb", "\u0085\u2028\u2029", "\xff\xfe", "\\x0a", "\x1b[2J", "\u202e"} {
		f.Add(s)
	}
	f.Fuzz(checkSafe)
}
