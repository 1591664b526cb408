package main

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// requestCounts are the audit log's requests in a time window.
type requestCounts struct {
	byKey                                     map[string]int
	managerWrites, agentRequests, agentWrites int
	agentsByPrefix                            map[string]int
	// renderedWrittenAt is when the first of the manager's writes of a
	// rendered grant received in the window completed: the end of the
	// manager's part of a change, before delivery to the agents. Zero when
	// there was none.
	renderedWrittenAt time.Time
	// renderedWrites is, per rendered grant's name, when each of the
	// manager's writes of it completed, in the log's order.
	renderedWrites map[string][]time.Time
}

// renderedAfter is when the manager's first write of the rendered grant
// name completed after t; zero when none did in the window.
func (c requestCounts) renderedAfter(name string, t time.Time) time.Time {
	var first time.Time
	for _, at := range c.renderedWrites[name] {
		if at.After(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// add adds the counts of another window to c.
func (c *requestCounts) add(o requestCounts) {
	if c.byKey == nil {
		c.byKey, c.agentsByPrefix, c.renderedWrites = map[string]int{}, map[string]int{}, map[string][]time.Time{}
	}
	for k, n := range o.byKey {
		c.byKey[k] += n
	}
	for k, n := range o.agentsByPrefix {
		c.agentsByPrefix[k] += n
	}
	for k, at := range o.renderedWrites {
		c.renderedWrites[k] = append(c.renderedWrites[k], at...)
	}
	c.managerWrites += o.managerWrites
	c.agentRequests += o.agentRequests
	c.agentWrites += o.agentWrites
	if !o.renderedWrittenAt.IsZero() && (c.renderedWrittenAt.IsZero() || o.renderedWrittenAt.Before(c.renderedWrittenAt)) {
		c.renderedWrittenAt = o.renderedWrittenAt
	}
}

func (c requestCounts) agentRequestsOf(prefix string) int { return c.agentsByPrefix[prefix] }

type auditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	Stage     string `json:"stage"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	RequestReceivedTimestamp metav1.MicroTime `json:"requestReceivedTimestamp"`
	StageTimestamp           metav1.MicroTime `json:"stageTimestamp"`
}

// countRequests reads the audit log: requests received in [from, to],
// by client (manager, agents, the bench itself), verb and resource, and
// when the manager's first write of a rendered grant completed. Watches
// are left out: they are long-lived, opened once, and logged when they end.
func countRequests(path string, from, to time.Time) (requestCounts, error) {
	c := requestCounts{byKey: map[string]int{}, agentsByPrefix: map[string]int{}, renderedWrites: map[string][]time.Time{}}
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev auditEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" || ev.Verb == "watch" {
			continue
		}
		at := ev.RequestReceivedTimestamp.Time
		if at.Before(from) || at.After(to) {
			continue
		}
		who := "other"
		switch {
		case strings.HasPrefix(ev.UserAgent, "manager/"):
			who = "manager"
		case strings.HasPrefix(ev.UserAgent, agentUA+"/"), strings.HasPrefix(ev.UserAgent, "agent/"):
			who = "agent"
		case strings.HasPrefix(ev.UserAgent, "bench-driver"):
			who = "bench"
		}
		resource := ""
		if ev.ObjectRef != nil {
			resource = ev.ObjectRef.Resource
			if ev.ObjectRef.Subresource != "" {
				resource += "/" + ev.ObjectRef.Subresource
			}
		}
		c.byKey[who+" "+ev.Verb+" "+resource]++
		write := !slices.Contains([]string{"get", "list"}, ev.Verb)
		switch who {
		case "manager":
			if write {
				c.managerWrites++
			}
			if write && resource == "renderednodeaccesses" {
				done := ev.StageTimestamp.Time
				if c.renderedWrittenAt.IsZero() || done.Before(c.renderedWrittenAt) {
					c.renderedWrittenAt = done
				}
				c.renderedWrites[ev.ObjectRef.Name] = append(c.renderedWrites[ev.ObjectRef.Name], done)
			}
		case "agent":
			c.agentRequests++
			if write {
				c.agentWrites++
			}
			if node, ok := strings.CutPrefix(ev.UserAgent, agentUA+"/"); ok && strings.HasPrefix(node, "poll-") {
				c.agentsByPrefix["poll-"]++
			}
		}
	}
	return c, sc.Err()
}
