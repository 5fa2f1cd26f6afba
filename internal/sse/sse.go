// Package sse reads text/event-stream responses as the WHATWG spec says a
// browser does, for the Go client and for tests that must parse real SSE.
package sse

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
)

// Event is one dispatched event.
type Event struct {
	ID    string
	HasID bool
	Type  string // "" when the stream named none
	Data  []byte
}

// Reader parses events from a stream.
type Reader struct {
	br *bufio.Reader
	// Retry is the last retry: value seen, in ms (0 if none).
	Retry int
	// Comments counts comment lines (": keepalive") seen.
	Comments int
}

// NewReader reads events from r.
func NewReader(r io.Reader) *Reader { return &Reader{br: bufio.NewReaderSize(r, 64<<10)} }

// Next returns the next event; io.EOF at a clean end of stream. An event
// cut off by the end of the stream is not dispatched, as in browsers.
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data []byte
	hasData := false
	for {
		line, err := r.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: gather it whole.
			full := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = r.br.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if err != nil {
			if err == io.EOF {
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte{'\n'}), []byte{'\r'})
		if len(line) == 0 {
			if hasData {
				ev.Data = data
				return ev, nil
			}
			ev, data = Event{}, nil
			continue
		}
		if line[0] == ':' {
			r.Comments++
			continue
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "id":
			ev.ID, ev.HasID = string(value), true
		case "event":
			ev.Type = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "retry":
			if n, err := strconv.Atoi(string(value)); err == nil {
				r.Retry = n
			}
		}
	}
}
