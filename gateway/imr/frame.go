// Package imr is GoBelieve im_service's router protocol (docs/gateway.md): frames
// with a 12-byte big-endian header (int32 body length, int32 seq, u8 cmd,
// u8 version, u8 flag, u8 0), the route commands an IM server sends to imr
// and receives from it, and the inner IM message frames they carry.
//
// Parsing never panics; every malformed input is an error. Inner frames
// are kept byte-for-byte (an IM server aborts when a forwarded frame
// differs).
package imr

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size of a frame header.
const HeaderSize = 12

// MaxBody is imr's frame limit: a body must be shorter than 32 KiB.
const MaxBody = 32 * 1024

// Route commands.
const (
	CmdSubscribe       = 130
	CmdUnsubscribe     = 131
	CmdPublish         = 132
	CmdPush            = 134
	CmdPublishGroup    = 135
	CmdSubscribeRoom   = 136
	CmdUnsubscribeRoom = 137
	CmdPublishRoom     = 138
)

// Frame is one protocol frame.
type Frame struct {
	Seq     int32
	Cmd     uint8
	Version uint8
	Flag    uint8
	Body    []byte
}

// ErrFrame wraps every framing and parsing error.
var ErrFrame = errors.New("imr: bad frame")

func frameErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrFrame, fmt.Sprintf(format, a...))
}

// ReadFrame reads one frame. The body is a new slice. A length outside
// [0, MaxBody) is an ErrFrame; a connection closed between frames is io.EOF.
func ReadFrame(r *bufio.Reader) (Frame, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	n := int32(binary.BigEndian.Uint32(h[0:4]))
	if n < 0 || n >= MaxBody {
		return Frame{}, frameErr("body length %d outside [0, %d)", n, MaxBody)
	}
	f := Frame{Seq: int32(binary.BigEndian.Uint32(h[4:8])), Cmd: h[8], Version: h[9], Flag: h[10], Body: make([]byte, n)}
	if _, err := io.ReadFull(r, f.Body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return f, nil
}

// AppendFrame appends the encoded frame to dst.
func AppendFrame(dst []byte, f Frame) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(f.Body)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(f.Seq))
	dst = append(dst, f.Cmd, f.Version, f.Flag, 0)
	return append(dst, f.Body...)
}

// reader reads big-endian fields from a body, remembering the first short
// read.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) i64() int64 {
	if b := r.bytes(8); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func (r *reader) i32() int32 {
	if b := r.bytes(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u8() uint8 {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

// bytes returns the next n bytes (not copied).
func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.err = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
