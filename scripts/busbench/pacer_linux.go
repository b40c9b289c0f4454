package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// timerfdPacer ticks from a Linux timerfd read through the runtime's
// network poller. A time.Ticker cannot pace a sub-millisecond open loop:
// an idle Go process sleeps in epoll_wait, whose timeout is in whole
// milliseconds, so its ticks arrive up to a millisecond late (half a
// millisecond on average), which would be charged to every request. A
// readable timerfd wakes epoll_wait at once, within tens of microseconds.
type timerfdPacer struct {
	f   *os.File
	buf [8]byte
}

func newPacer(interval time.Duration) (pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating a timerfd: %w", err)
	}
	ts := unix.NsecToTimespec(int64(interval))
	if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("arming the timerfd: %w", err)
	}
	// The descriptor is non-blocking, so os.File reads it through the
	// poller instead of parking a thread.
	return &timerfdPacer{f: os.NewFile(uintptr(fd), "busbench-pacer")}, nil
}

// Wait blocks until the next tick. The value read, the number of
// intervals that passed, is not needed: the caller works out what is due
// from the clock.
func (p *timerfdPacer) Wait() error {
	if _, err := p.f.Read(p.buf[:]); err != nil {
		return fmt.Errorf("reading the timerfd: %w", err)
	}
	return nil
}

func (p *timerfdPacer) Stop() { _ = p.f.Close() }
