// Package peertext makes peer-supplied text safe to show: a vde-2 peer's
// description, a data-socket path from its request, what a local user
// wrote to a close file. Such text ends up in stats files and in logs,
// whose readers split lines in different ways (bufio.Scanner on '\n',
// Python's str.splitlines() on a dozen characters, terminals on escape
// sequences, editors reordering text around bidi controls). Escape turns it
// into one line of printable text, the same for every such reader, and
// reversibly, so that nothing the peer chose is hidden either.
//
// The package is a leaf: it imports only the standard library, so the
// stats renderer and the CLI's log formatter can share it.
package peertext

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// Escape returns s with every character that is not graphic (printable
// or a plain space) written as an escape, in Go's notation:
//
//   - a backslash as \\ (so an escape in the output is always one of ours);
//   - C0 controls, DEL and invalid UTF-8 bytes as \xHH (a byte);
//   - other non-graphic characters as \uHHHH or \UHHHHHHHH: the C1
//     controls (U+0085 NEL among them), the line and paragraph separators
//     U+2028/U+2029, format characters (bidi controls such as U+202E,
//     zero-width characters, U+FEFF), private-use and unassigned code
//     points.
//
// Everything else, letters and symbols of any script included, is kept as
// it is. The result is valid UTF-8, has no line break for any reader, and
// strconv.Unquote of it in double quotes (with '"' escaped) gives back s.
// A string that needs nothing is returned as it is, without allocating.
func Escape(s string) string {
	i := firstUnsafe(s)
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII(c) {
				b.WriteByte(c)
			} else if c == '\\' {
				b.WriteString(`\\`)
			} else {
				writeHex(&b, `\x`, uint32(c), 2)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			writeHex(&b, `\x`, uint32(c), 2)
		case unicode.IsGraphic(r):
			b.WriteString(s[i : i+n])
		case r <= 0xffff:
			writeHex(&b, `\u`, uint32(r), 4)
		default:
			writeHex(&b, `\U`, uint32(r), 8)
		}
		i += n
	}
	return b.String()
}

// firstUnsafe is the index of the first byte Escape changes, or len(s).
func firstUnsafe(s string) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if !safeASCII(c) {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !unicode.IsGraphic(r) {
			return i
		}
		i += n
	}
	return len(s)
}

// safeASCII: printable ASCII other than the backslash.
func safeASCII(c byte) bool { return c >= 0x20 && c < 0x7f && c != '\\' }

func writeHex(b *strings.Builder, prefix string, v uint32, digits int) {
	b.WriteString(prefix)
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		b.WriteByte(hexDigits[v>>uint(shift)&0xf])
	}
}
