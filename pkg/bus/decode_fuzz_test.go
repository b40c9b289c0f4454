package bus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/bus/bustest"
	"github.com/terroir-ai/terroir/pkg/events"
	"github.com/terroir-ai/terroir/pkg/keys"
)

// eventValue returns a fresh value of the Go type of an event type.
func eventValue(t events.Type) any {
	switch t.Name {
	case events.TypeInferenceRequest.Name:
		return new(events.InferenceRequest)
	case events.TypeInferenceChunk.Name:
		return new(events.InferenceChunk)
	case events.TypeInferenceResult.Name:
		return new(events.InferenceResult)
	case events.TypeUsageRecord.Name:
		return new(events.UsageRecord)
	case events.TypeSafetySignal.Name:
		return new(events.SafetySignal)
	case events.TypeAbuseRecord.Name:
		return new(events.AbuseRecord)
	case events.TypeAuditEntry.Name:
		return new(events.AuditEntry)
	case events.TypeCapacityReport.Name:
		return new(events.CapacityReport)
	case events.TypeControlChange.Name:
		return new(events.ControlChange)
	case events.TypeDataKey.Name:
		return new(events.DataKey)
	case events.TypeFileObject.Name:
		return new(events.FileObject)
	case events.TypeBatchObject.Name:
		return new(events.BatchObject)
	case events.TypeBatchCommand.Name:
		return new(events.BatchCommand)
	}
	return new(map[string]any)
}

func TestEveryEventTypeHasAFuzzValue(t *testing.T) {
	for _, s := range events.All() {
		if _, ok := eventValue(s.Type).(*map[string]any); ok {
			t.Errorf("event type %s has no Go type in eventValue: add it so FuzzDecodeRecord decodes it", s.Type)
		}
	}
}

// FuzzDecodeRecord feeds a consumer's decoding arbitrary records: any
// event type name and version, key ID, resource, geographies and payload,
// sealed under the right key (so the JSON decoder sees arbitrary
// plaintext) or not. Decoding never panics, fails with a permanent error
// (retrying cannot help), and never quotes the payload in its error,
// which travels into logs and dead-letter headers.
func FuzzDecodeRecord(f *testing.F) {
	ctx := context.Background()
	b := bustest.New(f).Bus(f, bustest.Options{})
	// a valid sealed key ID to choose from
	k, err := b.Keys().ForResource(ctx, "eu", "acme")
	if err != nil {
		f.Fatal(err)
	}
	abuse, err := b.Keys().AbuseKey(ctx, "eu")
	if err != nil {
		f.Fatal(err)
	}
	valid, _ := json.Marshal(events.InferenceRequest{RequestID: "r1", Resource: "acme", HomeGeo: "eu", ProcessingGeo: "eu",
		Deployment: "chat", SKU: events.SKUStandard, Model: "m", Operation: events.OperationChatCompletions,
		APIFlavor: events.APIFlavorOpenAI, Body: json.RawMessage(`{"messages":[{"role":"user","content":"a secret prompt text"}]}`)})
	f.Add("inference.request", 1, uint8(1), "acme", "eu", valid, true)
	f.Add("inference.request", 1, uint8(1), "acme", "eu", valid, false)
	f.Add("inference.request", 2, uint8(1), "acme", "eu", []byte(`{"request_id":"r1","body":{"secret":"a secret prompt text"},"unknown":1}`), true)
	f.Add("inference.chunk", 1, uint8(1), "acme", "eu", []byte(`{"seq":"a secret prompt text"}`), true)
	f.Add("inference.result", 1, uint8(1), "globex", "us", []byte(`{"usage":{"prompt_tokens":123456789012345678901234567890}}`), true)
	f.Add("abuse.record", 1, uint8(2), "abuse", "eu", []byte(`{"request_id":["a secret prompt text"]}`), true)
	f.Add("usage.record", 1, uint8(0), "", "", []byte(`{"tokens":{"a secret prompt text":1}}`), false)
	f.Add("safety.signal", 1, uint8(0), "", "", []byte(`[1,2,3`), false)
	f.Add("control.change", 1, uint8(0), "", "", []byte(`{"kind":"resource","spec":"a secret prompt text"}`), false)
	f.Add("keys.datakey", 1, uint8(0), "", "", []byte{0xff, 0xfe, 0x00}, false)
	f.Add("capacity.report", 1, uint8(0), "", "", []byte(`{"models":{"a secret prompt text":{"spare":1e400}}}`), false)
	f.Add("audit.entry", 1, uint8(3), "acme", "eu", []byte(`null`), false)
	f.Add("no.such.type", 7, uint8(3), "acme", "eu", []byte(`{}`), true)
	f.Fuzz(func(t *testing.T, typeName string, version int, keyChoice uint8, resource, homeGeo string, value []byte, seal bool) {
		typ := events.Type{Name: typeName, Version: version}
		meta := bus.Meta{Type: typ, RequestID: "r1", Resource: resource, HomeGeo: homeGeo}
		switch keyChoice % 4 {
		case 1:
			meta.KeyID = k.ID
		case 2:
			meta.KeyID = abuse.ID
		case 3:
			meta.KeyID = "eu/acme/no-such-key"
		}
		payload := value
		if seal && meta.KeyID != "" {
			sealer := k
			if meta.KeyID == abuse.ID {
				sealer = abuse
			}
			if meta.KeyID != "eu/acme/no-such-key" {
				payload = sealer.Seal(value, keys.AAD(meta.RequestID, meta.Resource, typ.String()))
			}
		}
		rec := &kgo.Record{Topic: b.Topic("eu", bus.StreamRequests), Partition: 3, Offset: 42, Key: []byte("r1"),
			Value: payload, Headers: []kgo.RecordHeader{
				{Key: bus.HeaderEventType, Value: []byte(typeName)},
				{Key: bus.HeaderEventVersion, Value: []byte(strconv.Itoa(version))},
				{Key: bus.HeaderRequestID, Value: []byte(meta.RequestID)},
				{Key: bus.HeaderResource, Value: []byte(resource)},
				{Key: bus.HeaderHomeGeo, Value: []byte(homeGeo)},
				{Key: bus.HeaderKeyID, Value: []byte(meta.KeyID)},
			}}
		d := b.DeliveryOf(rec)
		err := d.Decode(ctx, eventValue(typ))
		if err == nil {
			return
		}
		if !bus.IsPermanent(err) {
			t.Fatalf("decoding failed with a retryable error: %v", err)
		}
		msg := err.Error()
		if len(msg) > 1024 {
			t.Fatalf("decoding error of %d bytes", len(msg))
		}
		// headers may be quoted, escaped or not
		headers := []byte(rec.Topic + typ.String() + resource + homeGeo + meta.KeyID + strconv.Quote(typ.String()) + strconv.Quote(meta.KeyID))
		const window = 12 // no run of the payload this long may appear in the error
		for i := 0; i+window <= len(value); i++ {
			if piece := value[i : i+window]; bytes.Contains([]byte(msg), piece) && !bytes.Contains(headers, piece) {
				t.Fatalf("decoding error quotes the payload (%q): %s", piece, msg)
			}
		}
	})
}
