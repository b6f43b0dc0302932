package multilink

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"multifs/multilink/conn"
)

// Frame size limits: the seam's (conn.MinFrame, conn.MaxFrame).
const (
	MinFrame = conn.MinFrame
	MaxFrame = conn.MaxFrame
)

// Errors returned by the registry.
var (
	ErrHostAttached = errors.New("a host is already attached")
	ErrClosed       = errors.New("multilink is shut down")
)

// Multilink is one host plus its links.
type Multilink struct {
	log *logrus.Entry

	// host is read on every frame from a link; swapped on attach/detach.
	host atomic.Pointer[Port]
	// linkSnap is the copy-on-write list the host's reader fans out to, so
	// the per-frame path takes no lock.
	linkSnap atomic.Pointer[[]*Port]

	queueBudget   queueBudget // what all ports' queues hold (TotalQueueBytes)
	batches       *batches    // the readers' receive buffers
	linksTotal    atomic.Uint64
	droppedNoHost atomic.Uint64
	droppedNoLink atomic.Uint64
	hostsTotal    atomic.Uint64

	// dd is the duplicate table (nil: dedup off), in use while two or
	// more links are open and for a window after they were last: the
	// slower path's copies of what the closed link delivered still come.
	// dedupUntil is that moment (mono), 0 once past or while not needed.
	// Its memory is allocated when the first link joins.
	dd         *dedup
	dedupUntil atomic.Int64
	dupDropped atomic.Uint64

	mu struct {
		sync.Mutex
		links        map[uint64]*Port
		nextID       uint64
		hostReserved bool // a host is being admitted (Admit's ready step)
		closed       bool
	}
	wg sync.WaitGroup // reader goroutines
}

// Option is a setting of New.
type Option func(*Multilink)

// Dedup sets the window of duplicate suppression towards the host (see
// dedup.go); 0 turns it off. The default is DefaultDedupWindow.
func Dedup(window time.Duration) Option {
	return func(m *Multilink) {
		m.dd = nil
		if window > 0 {
			m.dd = newDedup(min(window, MaxDedupWindow))
		}
	}
}

// New returns an empty multilink.
func New(log *logrus.Entry, opts ...Option) *Multilink {
	m := &Multilink{log: log, batches: newBatches(), dd: newDedup(DefaultDedupWindow)}
	for _, o := range opts {
		o(m)
	}
	m.queueBudget.limit = TotalQueueBytes
	m.mu.links = make(map[uint64]*Port)
	m.linkSnap.Store(&[]*Port{})
	return m
}

// AttachHost registers a peer as the host. Only one host at a time.
func (m *Multilink) AttachHost(info PeerInfo, conn Conn, onClose func()) (*Port, error) {
	return m.Admit(true, info, conn, onClose, nil)
}

// Admit registers a peer as the host or as a new link. ready, if not nil,
// runs once the peer's place is taken (the host slot is reserved, the link
// id given) and before any frame can flow to it: the control side answers
// the peer's handshake there, so that a peer holding its answer is a member
// and no frame overtakes the answer. If ready fails, nothing is registered.
func (m *Multilink) Admit(asHost bool, info PeerInfo, conn Conn, onClose func(), ready func() error) (*Port, error) {
	if h := m.host.Load(); asHost && h != nil && h.gone() {
		// A host reattaching (a VM restarting, say) is not refused
		// because the old one is still draining what it sent, or has
		// exited a moment ago and nobody has seen its end yet: the old
		// one leaves first, within LeaveWait. Whatever the transport of
		// either.
		h.Leave()
	}
	m.mu.Lock()
	if m.mu.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	var p *Port
	if asHost {
		if m.host.Load() != nil || m.mu.hostReserved {
			m.mu.Unlock()
			return nil, ErrHostAttached
		}
		m.mu.hostReserved = true
		p = newPort(m, 0, true, info, conn, onClose)
	} else {
		m.mu.nextID++
		p = newPort(m, m.mu.nextID, false, info, conn, onClose)
	}
	m.mu.Unlock()

	var err error
	if ready != nil {
		err = ready()
	}

	m.mu.Lock()
	if asHost {
		m.mu.hostReserved = false
	}
	if err == nil && m.mu.closed {
		err = ErrClosed
	}
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if asHost {
		m.host.Store(p)
	} else {
		m.mu.links[p.ID] = p
		m.publishLinksLocked()
	}
	m.mu.Unlock()

	if asHost {
		m.hostsTotal.Add(1)
		p.log.Info("host attached")
	} else {
		m.linksTotal.Add(1)
		p.log.Info("link joined")
	}
	m.wg.Add(1)
	go p.readLoop()
	return p, nil
}

// HostAttached reports whether a host is attached now.
func (m *Multilink) HostAttached() bool { return m.host.Load() != nil }

// Host returns the attached host, or nil.
func (m *Multilink) Host() *Port { return m.host.Load() }

// Link returns the open link with this id, or nil.
func (m *Multilink) Link(id uint64) *Port {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.links[id]
}

// Links returns the open links ordered by id.
func (m *Multilink) Links() []*Port {
	snap := *m.linkSnap.Load()
	return append([]*Port(nil), snap...)
}

// CloseLinkForGood closes the open link with this id for the close file,
// and returns once it is gone: its Conn and control stream are closed, it
// is no longer listed, and its peer is not to rejoin by reconnecting at
// once (Port.CloseForGood). An error that is fs.ErrNotExist: no link
// with this id is open.
func (m *Multilink) CloseLinkForGood(id uint64) error {
	p := m.Link(id)
	if p == nil {
		return noLink(id)
	}
	p.CloseForGood()
	return nil
}

// noLink is the error for an id no open link has: fs.ErrNotExist, which
// the control file answers with ENOENT.
func noLink(id uint64) error { return fmt.Errorf("link %d is not open: %w", id, fs.ErrNotExist) }

// Close ends every peer and refuses new ones; it waits for the readers.
func (m *Multilink) Close() {
	m.mu.Lock()
	m.mu.closed = true
	links := make([]*Port, 0, len(m.mu.links))
	for _, p := range m.mu.links {
		links = append(links, p)
	}
	m.mu.Unlock()
	if h := m.host.Load(); h != nil {
		h.Close()
	}
	for _, p := range links {
		p.Close()
	}
	m.wg.Wait()
}

// Totals is a snapshot of the multilink-wide counters.
type Totals struct {
	Links         int
	LinksTotal    uint64
	HostAttached  bool
	HostsTotal    uint64
	DroppedNoHost uint64 // frames from links while no host was attached (or it was detaching)
	DroppedNoLink uint64 // frames from the host while no link was open
	DupDropped    uint64 // frames from links not given to the host: duplicates (dedup.go)
}

// Totals returns the current multilink-wide counters.
func (m *Multilink) Totals() Totals {
	return Totals{
		Links:         len(*m.linkSnap.Load()),
		LinksTotal:    m.linksTotal.Load(),
		HostAttached:  m.HostAttached(),
		HostsTotal:    m.hostsTotal.Load(),
		DroppedNoHost: m.droppedNoHost.Load(),
		DroppedNoLink: m.droppedNoLink.Load(),
		DupDropped:    m.dupDropped.Load(),
	}
}

// remove unregisters a port; called once from Port.Close.
func (m *Multilink) remove(p *Port) {
	if p.isHost {
		m.host.CompareAndSwap(p, nil)
		return
	}
	m.mu.Lock()
	delete(m.mu.links, p.ID)
	m.publishLinksLocked()
	m.mu.Unlock()
}

func (m *Multilink) publishLinksLocked() {
	snap := make([]*Port, 0, len(m.mu.links))
	for _, p := range m.mu.links {
		snap = append(snap, p)
	}
	sort.Slice(snap, func(i, j int) bool { return snap[i].ID < snap[j].ID })
	if m.dd != nil {
		if len(snap) > 0 {
			// Before the list is published: whoever sees a link
			// sees the table's memory.
			m.dd.allocate()
		}
		if len(snap) >= 2 {
			m.dedupUntil.Store(0)
		} else if len(*m.linkSnap.Load()) >= 2 {
			m.dedupUntil.Store(mono() + m.dd.window)
		}
	}
	m.linkSnap.Store(&snap)
}

// dedupActive reports whether the duplicate table is to be used at now:
// while two or more links are open, or within a window of the last time
// they were. Otherwise the sole link's frames are only recorded.
func (m *Multilink) dedupActive(now int64) bool {
	if len(*m.linkSnap.Load()) >= 2 {
		return true
	}
	if until := m.dedupUntil.Load(); until != 0 {
		if now < until {
			return true
		}
		m.dedupUntil.CompareAndSwap(until, 0)
	}
	return false
}

// fromLink delivers frames that arrived on link from at now: to the host
// only, less the duplicates.
func (m *Multilink) fromLink(from *Port, frames [][]byte, now int64) {
	h := m.host.Load()
	if h == nil || !h.sendToHost(from, frames, now) {
		// No host, or one that detached after we looked.
		m.droppedNoHost.Add(uint64(len(frames)))
	}
}

// fromHost delivers frames that arrived from the host: to every link.
func (m *Multilink) fromHost(frames [][]byte) {
	links := *m.linkSnap.Load()
	if len(links) == 0 {
		m.droppedNoLink.Add(uint64(len(frames)))
		return
	}
	for _, l := range links {
		l.send(frames)
	}
}
