module github.com/terroir-ai/terroir/scripts

go 1.26.0

require (
	github.com/alicebob/miniredis/v2 v2.40.0
	github.com/terroir-ai/terroir/pkg v0.0.0
	github.com/twmb/franz-go v1.22.2
	github.com/twmb/franz-go/pkg/kadm v1.19.0
	github.com/twmb/franz-go/pkg/kfake v0.0.0-20260918054303-01f206a7e32c
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.0 // indirect
	github.com/yuin/gopher-lua v1.1.1 // indirect
)

replace github.com/terroir-ai/terroir/pkg => ../pkg
