package logging

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Every log line a peer or a local user can trigger (a bad handshake, a
// bad write to a close file, a runt frame at debug level) may come as fast
// as they can make it. Lines are therefore limited per (level, message):
// a burst of lineBurst, then linesPerSecond. The burst covers a legitimate
// crowd (hundreds of peers joining, or refused, at once); what is held
// back is counted in a repeated=N field on the next line let through.
// Messages are constant strings (peer text goes in fields), so the number
// of keys is small; maxLineKeys bounds it all the same.
const (
	lineBurst      = 300
	linesPerSecond = 5
	maxLineKeys    = 512
)

// slowRate is the rate of the lines Options.Slow picks: they repeat at
// each retry for as long as their cause lasts, and once a second is
// enough to say it still does.
var slowRate = lineRate{burst: 1, perSecond: 1}

// lineRate is a token bucket: burst lines at once, then perSecond.
type lineRate struct {
	burst, perSecond float64
}

type lineKey struct {
	level logrus.Level
	msg   string
}

type lineBucket struct {
	rate   lineRate
	tokens float64
	last   time.Time
	held   int       // lines held back since the last one let through
	heldAt time.Time // when the last of them was
}

// lineLimiter decides which lines go through: see lineBurst.
//
// Lines held back are not lost from the count: the next line of the same
// key let through says repeated=N, and a key that has held lines back and
// then stayed quiet for summaryDelay (a flood that just stopped) has them
// reported on a line of its own (the message, repeated=N, summary=true)
// through emit. So the log accounts for every event, a flood in progress
// adds no line, and an idle daemon has no timer running.
type lineLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	buckets map[lineKey]*lineBucket
	swept   time.Time
	emit    func(level logrus.Level, msg string, held int) // nil: no summaries
	slow    func(*logrus.Entry) bool                       // Options.Slow; nil picks none
	pending bool                                           // a summary is scheduled
}

// summaryDelay is how long held-back counts wait for a line of their own
// key to carry them before a summary line does.
const summaryDelay = time.Second

func newLineLimiter(now func() time.Time, slow func(*logrus.Entry) bool) *lineLimiter {
	return &lineLimiter{now: now, slow: slow, buckets: make(map[lineKey]*lineBucket)}
}

// overflowMsg keys the bucket that lines of unknown messages share once
// maxLineKeys keys are in use (no message is empty).
const overflowMsg = ""

// admitEntry is admit for e, slow if the limiter's slow picks it.
func (l *lineLimiter) admitEntry(e *logrus.Entry) (bool, int) {
	return l.admit(e.Level, e.Message, l.slow != nil && l.slow(e))
}

// admit reports whether a line may go through now, and if so how many of
// its key were held back since the last one that went. slow gives a new
// key slowRate instead of the burst; the key is (level, msg) either way.
func (l *lineLimiter) admit(level logrus.Level, msg string, slow bool) (bool, int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := lineKey{level, msg}
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= maxLineKeys && now.Sub(l.swept) >= time.Second {
			l.sweep(now)
		}
		r := lineRate{burst: lineBurst, perSecond: linesPerSecond}
		if slow {
			r = slowRate
		}
		if len(l.buckets) >= maxLineKeys {
			k = lineKey{level, overflowMsg}
			r = lineRate{burst: lineBurst, perSecond: linesPerSecond}
			b = l.buckets[k]
		}
		if b == nil {
			b = &lineBucket{rate: r, tokens: r.burst, last: now}
			l.buckets[k] = b
		}
	}
	b.refill(now)
	if b.tokens < 1 {
		b.held++
		b.heldAt = now
		if l.emit != nil && !l.pending {
			l.pending = true
			time.AfterFunc(summaryDelay, l.summarize)
		}
		return false, 0
	}
	b.tokens--
	held := b.held
	b.held = 0
	return true, held
}

// summarize reports, through emit, every key that holds lines back and has
// been quiet for summaryDelay, clears their counts, and comes again for
// the keys still busy.
func (l *lineLimiter) summarize() {
	type heldLines struct {
		key  lineKey
		held int
	}
	var out []heldLines
	now := l.now()
	l.mu.Lock()
	next := time.Duration(0)
	for k, b := range l.buckets {
		if b.held == 0 {
			continue
		}
		if quiet := now.Sub(b.heldAt); quiet < summaryDelay {
			if wait := summaryDelay - quiet; next == 0 || wait < next {
				next = wait
			}
			continue
		}
		out = append(out, heldLines{k, b.held})
		b.held = 0
	}
	if next > 0 {
		time.AfterFunc(next, l.summarize)
	} else {
		l.pending = false
	}
	l.mu.Unlock()
	for _, h := range out {
		l.emit(h.key.level, h.key.msg, h.held)
	}
}

func (b *lineBucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.rate.burst, b.tokens+d.Seconds()*b.rate.perSecond)
	}
	b.last = now
}

// sweep forgets the keys whose bucket is full again and holds no count:
// a fresh bucket would behave the same. It runs once a second at most, so
// that a full map does not cost a walk per line.
func (l *lineLimiter) sweep(now time.Time) {
	l.swept = now
	for k, b := range l.buckets {
		b.refill(now)
		if b.held == 0 && b.tokens >= b.rate.burst {
			delete(l.buckets, k)
		}
	}
}
