package bus_test

import (
	"slices"
	"testing"

	"github.com/terroir-ai/terroir/pkg/bus"
)

func TestLaneStreams(t *testing.T) {
	for _, s := range []string{bus.StreamRequests, bus.StreamInference, bus.StreamCompletions} {
		b := bus.LaneBatch.Stream(s)
		if b == s || bus.LaneOf(b) != bus.LaneBatch || bus.LaneOf(s) != bus.LaneRealtime || bus.LaneRealtime.Stream(s) != s {
			t.Errorf("%s: batch lane %s, lanes %s %s", s, b, bus.LaneOf(b), bus.LaneOf(s))
		}
		if !bus.IsTransit(b) {
			t.Errorf("%s carries prompts but is not a transit stream", b)
		}
	}
	// the replies go to the waiting instance or the batch service, as before
	if bus.LaneBatch.Stream(bus.StreamReplies) != bus.StreamReplies || bus.LaneBatch.Group("inference") == "inference" {
		t.Error("replies or groups are not kept apart as they should be")
	}
	if !bus.Serves(nil, bus.LaneBatch) || !bus.Serves([]bus.Lane{bus.LaneRealtime}, bus.LaneRealtime) || bus.Serves([]bus.Lane{bus.LaneBatch}, bus.LaneRealtime) {
		t.Error("Serves: an empty list serves every lane, a list only its own")
	}
	for in, want := range map[string][]bus.Lane{"realtime,batch": bus.AllLanes, " batch ": {bus.LaneBatch}, "realtime": {bus.LaneRealtime}} {
		if got, err := bus.ParseLanes(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseLanes(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "fast", "batch,batch"} {
		if _, err := bus.ParseLanes(in); err == nil {
			t.Errorf("ParseLanes(%q) accepted", in)
		}
	}
}
