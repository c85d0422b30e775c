package record

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recorder collects, in kernel order, the files opened on one filesystem.
type recorder struct {
	fan  int // fanotify fd, non-blocking
	stop int // eventfd: written once to end the recording
	done chan struct{}

	// Set by the reading goroutine, read after done is closed.
	paths    []string
	seen     map[string]bool
	overflow bool
	err      error
}

// openEvents are the events recorded: every open, executions included.
const openEvents = unix.FAN_OPEN | unix.FAN_OPEN_EXEC

// startRecorder marks the filesystem holding dir and records the files
// opened on it until stop is called.
func startRecorder(dir string) (*recorder, error) {
	// An unlimited queue: a dropped event would silently lose a file.
	fan, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_UNLIMITED_QUEUE,
		unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fanotify_init: %w", err)
	}
	if err := unix.FanotifyMark(fan, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, openEvents, unix.AT_FDCWD, dir); err != nil {
		unix.Close(fan)
		return nil, fmt.Errorf("fanotify_mark %s: %w", dir, err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fan)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	r := &recorder{fan: fan, stop: stop, done: make(chan struct{}), seen: make(map[string]bool)}
	go r.loop()
	return r, nil
}

// finish ends the recording once every event queued so far is read, and
// returns the paths opened, in order, as the kernel reported them.
func (r *recorder) finish() ([]string, error) {
	var one [8]byte
	one[0] = 1 // eventfd counters are host-endian; 1 is non-zero either way
	if _, err := unix.Write(r.stop, one[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		return nil, fmt.Errorf("stopping recorder: %w", err)
	}
	<-r.done
	unix.Close(r.fan)
	unix.Close(r.stop)
	if r.overflow {
		return r.paths, errors.New("fanotify queue overflowed: some opens were lost")
	}
	return r.paths, r.err
}

// loop reads events until stop is signalled, then drains what is queued.
// Events are queued when the open happens, so everything opened before stop
// was written is read.
func (r *recorder) loop() {
	defer close(r.done)
	fds := []unix.PollFd{{Fd: int32(r.fan), Events: unix.POLLIN}, {Fd: int32(r.stop), Events: unix.POLLIN}}
	buf := make([]byte, 64<<10)
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			r.err = fmt.Errorf("poll: %w", err)
			return
		}
		if r.drain(buf) != nil || fds[1].Revents != 0 {
			return
		}
	}
}

// drain reads events until the queue is empty.
func (r *recorder) drain(buf []byte) error {
	for {
		n, err := unix.Read(r.fan, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			r.err = fmt.Errorf("reading fanotify events: %w", err)
			return r.err
		}
		r.handle(buf[:n])
	}
}

// handle records the events in buf, closing the fd each carries.
func (r *recorder) handle(buf []byte) {
	const metaSize = int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))
	for len(buf) >= metaSize {
		ev := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[0]))
		if ev.Event_len < uint32(metaSize) || int(ev.Event_len) > len(buf) {
			return
		}
		if ev.Mask&unix.FAN_Q_OVERFLOW != 0 {
			r.overflow = true
		}
		if ev.Fd >= 0 {
			r.add(int(ev.Fd))
			unix.Close(int(ev.Fd))
		}
		buf = buf[ev.Event_len:]
	}
}

// add records the regular file fd refers to, the first time it is seen.
func (r *recorder) add(fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !strings.HasPrefix(p, "/") || r.seen[p] {
		return
	}
	r.seen[p] = true
	r.paths = append(r.paths, p)
}
