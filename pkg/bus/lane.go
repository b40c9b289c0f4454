package bus

import (
	"fmt"
	"strings"
)

// Lane is one of the two copies of the request path. Real-time requests
// travel requests → inference → completions; batch lines travel the same
// path on streams of their own (batch-requests → batch-inference →
// batch-completions), through the same stages with the same checks, so
// that the instances serving the batch lane can be separate processes
// run at a lower CPU priority (TERROIR_NICE) or on other machines: a
// batch line then uses only what real time leaves, and never waits in a
// real-time queue or makes a real-time request wait in its own.
type Lane string

const (
	LaneRealtime Lane = "realtime"
	LaneBatch    Lane = "batch"
)

// AllLanes are the lanes an instance serves unless told otherwise.
var AllLanes = []Lane{LaneRealtime, LaneBatch}

var laneStreams = map[string]string{
	StreamRequests:    StreamBatchRequests,
	StreamInference:   StreamBatchInference,
	StreamCompletions: StreamBatchCompletions,
}

// Stream returns the lane's copy of a request-path stream (requests,
// inference, completions); any other stream is returned as it is.
func (l Lane) Stream(stream string) string {
	if l == LaneBatch {
		if s, ok := laneStreams[stream]; ok {
			return s
		}
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
	for _, s := range laneStreams {
		if s == stream {
			return LaneBatch
		}
	}
	return LaneRealtime
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
