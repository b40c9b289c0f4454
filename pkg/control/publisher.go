package control

import (
	"context"
	"fmt"

	"github.com/terroir-ai/terroir/pkg/bus"
	"github.com/terroir-ai/terroir/pkg/events"
)

// Publisher writes control changes and gives its caller read-your-writes:
// Publish returns once the service's own view has applied them.
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
// until the view has applied them.
func (p *Publisher) Publish(ctx context.Context, geo string, changes ...events.ControlChange) error {
	t, ok := p.tables[geo]
	if !ok {
		return fmt.Errorf("publishing control changes: geography %q is not served here", geo)
	}
	for _, c := range changes {
		if err := p.bus.Publish(ctx, geo, bus.StreamControl, bus.Meta{Key: KeyOf(c), Resource: c.Resource}, c); err != nil {
			return fmt.Errorf("publishing %s: %w", KeyOf(c), err)
		}
	}
	return t.Sync(ctx)
}
