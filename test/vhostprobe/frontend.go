package main

// An honest frontend: the handshake QEMU does, guest memory in a memfd,
// the receive ring kept full of writable buffers and frames sent on the
// transmit ring, with or without indirect tables.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// feOpts chooses what the frontend negotiates and how it lays out frames.
type feOpts struct {
	noEventIdx, noMrg, noIndirect bool
	allowLogAll                   bool   // a migrating backend (not multifs) may offer dirty logging
	layout                        string // single, chain or indirect
	// strictKicks: kick only when the device asks (EVENT_IDX or
	// VRING_USED_F_NO_NOTIFY), as DPDK's and Linux's drivers do; else
	// after every batch, which a device must also take.
	strictKicks bool
}

type frontend struct {
	c        *conn
	g        *guestMem
	rx, tx   *vq
	features uint64
	proto    uint64
	opts     feOpts
	txFree   []uint16
	rxGot    uint64 // frames received
}

// negotiate does what QEMU does first: SET_OWNER, the features and the
// protocol features (REPLY_ACK taken when offered, so refusals show).
func negotiate(c *conn, o feOpts) (features, proto uint64, err error) {
	if err = c.send(reqSetOwner, nil); err != nil {
		return
	}
	offered, err := c.getU64(reqGetFeatures)
	if err != nil {
		return
	}
	if offered&fVersion1 == 0 {
		return 0, 0, fmt.Errorf("backend does not offer VIRTIO_F_VERSION_1 (features %#x)", offered)
	}
	if offered&fLogAll != 0 && !o.allowLogAll {
		return 0, 0, fmt.Errorf("backend offers VHOST_F_LOG_ALL (features %#x): it must not (no migration)", offered)
	}
	want := uint64(fVersion1 | fProtocolFeatures | fMrgRxbuf | fEventIdx | fIndirectDesc)
	if o.noEventIdx {
		want &^= fEventIdx
	}
	if o.noMrg {
		want &^= fMrgRxbuf
	}
	if o.noIndirect {
		want &^= fIndirectDesc
	}
	features = offered & want
	if features&fProtocolFeatures != 0 {
		if proto, err = c.getU64(reqGetProtocolFeatures); err != nil {
			return
		}
		proto &= pfReplyAck
		if err = c.send(reqSetProtocolFeatures, u64(proto)); err != nil {
			return
		}
		c.replyAck = proto&pfReplyAck != 0
	}
	err = c.send(reqSetFeatures, u64(features))
	return
}

// attach connects and brings both rings up, the receive ring full.
func attach(path string, o feOpts) (*frontend, error) {
	c, err := dial(path)
	if err != nil {
		return nil, err
	}
	f := &frontend{c: c, opts: o}
	ok := false
	defer func() {
		if !ok {
			f.close()
		}
	}()
	if f.features, f.proto, err = negotiate(c, o); err != nil {
		return nil, err
	}
	if f.opts.layout == "indirect" && f.features&fIndirectDesc == 0 {
		return nil, fmt.Errorf("layout indirect, but VIRTIO_RING_F_INDIRECT_DESC was not negotiated")
	}
	if f.g, err = newGuestMem(memSize); err != nil {
		return nil, err
	}
	if err = c.send(reqSetMemTable, memTable(f.g.table()), f.g.fd); err != nil {
		return nil, fmt.Errorf("SET_MEM_TABLE: %w", err)
	}
	if f.rx, err = newVQ(f.g, 0, queueSize, q0Desc, q0Avail, q0Used); err != nil {
		return nil, err
	}
	if f.tx, err = newVQ(f.g, 1, queueSize, q1Desc, q1Avail, q1Used); err != nil {
		return nil, err
	}
	enable := f.features&fProtocolFeatures != 0
	for i := 0; i < queueSize; i++ {
		f.g.putDesc(q0Desc, i, gpa(rxBufs+i*rxBufSize), rxBufSize, descWrite, 0)
		f.rx.post(uint16(i))
		if f.opts.layout != "chain" || i < queueSize/2 {
			f.txFree = append(f.txFree, uint16(i))
		}
	}
	if err = f.rx.setup(c, enable); err != nil {
		return nil, err
	}
	if err = f.tx.setup(c, enable); err != nil {
		return nil, err
	}
	if err = f.rx.doKick(); err != nil {
		return nil, err
	}
	ok = true
	return f, nil
}

func (f *frontend) close() {
	if f.c != nil {
		f.c.close()
	}
	if f.rx != nil {
		f.rx.closeFDs()
	}
	if f.tx != nil {
		f.tx.closeFDs()
	}
	if f.g != nil {
		f.g.free()
	}
}

var errTxFull = errors.New("transmit ring full for 2 s")

// reclaim takes back the transmit descriptors the backend has used.
func (f *frontend) reclaim() {
	for {
		id, _, ok := f.tx.popUsed()
		if !ok {
			return
		}
		if id < queueSize {
			f.txFree = append(f.txFree, uint16(id))
		}
	}
}

// send queues one frame (with its virtio-net header) on the transmit
// ring; kick says whether to notify the backend now.
func (f *frontend) send(frame []byte, kick bool) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		f.reclaim()
		if len(f.txFree) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return errTxFull
		}
		f.tx.doKick()
		f.tx.setUsedEvent(f.tx.lastUsed)
		f.tx.waitCall(10 * time.Millisecond)
	}
	i := int(f.txFree[len(f.txFree)-1])
	f.txFree = f.txFree[:len(f.txFree)-1]
	buf := txBufs + i*txBufSize
	if len(frame)+netHdrLen > txBufSize {
		return fmt.Errorf("frame of %d bytes", len(frame))
	}
	clear(f.g.mem[buf : buf+netHdrLen])
	copy(f.g.mem[buf+netHdrLen:], frame)
	switch f.opts.layout {
	case "chain":
		// Two descriptors, the frame split across them: slot i (only
		// the lower half of the ring is handed out) and its partner i+n/2.
		half := netHdrLen + len(frame)/2
		f.g.putDesc(q1Desc, i, gpa(buf), uint32(half), descNext, uint16(i+queueSize/2))
		f.g.putDesc(q1Desc, i+queueSize/2, gpa(buf+half), uint32(netHdrLen+len(frame)-half), 0, 0)
	case "indirect":
		t := scratch + i*32
		f.g.putDesc(t, 0, gpa(buf), netHdrLen, descNext, 1)
		f.g.putDesc(t, 1, gpa(buf+netHdrLen), uint32(len(frame)), 0, 0)
		f.g.putDesc(q1Desc, i, gpa(t), 32, descIndirect, 0)
	default:
		f.g.putDesc(q1Desc, i, gpa(buf), uint32(netHdrLen+len(frame)), 0, 0)
	}
	f.tx.post(uint16(i))
	if kick {
		return f.tx.doKick()
	}
	return nil
}

// recv hands every frame waiting in the receive ring to fn, gives the
// buffers back and kicks if it gave any. It waits up to d for the first.
func (f *frontend) recv(d time.Duration, fn func([]byte)) (int, error) {
	old := f.rx.availIdx
	f.rx.setUsedEvent(f.rx.lastUsed)
	f.rx.waitCall(d)
	n := 0
	var frame []byte
	for {
		id, l, ok := f.rx.popUsed()
		if !ok {
			break
		}
		if id >= queueSize || l > rxBufSize || l < netHdrLen {
			return n, fmt.Errorf("used element id %d len %d", id, l)
		}
		buf := f.g.mem[rxBufs+int(id)*rxBufSize:][:l]
		nb := uint16(1)
		if f.features&fMrgRxbuf != 0 {
			nb = binary.LittleEndian.Uint16(buf[10:12])
		}
		frame = append(frame[:0], buf[netHdrLen:]...)
		f.rx.post(uint16(id))
		for k := uint16(1); k < nb; k++ {
			id, l, ok := f.rx.popUsed()
			for try := 0; !ok && try < 1000; try++ {
				time.Sleep(time.Millisecond)
				id, l, ok = f.rx.popUsed()
			}
			if !ok || id >= queueSize || l > rxBufSize {
				return n, fmt.Errorf("merged buffer %d of %d missing or bad", k+1, nb)
			}
			frame = append(frame, f.g.mem[rxBufs+int(id)*rxBufSize:][:l]...)
			f.rx.post(uint16(id))
		}
		fn(frame)
		n++
	}
	f.rxGot += uint64(n)
	if n > 0 && (!f.opts.strictKicks || f.rx.needKick(old, f.features&fEventIdx != 0)) {
		f.rx.doKick()
	}
	return n, nil
}
