package localcluster

import (
	"slices"
	"testing"
)

func TestMountPlan(t *testing.T) {
	machine := map[string]bool{"/": true, "/etc": true, "/home": true, "/run": true, "/var": true, "/var/lib": true, "/var/log": true, "/usr": true, "/usr/libexec": true}
	exists := func(p string) bool { return machine[p] }
	for _, tc := range []struct {
		name    string
		targets []mountTarget
		want    []mountOp
	}{
		{
			name:    "existing directories are replaced in place, parents first",
			targets: []mountTarget{{Path: "/var/log", Source: "/d/var/log"}, {Path: "/etc", Source: "/d/etc"}, {Path: "/run"}},
			want: []mountOp{
				{Kind: bindMount, Target: "/etc", Source: "/d/etc"},
				{Kind: tmpfsMount, Target: "/run"},
				{Kind: bindMount, Target: "/var/log", Source: "/d/var/log"},
			},
		},
		{
			name:    "missing directories are made in one overlay of their existing parent",
			targets: []mountTarget{{Path: "/var/lib/kubelet", Source: "/d/k"}, {Path: "/var/lib/cni", Source: "/d/c"}},
			want: []mountOp{
				{Kind: overlayMount, Target: "/var/lib", Source: "/d/overlay/var/lib"},
				{Kind: makeDir, Target: "/var/lib/cni"},
				{Kind: bindMount, Target: "/var/lib/cni", Source: "/d/c"},
				{Kind: makeDir, Target: "/var/lib/kubelet"},
				{Kind: bindMount, Target: "/var/lib/kubelet", Source: "/d/k"},
			},
		},
		{
			name:    "several missing levels",
			targets: []mountTarget{{Path: "/opt/cni/bin", Source: "/d/cni"}},
			want: []mountOp{
				{Kind: overlayMount, Target: "/", Source: "/d/overlay"},
				{Kind: makeDir, Target: "/opt"},
				{Kind: makeDir, Target: "/opt/cni"},
				{Kind: makeDir, Target: "/opt/cni/bin"},
				{Kind: bindMount, Target: "/opt/cni/bin", Source: "/d/cni"},
			},
		},
		{
			name:    "a missing directory under a replaced one is made there, with no overlay",
			targets: []mountTarget{{Path: "/run"}, {Path: "/run/netns/x", Source: "/d/x"}},
			want: []mountOp{
				{Kind: tmpfsMount, Target: "/run"},
				{Kind: makeDir, Target: "/run/netns"},
				{Kind: makeDir, Target: "/run/netns/x"},
				{Kind: bindMount, Target: "/run/netns/x", Source: "/d/x"},
			},
		},
		{
			name:    "an existing directory under an overlaid one needs no second overlay",
			targets: []mountTarget{{Path: "/usr/libexec/kubernetes", Source: "/d/k"}, {Path: "/usr/libexec/other", Source: "/d/o"}},
			want: []mountOp{
				{Kind: overlayMount, Target: "/usr/libexec", Source: "/d/overlay/usr/libexec"},
				{Kind: makeDir, Target: "/usr/libexec/kubernetes"},
				{Kind: bindMount, Target: "/usr/libexec/kubernetes", Source: "/d/k"},
				{Kind: makeDir, Target: "/usr/libexec/other"},
				{Kind: bindMount, Target: "/usr/libexec/other", Source: "/d/o"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mountPlan("/d", tc.targets, exists); !slices.Equal(got, tc.want) {
				t.Errorf("plan\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}
