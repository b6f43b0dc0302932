package client

import (
	"testing"
	"time"
)

// recvFrame receives one frame on c, failing the test after 2 s.
func recvFrame(t *testing.T, c *Client) []byte {
	t.Helper()
	buf := make([]byte, 16384)
	n, err := c.Recv(buf, 2*time.Second)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return buf[:n]
}
