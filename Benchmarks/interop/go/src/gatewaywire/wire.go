// Package gatewaywire is what the Go load clients share: the Connect method's name and its
// two messages encoded by hand, so that no generated code is needed.
package gatewaywire

import "time"

// Method is tenten.interview.Gateway/Connect.
const Method = "/tenten.interview.Gateway/Connect"

// RawCodec passes messages through as bytes; its name keeps the content type
// application/grpc+proto, which is what the messages are.
type RawCodec struct{}

// Marshal returns the bytes *v points to.
func (RawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }

// Unmarshal copies data into *v, reusing its storage.
func (RawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}

// Name is the codec's content subtype.
func (RawCodec) Name() string { return "proto" }

var (
	pongEven = []byte{0x08, 0x01}
	pongOdd  = []byte{0x08, 0x02}
)

// Pong is Pong{status: STATUS_EVEN (1) or STATUS_ODD (2)} by the parity of now in ms. The
// slice is shared: callers must not modify it.
func Pong(now time.Time) []byte {
	if now.UnixNano()/int64(time.Millisecond)%2 == 0 {
		return pongEven
	}
	return pongOdd
}
