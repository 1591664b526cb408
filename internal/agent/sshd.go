package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/hostkeys"
)

// sshdProbe observes the node's own sshd with SSH handshakes
// (internal/hostkeys): its version and host public keys, for the report.
// It reads nothing of the host's file system (the private host keys stay
// out of reach), probes at start and then once per resync, and asks for a
// pass only when what it saw changed, so at steady state it causes no API
// request.
type sshdProbe struct {
	addr  string
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last *nav1.SSHDStatus
}

// SSHDAddress joins host and port into the address an agent probes, and
// checks them: host is an IP address or a DNS name, port 1 to 65535. An
// empty host or a zero port means no probe (""), without error.
func SSHDAddress(host string, port int) (string, error) {
	if host == "" || port == 0 {
		return "", nil
	}
	if port < 0 || port > 65535 {
		return "", fmt.Errorf("sshd port %d is not between 0 and 65535", port)
	}
	if net.ParseIP(host) == nil && len(validation.IsDNS1123Subdomain(host)) > 0 {
		return "", fmt.Errorf("sshd host %q is neither an IP address nor a DNS name", host)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// newSSHDProbe returns a probe of addr every interval, or nil when addr is
// empty (a nil probe reports nothing).
func newSSHDProbe(addr string, every time.Duration) (*sshdProbe, error) {
	if addr == "" {
		return nil, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("parsing sshd address %q: %w", addr, err)
	}
	p, _ := strconv.Atoi(port)
	if _, err := SSHDAddress(host, p); err != nil || p == 0 {
		return nil, fmt.Errorf("invalid sshd address %q", addr)
	}
	return &sshdProbe{addr: addr, every: every, now: time.Now}, nil
}

// understandsUTCExpiry tells whether the node's sshd, as last observed,
// enforces the expiry-time="...Z" key option; false without a probe or
// before its first answer.
func (p *sshdProbe) understandsUTCExpiry() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last != nil && p.last.Reason == "" && hostkeys.UnderstandsUTCExpiry(p.last.Version)
}

// status returns the last observation, or nil before the first one.
func (p *sshdProbe) status() *nav1.SSHDStatus {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last.DeepCopy()
}

// run probes at once and then every interval until ctx ends, calling kick
// whenever the observation changed.
func (p *sshdProbe) run(ctx context.Context, kick func()) {
	if p == nil {
		return
	}
	log := logr.FromContextOrDiscard(ctx).WithName("sshd")
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		res, err := hostkeys.Scan(ctx, p.addr, hostkeys.Options{})
		if ctx.Err() != nil {
			return
		}
		if p.observe(observeSSHD(p.addr, res, err), p.now()) {
			st := p.status()
			if st.Reason != "" {
				log.Info("Observing sshd failed", "address", p.addr, "reason", st.Reason, "error", st.Message)
			} else {
				fps := make([]string, 0, len(st.HostKeys))
				for _, k := range st.HostKeys {
					fps = append(fps, k.Type+" "+k.Fingerprint)
				}
				log.Info("Observed sshd host keys", "address", p.addr, "version", st.Version, "hostKeys", fps)
			}
			kick()
		}
		timer.Reset(p.every)
	}
}

// observe records st; it reports whether it differs from the last
// observation, whose first time is kept when it does not.
func (p *sshdProbe) observe(st nav1.SSHDStatus, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil {
		prev := p.last.DeepCopy()
		prev.LastChangeTime = nil
		if equality.Semantic.DeepEqual(*prev, st) {
			return false
		}
	}
	stamp := metav1.NewTime(now.Truncate(time.Second))
	st.LastChangeTime = &stamp
	p.last = &st
	return true
}

// observeSSHD is the report's view of one scan, without its time: the keys
// found, or no key and the reason. Nothing of an earlier scan is kept, so
// a replaced host key is never reported beside its successor.
func observeSSHD(addr string, res hostkeys.Result, err error) nav1.SSHDStatus {
	st := nav1.SSHDStatus{Address: addr, Version: res.Version}
	if err != nil {
		st.Reason, st.Message = hostkeys.ReasonOf(err), truncate(err.Error(), 1024)
		return st
	}
	for _, k := range res.Keys {
		if len(st.HostKeys) == nav1.MaxHostKeys {
			break
		}
		st.HostKeys = append(st.HostKeys, nav1.SSHHostKey{Type: k.Type, Key: k.Data, Fingerprint: k.Fingerprint})
	}
	return st
}
