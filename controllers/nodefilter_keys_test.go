package controllers

import (
	"slices"
	"testing"
)

// A key a publish drops is still written until the next publish: agents
// that have not yet seen the new vocabulary still filter by it. A withdrawn
// vocabulary keeps its keys the same way, and pending keys are written from
// the moment they are set.
func TestDroppedKeysAreWrittenUntilTheNextPublish(t *testing.T) {
	f := &nodeFilter{loaded: true}
	f.setPublished([]string{"pool", "zone"})
	f.setPublished([]string{"pool"})
	if got := f.labelKeys(); !slices.Equal(got, []string{"pool", "zone"}) {
		t.Fatalf("after dropping zone, writes label %v", got)
	}
	f.setPublished(nil) // withdrawn
	if got := f.labelKeys(); !slices.Equal(got, []string{"pool"}) {
		t.Fatalf("after a withdrawal, writes label %v", got)
	}
	f.setPending([]string{"team"})
	if got := f.labelKeys(); !slices.Equal(got, []string{"pool", "team"}) {
		t.Fatalf("with team pending, writes label %v", got)
	}
	f.setPublished([]string{"team"})
	if got := f.labelKeys(); !slices.Equal(got, []string{"team"}) {
		t.Fatalf("two publishes later, writes label %v", got)
	}
}
