package wire

import (
	"errors"
	"syscall"
	"testing"
)

func TestAck(t *testing.T) {
	if err := ParseAck(Accepted()); err != nil {
		t.Fatalf("Accepted: %v", err)
	}
	for _, e := range []syscall.Errno{syscall.EISCONN, syscall.ECONNREFUSED, syscall.ESHUTDOWN} {
		if err := ParseAck(Refusal(e)); !errors.Is(err, e) {
			t.Errorf("Refusal(%v) parses to %v", e, err)
		}
	}
	for _, b := range [][]byte{nil, {0, 0}} {
		if err := ParseAck(b); err == nil {
			t.Errorf("%v parsed as an ack", b)
		}
	}
}
