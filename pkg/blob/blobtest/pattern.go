package blobtest

import (
	"encoding/binary"
	"io"
)

// pattern is size bytes that depend on seed and position only, so tests
// can stream large objects without holding them and check any range.
type pattern struct {
	seed uint64
	size int64
	pos  int64
}

// NewPattern returns a reader of size deterministic bytes that hides its
// length (it is neither a Seeker nor a ReaderAt), like a request body.
func NewPattern(seed uint64, size int64) io.Reader {
	return struct{ io.Reader }{&pattern{seed: seed, size: size}}
}

// PatternBytes returns bytes [off, off+n) of the pattern of seed and size.
func PatternBytes(seed uint64, size, off, n int64) []byte {
	b, _ := io.ReadAll(io.NewSectionReader(patternAt(seed, size), off, n))
	return b
}

func patternAt(seed uint64, size int64) io.ReaderAt { return &pattern{seed: seed, size: size} }

func (p *pattern) Read(b []byte) (int, error) {
	n, err := p.ReadAt(b, p.pos)
	p.pos += int64(n)
	return n, err
}

func (p *pattern) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	if rest := p.size - off; int64(len(b)) > rest {
		b = b[:rest]
	}
	var word [8]byte
	for i := 0; i < len(b); {
		pos := off + int64(i)
		binary.LittleEndian.PutUint64(word[:], mix(p.seed^uint64(pos/8)))
		i += copy(b[i:], word[pos%8:])
	}
	return len(b), nil
}

// mix is splitmix64's finaliser.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
