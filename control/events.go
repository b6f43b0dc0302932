package control

// Log events: the value of the EventField field on the log lines that
// other code recognises (the CLI's log limiter, the shell tests), so that
// a line is known by a stable name and its message stays text for people,
// free to be reworded.
const (
	// EventField is the name of the field.
	EventField = "event"
	// EventAcceptFailed: an accept on a listening socket failed. While
	// its cause lasts (a client holding every descriptor the daemon may
	// have) it comes again at each try, every 10 ms, so the CLI's log
	// limiter lets it through once a second, with how many were not,
	// instead of the burst it allows other lines.
	EventAcceptFailed = "accept_failed"
	// EventRefusedClosed: a process whose seqpacket port was closed for
	// good through its close file connected again, and was refused.
	EventRefusedClosed = "refused_closed_for_good"
)
