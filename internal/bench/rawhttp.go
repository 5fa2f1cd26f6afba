package bench

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// rawHTTP is one keep-alive HTTP/1.1 connection that POSTs and reads the
// reply on the caller's goroutine, a write and a read per request. The
// fleet's producers use it rather than net/http's client, whose two
// goroutines per connection and the hand-offs between them cost the bench
// ~1.7× the CPU per append here (16 builds: ~300 against ~180 µs): on two
// shared cores the load generator's CPU is taken from the server it
// measures, and the Redis side's client is as bare.
type rawHTTP struct {
	addr, host string
	prefix     string // the base URL's path, before every request's
	tls        bool
	nc         net.Conn
	br         *bufio.Reader
	buf        []byte
}

func newRawHTTP(base string) (*rawHTTP, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	h := &rawHTTP{host: u.Host, prefix: strings.TrimSuffix(u.Path, "/"), tls: u.Scheme == "https"}
	switch {
	case u.Port() != "":
		h.addr = u.Host
	case h.tls:
		h.addr = u.Host + ":443"
	default:
		h.addr = u.Host + ":80"
	}
	return h, nil
}

func (h *rawHTTP) close() {
	if h.nc != nil {
		h.nc.Close()
		h.nc = nil
	}
}

func (h *rawHTTP) dial() error {
	nc, err := net.DialTimeout("tcp", h.addr, 10*time.Second)
	if err != nil {
		return err
	}
	if h.tls {
		host, _, _ := net.SplitHostPort(h.addr)
		tc := tls.Client(nc, &tls.Config{ServerName: host})
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return err
		}
		nc = tc
	}
	h.nc, h.br = nc, bufio.NewReaderSize(nc, 4<<10)
	return nil
}

// post sends a JSON body and returns the reply's status and body. Any
// failure closes the connection; the next call dials again.
func (h *rawHTTP) post(path, key string, body []byte) (int, []byte, error) {
	if h.nc == nil {
		if err := h.dial(); err != nil {
			return 0, nil, err
		}
	}
	b := h.buf[:0]
	b = append(b, "POST "...)
	b = append(b, h.prefix...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, h.host...)
	b = append(b, "\r\nAuthorization: Bearer "...)
	b = append(b, key...)
	b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	h.buf = b
	h.nc.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := h.nc.Write(b); err != nil {
		h.close()
		return 0, nil, err
	}
	code, reply, keep, err := h.readReply()
	if err != nil || !keep {
		h.close()
	}
	return code, reply, err
}

var errBadReply = errors.New("malformed HTTP reply")

func (h *rawHTTP) readReply() (code int, body []byte, keep bool, err error) {
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, false, errBadReply
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, errBadReply
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, nil, false, errBadReply
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, nil, false, errBadReply
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			} else if bytes.EqualFold(value, []byte("keep-alive")) {
				keep = true
			}
		}
	}
	switch {
	case chunked:
		body, err = readChunked(h.br)
	case length >= 0:
		body = make([]byte, length)
		_, err = io.ReadFull(h.br, body)
	default:
		body, err = io.ReadAll(io.LimitReader(h.br, 1<<20))
		keep = false
	}
	if err != nil {
		return 0, nil, false, err
	}
	return code, body, keep, nil
}

func readChunked(br *bufio.Reader) ([]byte, error) {
	var body []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		size, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 32)
		if err != nil || n < 0 || len(body)+int(n) > 1<<20 {
			return nil, errBadReply
		}
		if n == 0 {
			// Trailers, up to the blank line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return nil, err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return body, nil
				}
			}
		}
		start := len(body)
		body = append(body, make([]byte, n+2)...)
		if _, err := io.ReadFull(br, body[start:]); err != nil {
			return nil, err
		}
		if !bytes.HasSuffix(body, []byte("\r\n")) {
			return nil, errBadReply
		}
		body = body[:len(body)-2]
	}
}

// appendRaw is one producer append over h: the reply, or a *statusError
// as client.do returns it.
func appendRaw(h *rawHTTP, key, buildID string, body []byte) (appendReply, error) {
	path := "/v1/templates/builds/" + buildID + "/logs"
	code, reply, err := h.post(path, key, body)
	if err != nil {
		return appendReply{}, err
	}
	if code/100 != 2 {
		return appendReply{}, &statusError{method: "POST", path: path, status: strconv.Itoa(code), code: code, body: bytes.TrimSpace(reply)}
	}
	var r appendReply
	if err := json.Unmarshal(reply, &r); err != nil {
		return appendReply{}, fmt.Errorf("append reply %q: %w", reply, err)
	}
	return r, nil
}
