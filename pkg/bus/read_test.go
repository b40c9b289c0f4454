package bus_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
)

// TestReadByPosition reads records back by partition and offset, as an
// index into a topic does: each opens to what was published, an offset
// past the end is ErrNoRecord, and ReadFrom walks a partition in order.
func TestReadByPosition(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	b := c.Bus(t, bustest.Options{Geos: []string{"eu"}})
	const n = 30
	for i := range n {
		meta, ev := request(fmt.Sprintf("read-%02d", i), "acme", "eu", fmt.Sprintf("text %d", i))
		if err := b.Publish(t.Context(), "eu", bus.StreamRequests, meta, ev); err != nil {
			t.Fatal(err)
		}
	}
	recs := readTopic(t, c.Brokers, b.Topic("eu", bus.StreamRequests))
	if len(recs) != n {
		t.Fatalf("topic holds %d records, want %d", len(recs), n)
	}
	perPartition := map[int32][]string{}
	for _, r := range recs {
		d, err := b.ReadAt(t.Context(), "eu", bus.StreamRequests, r.Partition, r.Offset)
		if err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", r.Partition, r.Offset, err)
		}
		var ev events.InferenceRequest
		if err := d.Decode(t.Context(), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.RequestID != string(r.Key) || d.Meta.RequestID != ev.RequestID || d.Record.Offset != r.Offset {
			t.Errorf("ReadAt(%d, %d) = %s at %d, want %s", r.Partition, r.Offset, ev.RequestID, d.Record.Offset, r.Key)
		}
		perPartition[r.Partition] = append(perPartition[r.Partition], string(r.Key))
	}
	for p, want := range perPartition {
		end, err := b.EndOffset(t.Context(), "eu", bus.StreamRequests, p)
		if err != nil {
			t.Fatal(err)
		}
		if end != int64(len(want)) {
			t.Errorf("partition %d ends at %d, want %d", p, end, len(want))
		}
		if _, err := b.ReadAt(t.Context(), "eu", bus.StreamRequests, p, end); !errors.Is(err, bus.ErrNoRecord) {
			t.Errorf("ReadAt past the end of partition %d = %v, want ErrNoRecord", p, err)
		}
		var got []string
		next, err := b.ReadFrom(t.Context(), "eu", bus.StreamRequests, p, 1, func(d *bus.Delivery) error {
			got = append(got, d.Meta.RequestID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want[1:]) || next != end {
			t.Errorf("ReadFrom(partition %d, 1) = %v ending at %d, want %v ending at %d", p, got, next, want[1:], end)
		}
	}
}
