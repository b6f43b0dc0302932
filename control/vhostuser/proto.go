package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"

	"multifs/control/vhostuser/virtq"
)

// Requests (QEMU docs/interop/vhost-user.rst, "Front-end message types").
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqResetOwner          = 4
	reqSetMemTable         = 5
	reqSetLogBase          = 6
	reqSetLogFD            = 7
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqGetVringBase        = 11
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqSetVringErr         = 14
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqGetQueueNum         = 17
	reqSetVringEnable      = 18
	reqGetConfig           = 24
	reqGetInflightFD       = 31
	reqGetMaxMemSlots      = 36
	reqGetStatus           = 40
)

var reqNames = map[uint32]string{
	1: "GET_FEATURES", 2: "SET_FEATURES", 3: "SET_OWNER", 4: "RESET_OWNER", 5: "SET_MEM_TABLE",
	6: "SET_LOG_BASE", 7: "SET_LOG_FD", 8: "SET_VRING_NUM", 9: "SET_VRING_ADDR", 10: "SET_VRING_BASE",
	11: "GET_VRING_BASE", 12: "SET_VRING_KICK", 13: "SET_VRING_CALL", 14: "SET_VRING_ERR",
	15: "GET_PROTOCOL_FEATURES", 16: "SET_PROTOCOL_FEATURES", 17: "GET_QUEUE_NUM", 18: "SET_VRING_ENABLE",
	19: "SEND_RARP", 20: "NET_SET_MTU", 21: "SET_BACKEND_REQ_FD", 22: "IOTLB_MSG", 23: "SET_VRING_ENDIAN",
	24: "GET_CONFIG", 25: "SET_CONFIG", 31: "GET_INFLIGHT_FD", 32: "SET_INFLIGHT_FD", 34: "RESET_DEVICE",
	35: "VRING_KICK", 36: "GET_MAX_MEM_SLOTS", 37: "ADD_MEM_REG", 38: "REM_MEM_REG", 39: "SET_STATUS", 40: "GET_STATUS",
}

func reqName(r uint32) string {
	if n, ok := reqNames[r]; ok {
		return n
	}
	return fmt.Sprintf("request %d", r)
}

// replyDue reports whether a request has a reply of its own, whatever
// its need_reply flag: those that multifs answers, and the ones of
// features it never offers (an error reply then keeps the frontend from
// waiting for nothing).
func replyDue(r uint32) bool {
	switch r {
	case reqGetFeatures, reqGetProtocolFeatures, reqGetVringBase, reqGetQueueNum,
		reqGetConfig, reqGetInflightFD, reqGetMaxMemSlots, reqGetStatus:
		return true
	}
	return false
}

// Header flags.
const (
	flagVersion   = 0x1
	flagVersionM  = 0x3
	flagReply     = 1 << 2
	flagNeedReply = 1 << 3
)

// Sizes and bounds of a message.
const (
	HeaderLen = 12
	// MaxPayload bounds a message's payload. The largest this
	// protocol defines (a device's config space, a memory table) are
	// under 300 bytes.
	MaxPayload = 4096
	// MaxFDs bounds the descriptors one message may carry, as QEMU's
	// VHOST_MEMORY_BASELINE_NREGIONS (a memory table's).
	MaxFDs = virtq.MaxRegions
)

// Virtio and vhost-user feature bits.
const (
	fNetMrgRxbuf      = 1 << 15
	fRingIndirectDesc = 1 << 28
	fRingEventIdx     = 1 << 29
	fProtocolFeatures = 1 << 30
	fVersion1         = 1 << 32
	protoMQ           = 1 << 0
	protoReplyAck     = 1 << 3
	vringFdInvalid    = 1 << 8
	vringIndexMask    = 0xff
	offeredFeatures   = fNetMrgRxbuf | fRingIndirectDesc | fRingEventIdx | fProtocolFeatures | fVersion1
	offeredProtocol   = protoMQ | protoReplyAck
	queuePairs        = 1
	numQueues         = 2 * queuePairs
	rxQueue, txQueue  = 0, 1
	vringAddrLen      = 40
	vringStateLen     = 8
	memTableHeaderLen = 8
	memTableRegionLen = 32
	maxVringBase      = 0xffff
	vringAddrFlagLog  = 1
	netHdrLenModern   = 12
	netHdrLenLegacy   = 10
	maxQueueSize      = virtq.MaxQueueSize
)

// Header is a message's fixed part.
type Header struct {
	Request, Flags, Size uint32
}

// Errors of a message.
var (
	ErrVersion  = errors.New("bad header version")
	ErrTooBig   = errors.New("payload too big")
	ErrReplyBit = errors.New("a request marked as a reply")
	ErrPayload  = errors.New("bad payload size")
)

// ParseHeader checks a message header: the version, no reply flag (the
// frontend sends requests) and a bounded size. Anything else cannot be
// skipped safely, so it ends the connection.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrPayload
	}
	h := Header{binary.NativeEndian.Uint32(b), binary.NativeEndian.Uint32(b[4:]), binary.NativeEndian.Uint32(b[8:])}
	switch {
	case h.Flags&flagVersionM != flagVersion:
		return h, ErrVersion
	case h.Flags&flagReply != 0:
		return h, ErrReplyBit
	case h.Size > MaxPayload:
		return h, ErrTooBig
	}
	return h, nil
}

// Message is one request: header, payload and the descriptors that came
// with it (owned by whoever holds the message: closed unless kept).
type Message struct {
	Header
	Payload []byte
	FDs     []int
}

func (m *Message) u64() (uint64, error) {
	if len(m.Payload) < 8 {
		return 0, ErrPayload
	}
	return binary.NativeEndian.Uint64(m.Payload), nil
}

// vringState is the index/num payload.
type vringState struct{ index, num uint32 }

func (m *Message) state() (vringState, error) {
	if len(m.Payload) < vringStateLen {
		return vringState{}, ErrPayload
	}
	return vringState{binary.NativeEndian.Uint32(m.Payload), binary.NativeEndian.Uint32(m.Payload[4:])}, nil
}

// vringAddr is SET_VRING_ADDR's payload.
type vringAddr struct {
	index, flags      uint32
	desc, used, avail uint64
}

func (m *Message) addr() (vringAddr, error) {
	p := m.Payload
	if len(p) < vringAddrLen {
		return vringAddr{}, ErrPayload
	}
	e := binary.NativeEndian
	return vringAddr{e.Uint32(p), e.Uint32(p[4:]), e.Uint64(p[8:]), e.Uint64(p[16:]), e.Uint64(p[24:])}, nil
}

// memTable parses SET_MEM_TABLE's regions: 1 to MaxRegions of them, as
// many as the payload holds.
func (m *Message) memTable() ([]virtq.RegionDesc, error) {
	p := m.Payload
	if len(p) < memTableHeaderLen {
		return nil, ErrPayload
	}
	n := binary.NativeEndian.Uint32(p)
	if n == 0 || n > virtq.MaxRegions {
		return nil, virtq.ErrTooManyRegions
	}
	if uint64(len(p)) < memTableHeaderLen+uint64(n)*memTableRegionLen {
		return nil, ErrPayload
	}
	rs := make([]virtq.RegionDesc, n)
	for i := range rs {
		b := p[memTableHeaderLen+i*memTableRegionLen:]
		e := binary.NativeEndian
		rs[i] = virtq.RegionDesc{GuestAddr: e.Uint64(b), Size: e.Uint64(b[8:]), UserAddr: e.Uint64(b[16:]), MmapOffset: e.Uint64(b[24:])}
	}
	return rs, nil
}

// encodeReply makes a reply to request r with payload p.
func encodeReply(r uint32, p []byte) []byte {
	b := make([]byte, HeaderLen+len(p))
	binary.NativeEndian.PutUint32(b, r)
	binary.NativeEndian.PutUint32(b[4:], flagVersion|flagReply)
	binary.NativeEndian.PutUint32(b[8:], uint32(len(p)))
	copy(b[HeaderLen:], p)
	return b
}

func u64Payload(v uint64) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint64(b, v)
	return b
}

func statePayload(index, num uint32) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint32(b, index)
	binary.NativeEndian.PutUint32(b[4:], num)
	return b
}
