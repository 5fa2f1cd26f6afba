package httpapi

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// On Linux one epoll set watches every detached stream's connection for
// the client's hang-up, and one goroutine waits on it, in place of a
// goroutine a connection blocked in a one-byte read: at thousands of
// followers those goroutines were a tenth of the server's memory.
//
// The set holds the connections' descriptors beside the runtime's own
// poller, asking only for EPOLLRDHUP (the peer's FIN; errors and resets
// are always reported), once (EPOLLONESHOT): bytes a client sends do not
// wake it, as the one-byte read ignored them too. A descriptor leaves the
// set when the stream ends, before its connection closes, and the kernel
// drops one that closes first; events name a watch by a number of its
// own, never by descriptor, so a number the kernel reuses cannot be
// confused with an older connection.
type hangups struct {
	once sync.Once
	epfd int
	err  error

	mu      sync.Mutex
	next    uint64
	watched map[uint64]func()
}

var connHangups hangups

// watch calls gone once c's client hangs up. stop ends the watch; call it
// before closing c. ok is false when c cannot be watched this way.
func (h *hangups) watch(c net.Conn, gone func()) (stop func(), ok bool) {
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	if h.once.Do(h.start); h.err != nil {
		return nil, false
	}
	h.mu.Lock()
	h.next++
	id := h.next
	h.watched[id] = gone
	h.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | epollOneShot, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var addErr error
	if err := rc.Control(func(fd uintptr) { addErr = syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil || addErr != nil {
		h.forget(id)
		return nil, false
	}
	return func() {
		if h.forget(id) {
			// Closed already (CloseStreams): the kernel has dropped it.
			rc.Control(func(fd uintptr) { syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
		}
	}, true
}

// epollOneShot is EPOLLONESHOT, which package syscall spells as a negative
// int constant that a uint32 field will not take.
const epollOneShot = 1 << 30

func (h *hangups) forget(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.watched[id]
	delete(h.watched, id)
	return ok
}

func (h *hangups) start() {
	h.epfd, h.err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if h.err != nil {
		return
	}
	h.watched = make(map[uint64]func())
	go h.loop()
}

func (h *hangups) loop() {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(h.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return // cannot happen with a valid set; streams then end on write errors
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			h.mu.Lock()
			gone := h.watched[id]
			delete(h.watched, id)
			h.mu.Unlock()
			if gone != nil {
				gone()
			}
		}
	}
}
