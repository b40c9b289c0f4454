package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/scripts/internal/bench"
)

// benchPlainRoundTrip measures the same request/reply round trip as
// benchBusRoundTrip with bare franz-go clients: raw bytes, no envelope, no
// metadata headers, the reply partition known in advance. The clients are
// set up as the bus sets up its own (linger 0, acks=all, no compression,
// read-committed consumer group marking handled records, a 1 s fetch wait,
// one goroutine per partition of a poll) so that the difference between the
// two rows is what the bus adds on top of franz-go.
func benchPlainRoundTrip(ctx context.Context, e *env) ([]bench.Row, error) {
	const replyPartitions = 16
	reqTopic, repTopic := e.ns+".plain.requests", e.ns+".plain.replies"
	if err := e.createTopic(ctx, reqTopic, 12); err != nil {
		return nil, err
	}
	if err := e.createTopic(ctx, repTopic, replyPartitions); err != nil {
		return nil, err
	}
	replyPart := bus.ReplyPartition("busbench-plain-front-"+e.ns, replyPartitions)
	producer := func(p kgo.Partitioner) (*kgo.Client, error) {
		return kgo.NewClient(e.clientOpts(
			kgo.ProducerLinger(0),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ProducerBatchCompression(kgo.NoCompression()),
			kgo.RecordPartitioner(p),
		)...)
	}
	var clients []*kgo.Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	newClient := func(mk func() (*kgo.Client, error)) (*kgo.Client, error) {
		cl, err := mk()
		if err != nil {
			return nil, fmt.Errorf("plain franz-go client: %w", err)
		}
		clients = append(clients, cl)
		return cl, nil
	}

	// Responder: consumer group on the requests, replies to the partition.
	respProd, err := newClient(func() (*kgo.Client, error) { return producer(kgo.ManualPartitioner()) })
	if err != nil {
		return nil, err
	}
	respCons, err := newClient(func() (*kgo.Client, error) {
		return kgo.NewClient(e.clientOpts(
			kgo.ConsumerGroup(e.ns+"-plain"),
			kgo.ConsumeTopics(reqTopic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.AutoCommitMarks(),
			kgo.BlockRebalanceOnPoll(),
			kgo.FetchMaxWait(time.Second),
		)...)
	})
	if err != nil {
		return nil, err
	}
	// Requester: a producer, and a reader of its reply partition.
	reqProd, err := newClient(func() (*kgo.Client, error) { return producer(kgo.StickyKeyPartitioner(nil)) })
	if err != nil {
		return nil, err
	}
	repCons, err := newClient(func() (*kgo.Client, error) {
		return kgo.NewClient(e.clientOpts(
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{repTopic: {replyPart: kgo.NewOffset().At(0)}}),
			kgo.FetchMaxWait(time.Second),
		)...)
	})
	if err != nil {
		return nil, err
	}

	lctx, cancel := context.WithCancel(ctx)
	var loops sync.WaitGroup
	defer func() {
		cancel()
		loops.Wait()
	}()
	loops.Go(func() {
		for {
			fetches := respCons.PollRecords(lctx, 500)
			if fetches.IsClientClosed() || lctx.Err() != nil {
				// Leaving the group on Close must not wait on this poll.
				respCons.AllowRebalance()
				return
			}
			var wg sync.WaitGroup
			fetches.EachPartition(func(p kgo.FetchTopicPartition) {
				wg.Go(func() {
					for _, r := range p.Records {
						out := &kgo.Record{Topic: repTopic, Partition: replyPart, Key: r.Key, Value: e.result}
						if err := respProd.ProduceSync(lctx, out).FirstErr(); err != nil {
							return
						}
						respCons.MarkCommitRecords(r)
					}
				})
			})
			wg.Wait()
			respCons.AllowRebalance()
		}
	})

	var mu sync.Mutex
	waiting := map[string]chan struct{}{}
	loops.Go(func() {
		for {
			fetches := repCons.PollFetches(lctx)
			if fetches.IsClientClosed() || lctx.Err() != nil {
				return
			}
			fetches.EachRecord(func(r *kgo.Record) {
				mu.Lock()
				ch := waiting[string(r.Key)]
				delete(waiting, string(r.Key))
				mu.Unlock()
				if ch != nil {
					close(ch)
				}
			})
		}
	})
	roundTrip := func(ctx context.Context, id string) error {
		ch := make(chan struct{})
		mu.Lock()
		waiting[id] = ch
		mu.Unlock()
		forget := func() {
			mu.Lock()
			delete(waiting, id)
			mu.Unlock()
		}
		if err := reqProd.ProduceSync(ctx, &kgo.Record{Topic: reqTopic, Key: []byte(id), Value: e.body}).FirstErr(); err != nil {
			forget()
			return fmt.Errorf("producing request %s: %w", id, err)
		}
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			forget()
			return fmt.Errorf("waiting for reply to %s: %w", id, ctx.Err())
		}
	}
	r, err := measureRoundTrip(ctx, e, fmt.Sprintf("request/reply plain franz-go @%d/s", e.cfg.rate), roundTrip)
	if len(r.Lat) > 0 {
		r.Target = "ref ≈0.5/1.4 ms"
		r.Comment = fmt.Sprintf("same round trip with bare kgo clients configured like the bus's, raw %d B bytes each way, no envelope or headers; reference p50/p99 from the issue; %s", e.cfg.bodyBytes, r.Comment)
	}
	return []bench.Row{r}, err
}
