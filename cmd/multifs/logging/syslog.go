package logging

import (
	"fmt"
	"io"
	"log/syslog"
	"time"

	"github.com/sirupsen/logrus"
	lsyslog "github.com/sirupsen/logrus/hooks/syslog"
)

// ToSyslog sends the log to the local syslog (/dev/log, which journald
// serves too) with the tag multifs, through logrus's syslog hook, and
// nowhere else: what a daemonized multifs without --log-file does. The
// hook sees each entry before any formatter, so it is wrapped to get the
// same escaping and rate limit (a limiter of its own) and a plain text
// line without a timestamp (syslog stamps it). On an error the log is
// left as it was.
func (l *Log) ToSyslog() error {
	return l.toSyslogAt("", "")
}

// toSyslogAt is ToSyslog with the syslog socket given as log/syslog.Dial
// takes it ("", "": the local syslog's).
func (l *Log) toSyslogAt(network, raddr string) error {
	inner, err := lsyslog.NewSyslogHook(network, raddr, syslog.LOG_DAEMON|syslog.LOG_INFO, "multifs")
	if err != nil {
		return fmt.Errorf("syslog: %w", err)
	}
	text := logrus.New()
	text.SetFormatter(newTextFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true}))
	h := &guardedHook{inner: inner, lim: newLineLimiter(time.Now, l.slow), text: text}
	h.lim.emit = func(level logrus.Level, msg string, held int) {
		inner.Fire(summaryEntry(text, level, msg, held))
	}
	l.Logger.AddHook(h)
	l.Logger.SetOutput(io.Discard)
	l.Logger.SetFormatter(nullFormatter{})
	return nil
}

// guardedHook passes an entry to its hook as guard lets it be shown.
type guardedHook struct {
	inner logrus.Hook
	lim   *lineLimiter
	text  *logrus.Logger // its formatter renders the line
}

func (h *guardedHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *guardedHook) Fire(e *logrus.Entry) error {
	safe, ok := guard(e, h.lim)
	if !ok {
		return nil
	}
	safe.Logger = h.text
	return h.inner.Fire(safe)
}

// nullFormatter renders nothing: the output is the hook's alone.
type nullFormatter struct{}

func (nullFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }
