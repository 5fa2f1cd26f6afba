package client

import (
	"bytes"
	"unicode/utf8"
)

// LineSplitter is an io.WriteCloser that cuts what is written to it into
// lines and calls its function with each one, without the "\n" or "\r\n".
// A line longer than max bytes is passed on in pieces of at most max bytes
// (cut at a UTF-8 character boundary), so memory stays bounded and no text
// is dropped. Close passes on a last line that had no newline.
type LineSplitter struct {
	max  int
	emit func(string) error
	buf  []byte
}

// NewLineSplitter returns a LineSplitter calling emit with lines of at most
// max bytes.
func NewLineSplitter(max int, emit func(line string) error) *LineSplitter {
	if max < utf8.UTFMax {
		max = utf8.UTFMax
	}
	return &LineSplitter{max: max, emit: emit}
}

// Write never keeps more than max bytes of p buffered.
func (s *LineSplitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.buf = append(s.buf, p...)
			p = nil
		} else {
			s.buf = append(s.buf, p[:i]...)
			p = p[i+1:]
			line := bytes.TrimSuffix(s.buf, []byte{'\r'})
			if err := s.flushLong(&line); err != nil {
				return 0, err
			}
			if err := s.emit(string(line)); err != nil {
				return 0, err
			}
			s.buf = s.buf[:0]
			continue
		}
		// Keep one byte more than max: it may be the '\r' of a "\r\n".
		if len(s.buf) > s.max+1 {
			rest := s.buf
			if err := s.flushLong(&rest); err != nil {
				return 0, err
			}
			s.buf = append(s.buf[:0], rest...)
		}
	}
	return n, nil
}

// flushLong emits max-byte pieces of *line while it is longer than max,
// leaving the remainder in *line.
func (s *LineSplitter) flushLong(line *[]byte) error {
	for len(*line) > s.max {
		cut := s.max
		for cut > 0 && !utf8.RuneStart((*line)[cut]) {
			cut--
		}
		if cut == 0 {
			cut = s.max // not UTF-8 at all; the server's replacement handles it
		}
		if err := s.emit(string((*line)[:cut])); err != nil {
			return err
		}
		*line = (*line)[cut:]
	}
	return nil
}

// Close passes on the last, unterminated line, if any.
func (s *LineSplitter) Close() error {
	if len(s.buf) == 0 {
		return nil
	}
	line := bytes.TrimSuffix(s.buf, []byte{'\r'})
	s.buf = nil
	if err := s.flushLong(&line); err != nil {
		return err
	}
	return s.emit(string(line))
}
