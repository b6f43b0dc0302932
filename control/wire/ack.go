package wire

import (
	"fmt"
	"syscall"
)

// The ptp ack: newer vdeplug4's ptp:// protocol, which multifs's seqpacket
// entries speak. On accepting a connection the server sends one byte: 0
// for "accepted" (frames follow, one per message), or an errno saying why
// not (EISCONN: the host entry is taken; ECONNREFUSED: this process was
// closed for good; ESHUTDOWN: the server is stopping), and then closes.

// Accepted is the ack of an admitted peer.
func Accepted() []byte { return []byte{0} }

// Refusal is the ack that refuses a peer for reason.
func Refusal(reason syscall.Errno) []byte { return []byte{byte(reason)} }

// ParseAck reads an ack as the client sees it: nil if accepted, else the
// errno the server gave, or an error if what came is no ack at all.
func ParseAck(b []byte) error {
	if len(b) != 1 {
		return fmt.Errorf("an ack is one byte, got %d", len(b))
	}
	if b[0] != 0 {
		return syscall.Errno(b[0])
	}
	return nil
}
