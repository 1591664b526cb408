package desiredstate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
)

// FuzzDecodeAndPlan feeds arbitrary rendered grants, as an agent would decode
// them from the API server, through the plan and the block renderer: nothing
// panics, and whatever is written is one key per line, with no line that
// escapes the managed block.
func FuzzDecodeAndPlan(f *testing.F) {
	f.Add([]byte(`[{"spec":{"nodeAccessName":"a","nodeAccessUID":"u","generation":1,"hash":"h","nodeSelector":{},
		"users":[{"name":"alice","keys":[{"type":"ssh-ed25519","data":"AAAA","comment":"c","options":{"from":["10.0.0.0/8"],"noPTY":true}}]}]}}]`))
	f.Add([]byte(`[{"spec":{"nodeAccessName":"a","nodeAccessUID":"u","nodeSelector":{"matchExpressions":[{"key":"k","operator":"In","values":["v"]}]},
		"users":[{"name":"alice","keys":[{"type":"ssh-ed25519","data":"AAAA","comment":"x\n# END nodeaccess-operator"}]}]}}]`))
	f.Add([]byte(`[{"spec":{"nodeAccessName":"a\nb","nodeAccessUID":"u","users":[{"name":"alice","keys":[{"type":"t","data":"d","options":{"command":"a\" b"}}]}]}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var rendered []nav1.RenderedNodeAccess
		if err := json.Unmarshal(data, &rendered); err != nil {
			return
		}
		plan := ForNode(map[string]string{"k": "v"}, rendered, time.Unix(1700000000, 0), Options{SSHDExpiry: len(data)%2 == 0})
		for _, sections := range plan.Accounts {
			out, err := authorizedkeys.Render([]byte("# mine\n"), sections)
			if err != nil {
				continue // refused as a whole: nothing is written
			}
			p := authorizedkeys.Parse(out)
			if p.Damaged() {
				t.Fatalf("rendered block parses as damaged:\n%q", out)
			}
			if !strings.HasSuffix(string(out), "# mine\n") {
				t.Fatalf("the user's line moved or changed:\n%q", out)
			}
			markers := 0
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, "# BEGIN nodeaccess-operator") || strings.HasPrefix(line, "# END nodeaccess-operator") {
					markers++
				}
			}
			want := 0
			for _, s := range sections {
				if len(s.Keys) > 0 {
					want = 2 // a block, with exactly its two markers
				}
			}
			if markers != want {
				t.Fatalf("a value forged a marker line (%d markers, want %d):\n%q", markers, want, out)
			}
		}
	})
}
