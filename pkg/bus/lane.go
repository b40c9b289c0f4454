package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Lane is one of the two copies of the request path. Real-time requests
// travel requests → inference → completions; batch lines travel the same
// path on streams of their own (batch-requests → batch-inference →
// batch-completions), through the same stages with the same checks, so
// that the instances serving the batch lane can be separate processes
// run at a lower CPU priority (TERROIR_CPU_PRIORITY) or on other machines: a
// batch line then uses only what real time leaves, and never waits in a
// real-time queue or makes a real-time request wait in its own.
type Lane string

const (
	LaneRealtime Lane = "realtime"
	LaneBatch    Lane = "batch"
)

// AllLanes are the lanes an instance serves unless told otherwise.
var AllLanes = []Lane{LaneRealtime, LaneBatch}

// Stream returns the lane's copy of a request-path stream (requests,
// inference, completions); any other stream is returned as it is.
func (l Lane) Stream(stream string) string {
	if l != LaneBatch {
		return stream
	}
	switch stream {
	case StreamRequests:
		return StreamBatchRequests
	case StreamInference:
		return StreamBatchInference
	case StreamCompletions:
		return StreamBatchCompletions
	}
	return stream
}

// Group returns the lane's consumer group for a stage whose real-time
// group is group.
func (l Lane) Group(group string) string {
	if l == LaneBatch {
		return group + "-batch"
	}
	return group
}

// LaneOf returns the lane a request-path stream belongs to.
func LaneOf(stream string) Lane {
	switch stream {
	case StreamBatchRequests, StreamBatchInference, StreamBatchCompletions:
		return LaneBatch
	}
	return LaneRealtime
}

// Serves reports whether an instance serving lanes (every lane when
// empty) serves l.
func Serves(lanes []Lane, l Lane) bool {
	return len(lanes) == 0 || slices.Contains(lanes, l)
}

// NewLaneConsumers makes a consumer per lane of lanes (every lane when
// empty) from cfg, the real-time lane's configuration: each reads its
// lane's copies of cfg.Streams in its lane's group. On an error none is
// left open.
func (b *Bus) NewLaneConsumers(lanes []Lane, cfg ConsumerConfig) (map[Lane]*Consumer, error) {
	if len(lanes) == 0 {
		lanes = AllLanes
	}
	out := make(map[Lane]*Consumer, len(lanes))
	for _, l := range lanes {
		lc := cfg
		lc.Group = l.Group(cfg.Group)
		lc.Streams = make([]string, len(cfg.Streams))
		for i, s := range cfg.Streams {
			lc.Streams[i] = l.Stream(s)
		}
		c, err := b.NewConsumer(lc)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, err
		}
		out[l] = c
	}
	return out, nil
}

// RunConsumers runs every consumer until ctx ends and returns their
// errors joined.
func RunConsumers(ctx context.Context, cs ...map[Lane]*Consumer) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, m := range cs {
		for _, c := range m {
			wg.Go(func() {
				if err := c.Run(ctx); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ParseLanes reads a comma-separated list of lanes (TERROIR_LANES).
func ParseLanes(s string) ([]Lane, error) {
	var out []Lane
	for _, f := range strings.Split(s, ",") {
		l := Lane(strings.TrimSpace(f))
		switch l {
		case "":
			continue
		case LaneRealtime, LaneBatch:
			for _, o := range out {
				if o == l {
					return nil, fmt.Errorf("lane %s is named twice", l)
				}
			}
			out = append(out, l)
		default:
			return nil, fmt.Errorf("lane %q is neither realtime nor batch", string(l))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no lane")
	}
	return out, nil
}
