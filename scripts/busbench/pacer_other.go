//go:build !linux

package main

import "time"

// tickerPacer paces with a time.Ticker where there is no timerfd; ticks
// may come late by the runtime's timer resolution.
type tickerPacer struct{ t *time.Ticker }

func newPacer(interval time.Duration) (pacer, error) {
	return tickerPacer{time.NewTicker(interval)}, nil
}

func (p tickerPacer) Wait() error {
	<-p.t.C
	return nil
}

func (p tickerPacer) Stop() { p.t.Stop() }
