package e2e

import (
	"strings"

	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// allRecords reads every record of every topic of the stack's namespace,
// from start to current end, with a client of its own.
func (s *stack) allRecords() []*kgo.Record {
	s.t.Helper()
	return bustest.NamespaceRecords(s.t, strings.Split(s.env["TERROIR_KAFKA_BROKERS"], ","), s.env["TERROIR_KAFKA_NAMESPACE"])
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// geoOf returns the geography of a topic name "<ns>.<geo>.<stream>".
func geoOf(topic string) (geo, stream string) {
	parts := strings.SplitN(topic, ".", 3)
	if len(parts) < 3 {
		return "", ""
	}
	return parts[1], parts[2]
}
