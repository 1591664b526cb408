package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// resources fills in the manager's and the process agents' peak RSS and
// CPU, and the bench process's peak RSS.
func (b *bench) resources(r *Result) {
	r.ManagerRSSMiB, r.ManagerCPUs = procStats(b.manager.Pid())
	r.BenchRSSMiB, _ = procStats(os.Getpid())
	for _, p := range b.procs {
		rss, cpu := procStats(p.Pid())
		r.AgentRSSMiB = max(r.AgentRSSMiB, rss)
		r.AgentCPUs = max(r.AgentCPUs, cpu)
		r.AgentPrivateMiB = max(r.AgentPrivateMiB, anonMiB(p.Pid()))
	}
}

// cpuTimes are the CPU seconds the processes of the run have used so far.
type cpuTimes struct{ apiServer, etcd, manager, bench float64 }

func (b *bench) cpuTimes() cpuTimes {
	cpu := func(pid int) float64 {
		if pid == 0 {
			return 0
		}
		_, s := procStats(pid)
		return s
	}
	return cpuTimes{apiServer: cpu(b.cluster.Pid("kube-apiserver")), etcd: cpu(b.cluster.Pid("etcd")),
		manager: cpu(b.manager.Pid()), bench: cpu(os.Getpid())}
}

// plus is c with the CPU used from start to end added.
func (c cpuTimes) plus(end, start cpuTimes) cpuTimes {
	return cpuTimes{apiServer: c.apiServer + end.apiServer - start.apiServer, etcd: c.etcd + end.etcd - start.etcd,
		manager: c.manager + end.manager - start.manager, bench: c.bench + end.bench - start.bench}
}

// perChange is the CPU used since start, in milliseconds per change.
func (c cpuTimes) perChange(start cpuTimes, changes int) *CPUPerChange {
	ms := func(now, then float64) float64 { return (now - then) * 1000 / float64(changes) }
	return &CPUPerChange{APIServerMs: ms(c.apiServer, start.apiServer), EtcdMs: ms(c.etcd, start.etcd),
		ManagerMs: ms(c.manager, start.manager), BenchMs: ms(c.bench, start.bench)}
}

// anonMiB reads a process's resident anonymous memory.
func anonMiB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Anonymous:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// procStats reads a process's peak resident set (VmHWM) and CPU seconds.
func procStats(pid int) (rssMiB, cpuSeconds float64) {
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				rssMiB = kb / 1024
			}
		}
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command (which may hold spaces) start after ')'.
		if i := bytes.LastIndexByte(data, ')'); i > 0 {
			f := strings.Fields(string(data[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpuSeconds = (ut + st) / 100 // USER_HZ
			}
		}
	}
	return rssMiB, cpuSeconds
}

// machine describes where the figures were measured.
func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0]); len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			mem = fmt.Sprintf(", %.0f GiB memory", kb/1024/1024)
		}
	}
	return fmt.Sprintf("%d CPUs (%s)%s, %s, %s/%s", runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
