package bus_test

import (
	"strconv"
	"testing"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
)

// promisedConfigs are the topic configs that keep the data promises, as a
// broker describes them after provisioning:
//   - keys: a tombstoned (shredded) key is compacted away within an hour;
//   - abuse-log: 30 days, in segments of at most a day, so no record
//     outlives its retention by more than a day;
//   - transit topics: an hour, in segments no longer than that, so a
//     prompt processed outside its home geography does not rest there.
func promisedConfigs() map[string]map[string]string {
	transit := map[string]string{"retention.ms": "3600000", "segment.ms": "3600000"}
	return map[string]map[string]string{
		bus.StreamKeys: {"cleanup.policy": "compact", "max.compaction.lag.ms": "3600000",
			"min.cleanable.dirty.ratio": "0.01", "segment.ms": "3600000", "delete.retention.ms": "3600000"},
		bus.StreamAbuseLog:    {"retention.ms": "2592000000", "segment.ms": "86400000"},
		bus.StreamRequests:    transit,
		bus.StreamInference:   transit,
		bus.StreamCompletions: transit,
		bus.StreamReplies:     transit,
	}
}

// TestTopicConfigsKeepThePromises provisions a geography on fresh topics
// and on topics an earlier version created with its own configs, and
// describes what the broker holds.
func TestTopicConfigsKeepThePromises(t *testing.T) {
	t.Parallel()
	c := bustest.New(t)
	defs, err := bus.LoadTopicDefs(bustest.TopicsFile(t))
	if err != nil {
		t.Fatal(err)
	}
	// What an earlier version created: its own configs, or none.
	earlier := map[string]map[string]string{
		bus.StreamKeys:     {"cleanup.policy": "compact", "delete.retention.ms": "3600000", "segment.ms": "3600000"},
		bus.StreamAbuseLog: {"retention.ms": "2592000000"},
		bus.StreamReplies:  {"retention.ms": "3600000"},
		bus.StreamRequests: {},
	}
	for _, existing := range []bool{false, true} {
		t.Run("existing topics "+strconv.FormatBool(existing), func(t *testing.T) {
			t.Parallel()
			ns := bustest.Namespace()
			b := c.Bus(t, bustest.Options{Namespace: ns, Geos: []string{"eu"}})
			adm, err := b.Admin("eu")
			if err != nil {
				t.Fatal(err)
			}
			// The bus provisioned "eu"; "us" is provisioned here, over
			// an earlier version's topics when existing.
			if existing {
				for stream, kv := range earlier {
					cfg := map[string]*string{}
					for k, v := range kv {
						cfg[k] = &v
					}
					if _, err := adm.CreateTopic(t.Context(), 1, 1, cfg, bus.TopicName(ns, "us", stream)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := bus.Provision(t.Context(), adm, ns, "us", defs, 1); err != nil {
				t.Fatal(err)
			}
			for _, geo := range []string{"eu", "us"} {
				for stream, want := range promisedConfigs() {
					got := bustest.TopicConfigs(t, adm, bus.TopicName(ns, geo, stream))
					for k, v := range want {
						if got[k] != v {
							t.Errorf("%s.%s: %s = %q, want %q", geo, stream, k, got[k], v)
						}
					}
				}
			}
		})
	}
}
