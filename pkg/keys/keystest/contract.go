// Package keystest is the contract test every keys.Store implementation
// runs, so the in-memory and the Kafka-backed stores behave the same.
package keystest

import (
	"errors"
	"testing"
	"time"

	"github.com/terroir-ai/terroir/pkg/keys"
)

// Run exercises a Store. open is called once per subtest and must set up
// an empty backing store; the function it returns hands out views of that
// backing store (for a distributed store, separate clients), each of which
// must see the writes of the others.
func Run(t *testing.T, open func(t *testing.T) func() keys.Store) {
	t.Helper()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	key := func(id, geo, res string, at time.Time) keys.WrappedKey {
		return keys.WrappedKey{ID: id, Geo: geo, Resource: res, KEKID: geo + "/kek/v1", Wrapped: []byte("w-" + id), CreatedAt: at}
	}

	t.Run("missing keys are ErrKeyNotFound", func(t *testing.T) {
		s := open(t)()
		if _, err := s.Get(t.Context(), "eu/none/0"); !errors.Is(err, keys.ErrKeyNotFound) {
			t.Fatalf("Get: got %v, want ErrKeyNotFound", err)
		}
		if _, err := s.Current(t.Context(), "eu", "none"); !errors.Is(err, keys.ErrKeyNotFound) {
			t.Fatalf("Current: got %v, want ErrKeyNotFound", err)
		}
	})

	t.Run("put get current by resource and geography", func(t *testing.T) {
		s := open(t)()
		ctx := t.Context()
		for _, k := range []keys.WrappedKey{
			key("eu/acme/1", "eu", "acme", t0),
			key("eu/acme/2", "eu", "acme", t0.Add(time.Minute)),
			key("us/acme/1", "us", "acme", t0.Add(2*time.Minute)),
			key("eu/globex/1", "eu", "globex", t0.Add(3*time.Minute)),
		} {
			if err := s.Put(ctx, k); err != nil {
				t.Fatalf("Put %s: %v", k.ID, err)
			}
		}
		got, err := s.Get(ctx, "eu/acme/1")
		if err != nil || string(got.Wrapped) != "w-eu/acme/1" || got.KEKID != "eu/kek/v1" || !got.CreatedAt.Equal(t0) {
			t.Fatalf("Get eu/acme/1 = %+v, %v", got, err)
		}
		cases := []struct{ geo, res, want string }{
			{"eu", "acme", "eu/acme/2"},
			{"us", "acme", "us/acme/1"},
			{"eu", "globex", "eu/globex/1"},
		}
		for _, c := range cases {
			cur, err := s.Current(ctx, c.geo, c.res)
			if err != nil || cur.ID != c.want {
				t.Errorf("Current(%s,%s) = %q, %v; want %q", c.geo, c.res, cur.ID, err, c.want)
			}
		}
	})

	t.Run("delete removes only that resource in that geography", func(t *testing.T) {
		s := open(t)()
		ctx := t.Context()
		for _, k := range []keys.WrappedKey{
			key("eu/acme/1", "eu", "acme", t0),
			key("eu/acme/2", "eu", "acme", t0.Add(time.Second)),
			key("us/acme/1", "us", "acme", t0),
			key("eu/globex/1", "eu", "globex", t0),
		} {
			if err := s.Put(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(ctx, "eu", "acme"); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"eu/acme/1", "eu/acme/2"} {
			if _, err := s.Get(ctx, id); !errors.Is(err, keys.ErrKeyNotFound) {
				t.Errorf("after delete, Get(%s) = %v", id, err)
			}
		}
		if _, err := s.Current(ctx, "eu", "acme"); !errors.Is(err, keys.ErrShredded) {
			t.Errorf("after delete, Current = %v, want ErrShredded", err)
		}
		for _, id := range []string{"us/acme/1", "eu/globex/1"} {
			if _, err := s.Get(ctx, id); err != nil {
				t.Errorf("delete took %s too: %v", id, err)
			}
		}
	})

	t.Run("the key written last is current whatever its clock", func(t *testing.T) {
		s := open(t)()
		ctx := t.Context()
		for _, k := range []keys.WrappedKey{
			key("eu/acme/1", "eu", "acme", t0.Add(time.Hour)),
			key("eu/acme/2", "eu", "acme", t0), // made by an instance whose clock runs behind
		} {
			if err := s.Put(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		// rewrapping an older version does not make it current
		if err := s.Put(ctx, key("eu/acme/1", "eu", "acme", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if cur, err := s.Current(ctx, "eu", "acme"); err != nil || cur.ID != "eu/acme/2" {
			t.Fatalf("Current = %q, %v; want eu/acme/2", cur.ID, err)
		}
	})

	t.Run("a shredded resource takes no key until reopened", func(t *testing.T) {
		view := open(t)
		a, b := view(), view()
		ctx := t.Context()
		if err := a.Put(ctx, key("eu/acme/1", "eu", "acme", t0)); err != nil {
			t.Fatal(err)
		}
		if err := a.Delete(ctx, "eu", "acme"); err != nil {
			t.Fatal(err)
		}
		for name, s := range map[string]keys.Store{"deleting view": a, "second view": b, "view opened later": view()} {
			if err := s.Put(ctx, key("eu/acme/2", "eu", "acme", t0)); !errors.Is(err, keys.ErrShredded) {
				t.Errorf("%s: Put after delete = %v, want ErrShredded", name, err)
			}
			if _, err := s.Current(ctx, "eu", "acme"); !errors.Is(err, keys.ErrShredded) {
				t.Errorf("%s: Current after delete = %v, want ErrShredded", name, err)
			}
			if _, err := s.Get(ctx, "eu/acme/2"); !errors.Is(err, keys.ErrKeyNotFound) {
				t.Errorf("%s: a refused key was kept: %v", name, err)
			}
		}
		if err := b.Put(ctx, key("eu/globex/1", "eu", "globex", t0)); err != nil {
			t.Fatalf("another resource: %v", err)
		}
		if err := b.Reopen(ctx, "eu", "acme"); err != nil {
			t.Fatal(err)
		}
		if err := a.Put(ctx, key("eu/acme/3", "eu", "acme", t0)); err != nil {
			t.Fatalf("Put after reopen: %v", err)
		}
		if cur, err := b.Current(ctx, "eu", "acme"); err != nil || cur.ID != "eu/acme/3" {
			t.Fatalf("Current after reopen = %q, %v", cur.ID, err)
		}
		if _, err := b.Get(ctx, "eu/acme/1"); !errors.Is(err, keys.ErrKeyNotFound) {
			t.Fatalf("reopening brought a shredded key back: %v", err)
		}
	})

	t.Run("a second view sees writes and deletes", func(t *testing.T) {
		view := open(t)
		a := view()
		ctx := t.Context()
		if err := a.Put(ctx, key("eu/shared/1", "eu", "shared", t0)); err != nil {
			t.Fatal(err)
		}
		b := view()
		if got, err := b.Get(ctx, "eu/shared/1"); err != nil || got.ID != "eu/shared/1" {
			t.Fatalf("second view Get = %+v, %v", got, err)
		}
		if err := a.Delete(ctx, "eu", "shared"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := b.Get(ctx, "eu/shared/1")
			if errors.Is(err, keys.ErrKeyNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("second view still has a deleted key: %v", err)
			}
			time.Sleep(10 * time.Millisecond) // polling a materialised view
		}
	})
}
