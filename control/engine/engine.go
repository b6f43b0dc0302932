package engine

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Engine is one set of the waits an FD may be in: the shared epoll of idle
// descriptors and its watcher (poller.go), the hot loop (hotloop.go), and
// the count of threads waiting in poll(2) (maxHot). The daemon makes one
// and closes it at its stop; a test makes its own, so that tests do not
// wait out each other's descriptors.
type Engine struct {
	poller *poller
	loop   *hotLoop
	// hotWaiters counts the threads held in poll(2) now (hotWait).
	hotWaiters atomic.Int32
	closeOnce  sync.Once
}

// New starts an engine: two goroutines, the poller's watcher and the hot
// loop, which Close ends.
func New() (*Engine, error) {
	e := &Engine{}
	var err error
	if e.poller, err = newPoller(); err != nil {
		return nil, err
	}
	if e.loop, err = newHotLoop(); err != nil {
		e.poller.close()
		return nil, err
	}
	return e, nil
}

// Close closes every FD of the engine still open, which ends their waits,
// and then stops the engine's goroutines. NewSocket and OpenTap fail
// afterwards. It returns once all of that is done.
func (e *Engine) Close() error {
	err := os.ErrClosed
	e.closeOnce.Do(func() {
		for _, p := range e.poller.closeFDs() {
			p.Close()
		}
		e.loop.stop()
		e.poller.close()
		err = nil
	})
	return err
}

// NewSocket takes over fd, a socket, with the policy o; name is for
// errors. fd is made non-blocking. On error fd is closed.
func (e *Engine) NewSocket(fd int, name string, o Options) (*FD, error) {
	return e.newFD(fd, name, o, opRecvBatch, opSendBatch)
}

// errEngineClosed is what making a descriptor in a closed engine returns.
var errEngineClosed = fmt.Errorf("engine closed: %w", os.ErrClosed)

// What tests see of the engine, a thing no result shows: which wait a
// descriptor is in, what the hot loop serves.

// waitState is which wait an FD is in: see the package doc.
type waitState uint32

const (
	notWaiting    waitState = iota
	waitingHot              // in poll(2) on its own thread (hotWait)
	waitingParked           // in the engine's shared epoll (park)
)

func (s waitState) String() string {
	switch s {
	case waitingHot:
		return "in poll(2)"
	case waitingParked:
		return "parked"
	}
	return "not waiting"
}

// waitNow is the wait p's receiver (or sender) is in now; a receiver the
// hot loop serves is not waiting (inLoop).
func (p *FD) waitNow() waitState { return waitState(p.waitState.Load()) }

// inLoop reports whether the hot loop serves p now.
func (p *FD) inLoop() bool { return p.e.loop.has(p) }

// loopMembers is how many receivers the hot loop serves now.
func (e *Engine) loopMembers() int { return e.loop.count() }
