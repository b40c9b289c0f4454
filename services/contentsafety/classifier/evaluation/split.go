package evaluation

import (
	"fmt"
	"hash/fnv"
	"path/filepath"
	"sort"
)

// The trained stage of the classifier (scripts/safetytrain) learns from
// the training set in the classifier's trainset/ directory and from half
// of the corpus; the rules below say which items it did not see, so the
// evaluation can report numbers on those alone.

// DevHoldOut reports whether the training-set item with this ID belongs
// to the dev hold-out (about one in ten, chosen by a hash of the ID),
// which the trainer never trains on and uses only to choose its
// regularisation and thresholds.
func DevHoldOut(id string) bool { return Shard(id) == 0 }

// Shard is the tenth (0–9) of the training set that the item with this
// ID falls in, by a hash of the ID; shard 0 is the dev hold-out. The
// trainer can hold out another shard instead, to check on unseen items
// that settings chosen on the dev hold-out were not fitted to it.
func Shard(id string) int { return int(hash32(id) % 10) }

// TrainingSentence reports whether a corpus sentence is in the half of the
// corpus the trainer uses as benign examples; the other half is held out
// for choosing thresholds and for reporting.
func TrainingSentence(s string) bool { return hash32(s)%2 == 0 }

func hash32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// LoadTrainset reads every *.jsonl file of the training set in dir, in
// name order. Item IDs must be unique across the files (the dev
// hold-out is chosen by ID), and so must texts: an item written twice
// would be trained on and held out at once, or count twice.
func LoadTrainset(dir string) ([]Item, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no training files in %s", dir)
	}
	sort.Strings(paths)
	var out []Item
	ids, texts := map[string]string{}, map[string]string{}
	for _, p := range paths {
		items, err := LoadItems(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(p), err)
		}
		for _, it := range items {
			if prev, ok := ids[it.ID]; ok {
				return nil, fmt.Errorf("%s: item ID %s is also in %s", filepath.Base(p), it.ID, prev)
			}
			if prev, ok := texts[it.Text]; ok {
				return nil, fmt.Errorf("%s: item %s has the text of %s", filepath.Base(p), it.ID, prev)
			}
			ids[it.ID], texts[it.Text] = filepath.Base(p), it.ID
		}
		out = append(out, items...)
	}
	return out, nil
}

// Split returns the items for which keep is true.
func Split(items []Item, keep func(Item) bool) []Item {
	var out []Item
	for _, it := range items {
		if keep(it) {
			out = append(out, it)
		}
	}
	return out
}
