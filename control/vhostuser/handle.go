package vhostuser

import (
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"multifs/control/vhostuser/virtq"
)

// Errors of a request (each refused with an error reply where one is due,
// and counted as a fault).
var (
	errUnsupported = errors.New("not supported")
	errIndex       = errors.New("no such queue")
	errFeatures    = errors.New("features not offered")
	errFDs         = errors.New("wrong number of descriptors")
	errNotEventfd  = errors.New("descriptor is not an eventfd")
	errRunning     = errors.New("ring is running")
	errValue       = errors.New("bad value")
)

// handle carries out one request, under ctl. It returns the reply's
// payload for requests that have one; it takes the descriptors it keeps
// out of m.FDs (the caller closes the rest).
func (c *Conn) handle(m *Message) ([]byte, error) {
	switch m.Request {
	case reqGetFeatures:
		return u64Payload(offeredFeatures), nil
	case reqGetProtocolFeatures:
		return u64Payload(offeredProtocol), nil
	case reqGetQueueNum:
		return u64Payload(queuePairs), nil
	}
	switch m.Request {
	case reqSetFeatures, reqSetProtocolFeatures, reqSetOwner, reqResetOwner, reqSetVringNum, reqSetVringBase,
		reqGetVringBase, reqSetVringEnable, reqSetVringAddr:
		if len(m.FDs) > 0 {
			return nil, errFDs
		}
	case reqSetMemTable, reqSetVringKick, reqSetVringCall, reqSetVringErr:
	default:
		c.log.WithFields(logrus.Fields{"request": m.Request, "name": reqName(m.Request), "size": m.Size}).Warn(MsgUnsupported)
		return nil, errUnsupported
	}
	switch m.Request {
	case reqSetFeatures:
		v, err := m.u64()
		if err != nil {
			return nil, err
		}
		if v&^offeredFeatures != 0 {
			return nil, fmt.Errorf("%w: 0x%x", errFeatures, v&^offeredFeatures)
		}
		c.features = v
		for i := range c.q {
			q := &c.q[i]
			q.mu.Lock()
			q.hdrLen = netHdrLenLegacy
			if v&(fVersion1|fNetMrgRxbuf) != 0 {
				q.hdrLen = netHdrLenModern
			}
			q.mrg = v&fNetMrgRxbuf != 0
			q.ring.SetEventIdx(v&fRingEventIdx != 0)
			c.refreshLocked(q)
			q.mu.Unlock()
		}
		return nil, nil
	case reqSetProtocolFeatures:
		v, err := m.u64()
		if err != nil {
			return nil, err
		}
		if v&^offeredProtocol != 0 {
			return nil, fmt.Errorf("%w: 0x%x", errFeatures, v&^offeredProtocol)
		}
		c.protocol = v
		return nil, nil
	case reqSetOwner:
		return nil, nil
	case reqResetOwner:
		// Deprecated; the protocol recommends taking it as "disable
		// every ring".
		for i := range c.q {
			c.stop(&c.q[i])
		}
		return nil, nil
	case reqSetMemTable:
		return nil, c.setMemTable(m)
	case reqSetVringNum, reqSetVringBase, reqGetVringBase, reqSetVringEnable:
		s, err := m.state()
		if err != nil {
			return nil, err
		}
		if s.index >= numQueues {
			return nil, errIndex
		}
		return c.vringState(m.Request, &c.q[s.index], s)
	case reqSetVringAddr:
		a, err := m.addr()
		if err != nil {
			return nil, err
		}
		if a.index >= numQueues {
			return nil, errIndex
		}
		if a.flags&vringAddrFlagLog != 0 {
			c.log.WithFields(logrus.Fields{"request": reqName(m.Request), "feature": "dirty logging"}).Warn(MsgUnsupported)
			return nil, fmt.Errorf("%w: dirty logging", errUnsupported)
		}
		q := &c.q[a.index]
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.live {
			// New addresses for a running ring: keep its place.
			q.base, q.live = q.ring.Base(), false
		}
		q.addr, q.addrSet = a, true
		return nil, c.refreshLocked(q)
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		return nil, c.setVringFD(m)
	}
	return nil, errUnsupported // not reached: every request was sorted above
}

func (c *Conn) vringState(req uint32, q *queue, s vringState) ([]byte, error) {
	if req == reqGetVringBase {
		base := c.stop(q)
		return statePayload(s.index, uint32(base)), nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	switch req {
	case reqSetVringNum:
		if s.num == 0 || s.num > maxQueueSize || s.num&(s.num-1) != 0 {
			return nil, fmt.Errorf("%w: ring size %d", errValue, s.num)
		}
		if q.live {
			return nil, errRunning
		}
		q.num = s.num
	case reqSetVringBase:
		if s.num > maxVringBase {
			return nil, fmt.Errorf("%w: base %d", errValue, s.num)
		}
		if q.live {
			return nil, errRunning
		}
		q.base = uint16(s.num)
	case reqSetVringEnable:
		if s.num > 1 {
			return nil, fmt.Errorf("%w: enable %d", errValue, s.num)
		}
		q.enable = s.num == 1
		c.refreshLocked(q)
		q.poke()
	}
	return nil, nil
}

// stop stops a queue (GET_VRING_BASE, RESET_OWNER): the data path leaves
// it alone until it is started again, with a new kick descriptor. It
// returns where the ring stopped.
func (c *Conn) stop(q *queue) uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.live {
		q.base = q.ring.Base()
	}
	q.live = false
	q.setKickLocked(-1)
	q.poke()
	return q.base
}

func (c *Conn) setVringFD(m *Message) error {
	v, err := m.u64()
	if err != nil {
		return err
	}
	idx := v & vringIndexMask
	if idx >= numQueues || v&^(vringIndexMask|vringFdInvalid) != 0 {
		return errIndex
	}
	fd := -1
	if v&vringFdInvalid == 0 {
		if len(m.FDs) != 1 {
			return errFDs
		}
		if !isEventfd(m.FDs[0]) {
			return errNotEventfd
		}
		fd, m.FDs[0] = m.FDs[0], -1
	} else if len(m.FDs) != 0 {
		return errFDs
	}
	q := &c.q[idx]
	switch m.Request {
	case reqSetVringKick:
		if fd < 0 {
			// Polling instead of kicks: the daemon never busy-polls.
			c.log.WithFields(logrus.Fields{"request": reqName(m.Request), "feature": "polling"}).Warn(MsgUnsupported)
			return fmt.Errorf("%w: a ring without a kick eventfd", errUnsupported)
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		if err := q.setKickLocked(fd); err != nil {
			return err
		}
		err := c.refreshLocked(q)
		q.poke()
		return err
	case reqSetVringCall:
		c.note.set(int(idx), fd)
	case reqSetVringErr:
		// Never signalled: multifs reports its errors in its log.
		if fd >= 0 {
			m.FDs[0] = fd // closed by the caller
		}
	}
	return nil
}

// refreshLocked brings a queue up to date after a request: enabled, and
// its ring set up once everything it needs is there. q.mu held.
func (c *Conn) refreshLocked(q *queue) error {
	q.enabled = q.enable || c.features&fProtocolFeatures == 0
	if q.live || c.mem == nil || q.num == 0 || !q.addrSet || q.kick < 0 || q.closing {
		return nil
	}
	var resumed bool
	err := guard(c.log, func() error {
		err := q.ring.Setup(c.mem, q.num, q.addr.desc, q.addr.avail, q.addr.used, q.base, c.features&fRingEventIdx != 0)
		resumed = err == nil && q.ring.Base() != q.base
		return err
	})
	if err != nil {
		return err
	}
	if resumed {
		c.log.WithFields(logrus.Fields{"queue": q.idx, "base": q.base, "used": q.ring.Base()}).Info(MsgRingResumed)
	}
	q.live = true
	q.poke()
	return nil
}

// setMemTable maps a new memory table and puts it in place of the old,
// with both queues held, so that no ring uses the old one when it is
// unmapped.
func (c *Conn) setMemTable(m *Message) error {
	descs, err := m.memTable()
	if err != nil {
		return err
	}
	if len(m.FDs) != len(descs) {
		return errFDs
	}
	mem, err := virtq.Map(descs, m.FDs)
	if err != nil {
		return err
	}
	for i := range c.q {
		c.q[i].mu.Lock()
	}
	old := c.mem
	c.mem = mem
	var rerr error
	for i := range c.q {
		q := &c.q[i]
		if q.live {
			if err := guard(c.log, func() error { return q.ring.Remap(mem) }); err != nil {
				q.base, q.live = q.ring.Base(), false
				rerr = err
			}
		} else {
			c.refreshLocked(q)
		}
	}
	for i := range c.q {
		c.q[i].mu.Unlock()
	}
	old.Unmap()
	c.log.WithFields(logrus.Fields{"regions": len(descs), "bytes": mem.Size()}).Debug("vhost-user: memory table")
	return rerr
}
