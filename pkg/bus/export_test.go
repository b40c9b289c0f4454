package bus

import "github.com/twmb/franz-go/pkg/kgo"

// DeliveryOf gives tests the delivery a consumer would hand its handler
// for r, without a broker round trip.
func (b *Bus) DeliveryOf(r *kgo.Record) *Delivery { return b.delivery(r) }
