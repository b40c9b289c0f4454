package control

import (
	"context"
	"fmt"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

// Publisher writes control changes and gives its caller read-your-writes:
// Publish returns once the service's own view has applied the very
// records it wrote.
type Publisher struct {
	bus    *bus.Bus
	tables map[string]*bus.Table
}

// NewPublisher returns a publisher on b whose views are the control
// tables of each geography.
func NewPublisher(b *bus.Bus, tables map[string]*bus.Table) *Publisher {
	return &Publisher{bus: b, tables: tables}
}

// Publish writes changes, in order, to the control topic of geo and waits
// until the view has applied the last of them (and so, the topic being
// read in order, all of them).
func (p *Publisher) Publish(ctx context.Context, geo string, changes ...events.ControlChange) error {
	t, ok := p.tables[geo]
	if !ok {
		return fmt.Errorf("publishing control changes: geography %q is not served here", geo)
	}
	var last *bus.Sending
	for _, c := range changes {
		last = p.bus.PublishAsync(ctx, geo, bus.StreamControl, bus.Meta{Key: KeyOf(c), Resource: c.Resource}, c)
		if err := last.Wait(); err != nil {
			return fmt.Errorf("publishing %s: %w", KeyOf(c), err)
		}
	}
	if last == nil {
		return nil
	}
	part, off := last.Written()
	return t.WaitFor(ctx, part, off)
}
