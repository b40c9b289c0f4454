package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"gopkg.in/yaml.v3"
)

// Stream names: the last part of terroir.<geo>.<stream>.
const (
	StreamRequests          = "requests"
	StreamInference         = "inference"
	StreamCompletions       = "completions"
	StreamReplies           = "replies"
	StreamControl           = "control"
	StreamKeys              = "keys"
	StreamUsage             = "usage"
	StreamSafetySignals     = "safety-signals"
	StreamAbuseLog          = "abuse-log"
	StreamAudit             = "audit"
	StreamCapacity          = "capacity"
	StreamBatchJobs         = "batch-jobs"
	StreamBatches           = "batches"
	StreamBatchReplies      = "batch-replies"
	StreamBatchRequests     = "batch-requests"
	StreamBatchInference    = "batch-inference"
	StreamBatchCompletions  = "batch-completions"
	StreamFinetuneJobs      = "finetune-jobs"
	StreamJobEvents         = "job-events"
	StreamAssistantCommands = "assistant-commands"
	StreamFiles             = "files"
	StreamDLQ               = "dlq"
)

// DefaultNamespace is the first part of every topic name.
const DefaultNamespace = "terroir"

// TopicName returns "<namespace>.<geo>.<stream>".
func TopicName(namespace, geo, stream string) string {
	return namespace + "." + geo + "." + stream
}

// SplitTopic returns the geography and stream of a topic in namespace.
func SplitTopic(namespace, topic string) (geo, stream string, ok bool) {
	rest, found := strings.CutPrefix(topic, namespace+".")
	if !found {
		return "", "", false
	}
	geo, stream, ok = strings.Cut(rest, ".")
	return geo, stream, ok && geo != "" && stream != ""
}

// TransitStreams carry a request on its way (prompts, completions,
// replies): they keep records only for the transit retention, because a
// request may be processed outside its home geography and its content must
// not rest there.
var TransitStreams = []string{StreamRequests, StreamInference, StreamCompletions, StreamReplies,
	StreamBatchRequests, StreamBatchInference, StreamBatchCompletions}

// DefaultTransitRetention is how long transit streams keep records unless
// TopicDefs.TransitRetention says otherwise.
const DefaultTransitRetention = time.Hour

// IsTransit reports whether stream is one of TransitStreams.
func IsTransit(stream string) bool {
	for _, s := range TransitStreams {
		if s == stream {
			return true
		}
	}
	return false
}

// TopicDefs is the parsed deployments/topics.yaml.
type TopicDefs struct {
	Defaults struct {
		Partitions int32 `yaml:"partitions"`
	} `yaml:"defaults"`
	Streams []StreamDef `yaml:"streams"`
	// TransitRetention is the retention.ms and segment.ms of the transit
	// streams (the longest a record can stay is twice it: a segment is
	// deleted once its newest record is older than the retention).
	// ParseTopicDefs sets DefaultTransitRetention; services set
	// TERROIR_TRANSIT_RETENTION.
	TransitRetention time.Duration `yaml:"-"`
}

// Configs returns the topic configs of s: those of the file and, for a
// transit stream, its retention.
func (d *TopicDefs) Configs(s StreamDef) map[string]string {
	cfg := make(map[string]string, len(s.Config)+2)
	for k, v := range s.Config {
		cfg[k] = v
	}
	if IsTransit(s.Name) {
		r := d.TransitRetention
		if r <= 0 {
			r = DefaultTransitRetention
		}
		ms := strconv.FormatInt(r.Milliseconds(), 10)
		cfg["retention.ms"], cfg["segment.ms"] = ms, ms
	}
	return cfg
}

// StreamDef describes one stream provisioned in every geography.
type StreamDef struct {
	Name       string            `yaml:"name"`
	Partitions int32             `yaml:"partitions"`
	Config     map[string]string `yaml:"config"`
}

// Stream returns the definition of the named stream.
func (d *TopicDefs) Stream(name string) (StreamDef, bool) {
	for _, s := range d.Streams {
		if s.Name == name {
			return s, true
		}
	}
	return StreamDef{}, false
}

// LoadTopicDefs reads and checks a topics file.
func LoadTopicDefs(path string) (*TopicDefs, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading topic definitions: %w", err)
	}
	return ParseTopicDefs(b)
}

// ParseTopicDefs parses and checks topic definitions; partitions default
// to defaults.partitions.
func ParseTopicDefs(b []byte) (*TopicDefs, error) {
	var d TopicDefs
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("parsing topic definitions: %w", err)
	}
	if d.Defaults.Partitions <= 0 {
		d.Defaults.Partitions = 1
	}
	d.TransitRetention = DefaultTransitRetention
	seen := map[string]bool{}
	var errs []error
	for i := range d.Streams {
		s := &d.Streams[i]
		switch {
		case s.Name == "" || strings.ContainsAny(s.Name, ". /"):
			errs = append(errs, fmt.Errorf("stream %d: bad name %q", i, s.Name))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("stream %q defined twice", s.Name))
		}
		seen[s.Name] = true
		if s.Partitions == 0 {
			s.Partitions = d.Defaults.Partitions
		}
		if s.Partitions < 0 {
			errs = append(errs, fmt.Errorf("stream %q: negative partitions", s.Name))
		}
		if IsTransit(s.Name) {
			for _, k := range []string{"retention.ms", "segment.ms"} {
				if _, ok := s.Config[k]; ok {
					errs = append(errs, fmt.Errorf("stream %q: %s of a transit stream is the transit retention (TERROIR_TRANSIT_RETENTION), not a file setting", s.Name, k))
				}
			}
		}
	}
	for _, required := range []string{StreamReplies, StreamControl, StreamKeys, StreamDLQ} {
		if !seen[required] {
			errs = append(errs, fmt.Errorf("stream %q is required", required))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("topic definitions: %w", err)
	}
	return &d, nil
}

// Provision creates every stream's topic of geo that does not exist yet
// and sets the declared configs on all of them, so topics an earlier
// version created get today's configs (an incremental alter: configs not
// declared are left as they are). Running it again changes nothing, so
// every service runs it at start-up.
func Provision(ctx context.Context, adm *kadm.Client, namespace, geo string, defs *TopicDefs, replication int16) error {
	names := make([]string, 0, len(defs.Streams))
	for _, s := range defs.Streams {
		names = append(names, TopicName(namespace, geo, s.Name))
	}
	existing, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("listing topics of %s: %w", geo, err)
	}
	for _, s := range defs.Streams {
		topic := TopicName(namespace, geo, s.Name)
		want := defs.Configs(s)
		if !existing.Has(topic) || existing[topic].Err != nil {
			cfg := make(map[string]*string, len(want))
			for k, v := range want {
				cfg[k] = &v
			}
			resp, err := adm.CreateTopic(ctx, s.Partitions, replication, cfg, topic)
			if err == nil {
				err = resp.Err
			}
			if err == nil {
				continue
			}
			if !errors.Is(err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("creating %s: %w", topic, err)
			}
			// Another service created it meanwhile, perhaps an older
			// version: set the configs as on any existing topic.
		}
		if len(want) == 0 {
			continue
		}
		alters := make([]kadm.AlterConfig, 0, len(want))
		for k, v := range want {
			alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v})
		}
		resps, err := adm.AlterTopicConfigs(ctx, alters, topic)
		if err == nil {
			var r kadm.AlterConfigsResponse
			if r, err = resps.On(topic, nil); err == nil {
				err = r.Err
			}
		}
		if err != nil {
			return fmt.Errorf("setting configs of %s: %w", topic, err)
		}
	}
	return nil
}
