package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"

	"k8s.io/client-go/rest"
)

// profile starts CPU profiles of this process (where the in-process agents
// run), of the API server and of the manager, for seconds at most; the
// returned function ends them and writes <process>-<tag>-<n>.pprof to the
// profile directory.
func (b *bench) profile(tag string, seconds int) (func(), error) {
	if err := os.MkdirAll(b.o.profileDir, 0o755); err != nil {
		return nil, err
	}
	file := func(process string) string {
		return filepath.Join(b.o.profileDir, fmt.Sprintf("%s-%s-%d.pprof", process, tag, b.n))
	}
	f, err := os.Create(file("bench"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, err
	}
	httpClient, err := rest.HTTPClientFor(b.cluster.Config)
	if err != nil {
		return nil, err
	}
	fetch := func(process, base string) error {
		resp, err := httpClient.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", process, resp.Status)
		}
		out, err := os.Create(file(process))
		if err != nil {
			return err
		}
		_, err = io.Copy(out, resp.Body)
		return errors.Join(err, out.Close())
	}
	done := make(chan error, 2)
	go func() { done <- fetch("apiserver", b.cluster.Config.Host) }()
	go func() { done <- fetch("manager", "http://"+b.managerPprof) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			_ = f.Close()
			for range 2 {
				if err := <-done; err != nil {
					fmt.Printf("    profile: %v\n", err)
				}
			}
			fmt.Printf("    %s profiles written to %s\n", tag, b.o.profileDir)
		})
	}, nil
}
