//go:build !unix

package blobtest

func lockFile(string) (func(), error) { return func() {}, nil }
