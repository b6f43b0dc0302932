package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseRequest(t *testing.T) {
	mutate := func(f func(b []byte) []byte) []byte { return f(validRequest()) }
	tests := []struct {
		name    string
		in      []byte
		wantErr error
		want    Request
	}{
		{"valid", validRequest(), nil, Request{SockPath: "/tmp/.client-1", Description: "vde_plug user=0 pid=1"}},
		{"no description", Request{SockPath: "/x"}.Encode(), nil, Request{SockPath: "/x"}},
		{"description with NUL", append(Request{SockPath: "/x"}.Encode(), "abc\x00junk"...), nil, Request{SockPath: "/x", Description: "abc"}},
		{"old client port in upper bits", mutate(func(b []byte) []byte { b[9] = 5; return b }), nil,
			Request{Port: 5, SockPath: "/tmp/.client-1", Description: "vde_plug user=0 pid=1"}},
		{"empty", nil, ErrShortRequest, Request{}},
		{"short", validRequest()[:HeaderLen-1], ErrShortRequest, Request{}},
		{"oversized", append(validRequest(), make([]byte, 200)...), ErrLongRequest, Request{}},
		{"wrong magic", mutate(func(b []byte) []byte { b[0] ^= 1; return b }), ErrBadMagic, Request{}},
		{"version 2", mutate(func(b []byte) []byte { b[4] = 2; return b }), ErrBadVersion, Request{}},
		{"version 1", mutate(func(b []byte) []byte { b[4] = 1; return b }), ErrBadVersion, Request{}},
		{"REQ_NEW_PORT0", mutate(func(b []byte) []byte { b[8] = 1; return b }), ErrBadType, Request{}},
		{"family inet", mutate(func(b []byte) []byte { b[12] = 2; return b }), ErrBadFamily, Request{}},
		{"abstract address", mutate(func(b []byte) []byte { b[14] = 0; return b }), ErrBadPath, Request{}},
		{"relative path", Request{SockPath: "rel/sock"}.Encode(), ErrBadPath, Request{}},
		{"path without NUL", mutate(func(b []byte) []byte {
			copy(b[14:14+sunPathLen], bytes.Repeat([]byte{'a'}, sunPathLen))
			b[14] = '/'
			return b
		}), ErrBadPath, Request{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSockaddrRoundTrip(t *testing.T) {
	p := "/tmp/.vm1.multifs/link.7"
	got, err := DecodeSockaddr(EncodeSockaddr(p))
	if err != nil || got != p {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if _, err := DecodeSockaddr(make([]byte, SockaddrLen)); err == nil {
		t.Fatal("a zero reply must not decode")
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add(validRequest())
	f.Add(validRequest()[:HeaderLen])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		// Whatever parses must be sane and survive a round trip.
		if r.Type != ReqNewControl || len(r.SockPath) == 0 || r.SockPath[0] != '/' || len(r.Description) > maxDescr {
			t.Fatalf("accepted a bad request: %+v", r)
		}
		again, err := ParseRequest(r.Encode())
		if err != nil || again != r {
			t.Fatalf("round trip: %+v, %v", again, err)
		}
	})
}

func validRequest() []byte {
	return Request{SockPath: "/tmp/.client-1", Description: "vde_plug user=0 pid=1"}.Encode()
}
