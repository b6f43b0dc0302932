package logging

import (
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/multilink/peertext"
)

// safeFormatter wraps the text or JSON formatter so that no call site can
// forget what peer text needs: the message and every field value that is
// not a number or a boolean are escaped with peertext (one line of
// printable text, whatever the reader), and lines are rate-limited per
// (level, message), the ones held back counted in repeated=N.
//
// A logrus hook sees an entry before any formatter does: one (syslog, say)
// must get the same treatment by wrapping it in a Fire that calls guard
// on a lineLimiter of its own (the formatter's counts what it printed).
type safeFormatter struct {
	inner logrus.Formatter
	lim   *lineLimiter
}

func newSafeFormatter(inner logrus.Formatter, slow func(*logrus.Entry) bool) *safeFormatter {
	return &safeFormatter{inner: inner, lim: newLineLimiter(time.Now, slow)}
}

func (f *safeFormatter) Format(e *logrus.Entry) ([]byte, error) {
	safe, ok := guard(e, f.lim)
	if !ok {
		return nil, nil
	}
	return f.inner.Format(safe)
}

// guard returns the entry as it may be shown, or false if the limiter
// holds it back. e itself is left alone.
func guard(e *logrus.Entry, lim *lineLimiter) (*logrus.Entry, bool) {
	pass, held := lim.admitEntry(e)
	if !pass {
		return nil, false
	}
	c := *e
	c.Data = make(logrus.Fields, len(e.Data)+1)
	for k, v := range e.Data {
		c.Data[peertext.Escape(k)] = safeValue(v)
	}
	if held > 0 {
		c.Data["repeated"] = held
	}
	c.Message = peertext.Escape(e.Message)
	return &c, true
}

// summaryEntry is the line that reports held lines of (level, msg) once
// their flood has stopped (lineLimiter.emit), already escaped: it goes
// straight to a formatter or hook, past guard.
func summaryEntry(log *logrus.Logger, level logrus.Level, msg string, held int) *logrus.Entry {
	e := logrus.NewEntry(log).WithFields(logrus.Fields{"repeated": held, "summary": true})
	e.Level, e.Message, e.Time = level, peertext.Escape(msg), time.Now()
	return e
}

// textFormatter is logrus's text formatter for entries that guard has
// escaped already. Left to itself, logrus quotes a value that holds
// anything but letters, digits and -._/@^+ with strconv.Quote, which
// escapes the backslash of each of peertext's escapes again: a newline a
// peer sent showed as \\x0a. Here logrus quotes nothing, and a value (or
// the message) that needs quotes gets them as logrus would put them, with
// only '"' escaped inside: peertext's escapes are shown once, and the
// quoted text is still a Go string literal whose strconv.Unquote is the
// text the peer sent.
type textFormatter struct {
	inner   *logrus.TextFormatter
	colored bool // the message is printed as it is, never quoted
}

func newTextFormatter(f *logrus.TextFormatter) *textFormatter {
	f.DisableQuote = true
	if f.TimestampFormat == "" {
		// What logrus printed when it quoted: the timestamp has ':'s.
		f.TimestampFormat = `"` + time.RFC3339 + `"`
	}
	return &textFormatter{inner: f, colored: f.ForceColors && !f.DisableColors}
}

func (f *textFormatter) Format(e *logrus.Entry) ([]byte, error) {
	c := *e
	c.Data = make(logrus.Fields, len(e.Data))
	for k, v := range e.Data {
		if s, ok := v.(string); ok {
			v = quoteText(s)
		}
		c.Data[k] = v
	}
	if !f.colored {
		c.Message = quoteText(e.Message)
	}
	return f.inner.Format(&c)
}

// quoteText is s, already escaped by peertext, quoted where logrus would
// quote it.
func quoteText(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("-._/@^+", r)) {
			return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
		}
	}
	return s
}

// safeValue is v as it may be shown: numbers and booleans as they are,
// anything else as escaped text (a string, an error, a Stringer, any other
// value as fmt prints it).
func safeValue(v any) any {
	switch x := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return v
	case string:
		return peertext.Escape(x)
	case error:
		return peertext.Escape(x.Error())
	case fmt.Stringer:
		return peertext.Escape(x.String())
	}
	return peertext.Escape(fmt.Sprint(v))
}
