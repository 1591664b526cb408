package realnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// releasedVersion is the release the suite installs first and upgrades
// from: the one hack/releases.yaml records.
const releasedVersion = "0.1.0"

// releasedCSV is its CSV's name.
const releasedCSV = packageName + ".v" + releasedVersion

// upgradeGrant is the NodeAccess the suite creates on the released version
// and revokes after the upgrade.
const upgradeGrant = "upgrade-kept"

// upgrade is what the suite saw while OLM upgraded the released version to
// this one on the node (TestMain), for TestUpgradedFromTheReleasedVersion.
var upgrade struct {
	// took is from the CatalogSource's switch to the new agent's report.
	took time.Duration
	// attempts and refused count the logins with the granted key, back to
	// back from before the switch until the new agent reported; loginErr is
	// the first that failed otherwise (host key, connection).
	attempts, refused int
	loginErr          error
	// samples of alice's authorized_keys in the same span; badSample says
	// what the first bad one held (the key missing, a torn file, her own
	// lines changed).
	samples   int
	badSample string
	// before and after are the NodeAccess as 0.1.0 left it and after the
	// upgrade.
	before, after nav1.NodeAccess
	// hostKeyErr says how the host key the plugin wrote after the upgrade
	// differs from sshd's own, or how the login with it failed.
	hostKeyErr error
	// revokedAfter is the time from the grant's deletion, after the
	// upgrade, to sshd's first refusal; revokeErr why it did not come.
	revokedAfter time.Duration
	revokeErr    error
}

// releasedImageArchive is where outside writes the released image.
func releasedImageArchive(dir string) string {
	return filepath.Join(dir, "images", "operator-"+releasedVersion+".tar")
}

// releasedImage is the operator image the released CSV runs, as the
// committed catalog holds that CSV.
func releasedImage(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, "catalog", packageName, "bundle-v"+releasedVersion+".yaml"))
	if err != nil {
		return "", err
	}
	var bundle struct {
		Properties []struct {
			Type  string          `json:"type"`
			Value json.RawMessage `json:"value"`
		} `json:"properties"`
	}
	if err := yaml.Unmarshal(data, &bundle); err != nil {
		return "", fmt.Errorf("reading the %s bundle: %w", releasedVersion, err)
	}
	for _, p := range bundle.Properties {
		if p.Type != "olm.bundle.object" {
			continue
		}
		var obj struct {
			Data []byte `json:"data"`
		}
		csv := &operatorsv1alpha1.ClusterServiceVersion{}
		if err := json.Unmarshal(p.Value, &obj); err != nil || json.Unmarshal(obj.Data, csv) != nil || csv.Kind != "ClusterServiceVersion" {
			continue
		}
		for _, d := range csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs {
			for _, c := range d.Spec.Template.Spec.Containers {
				if c.Name == "manager" {
					return c.Image, nil
				}
			}
		}
	}
	return "", fmt.Errorf("the %s bundle holds no CSV running a manager", releasedVersion)
}

// buildReleasedImage builds the released version's binaries from its
// recorded commit and writes its image archive, tagged as its CSV names
// it, for the node's containerd.
func buildReleasedImage(root, dir string) error {
	start := time.Now()
	ref, err := releasedImage(root)
	if err != nil {
		return err
	}
	if err := testenv.ReleaseImage(releasedVersion, ref, releasedImageArchive(dir)); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "realnode: the %s image %s built in %s\n", releasedVersion, ref, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// installAndUpgrade installs the released version through OLM from a
// catalog holding only it, grants alice a key and logs in with it, then
// publishes the committed catalog and lets OLM upgrade, while a login loop
// and a sampler of alice's authorized_keys run, until the new agent
// reports. It then writes the plugin's ssh configuration (sshConfig) and
// revokes the grant. Failures that leave no upgraded install end the setup;
// what the tests judge is kept in upgrade. stop stops the catalogs.
func installAndUpgrade(ctx context.Context, root string) (stop func(), err error) {
	var servers []*localcluster.CatalogServer
	stop = func() {
		for _, s := range servers {
			s.Stop()
		}
	}
	releasedRef, err := releasedImage(root)
	if err != nil {
		return stop, err
	}
	oldCatalog := filepath.Join(workDir, "catalog-"+releasedVersion)
	if err := testenv.CatalogUpTo(filepath.Join(root, "catalog"), oldCatalog, packageName, releasedCSV, filepath.Join(k8sBin, "opm")); err != nil {
		return stop, err
	}
	first, err := olm.ServeCatalog(ctx, oldCatalog)
	if err != nil {
		return stop, err
	}
	servers = append(servers, first)

	// The released version, as released: its CSV Succeeded, its manager
	// and its agent running on the node from its image.
	start := time.Now()
	if err := subscribe(ctx, first.Address); err != nil {
		return stop, err
	}
	if err := poll(ctx, timeout, releasedCSV+" Succeeded", func() error {
		if err := olm.Healthy(); err != nil {
			return err
		}
		return csvIs(releasedCSV)
	}); err != nil {
		return stop, err
	}
	if err := poll(ctx, timeout, "the "+releasedVersion+" manager pod running", managerRuns(releasedRef)); err != nil {
		return stop, err
	}
	if err := poll(ctx, timeout, "the "+releasedVersion+" agent pod ready", func() error { return agentRolledOut(agentImage(releasedRef)) }); err != nil {
		return stop, err
	}
	if err := poll(ctx, timeout, "the "+releasedVersion+" agent's report", func() error { _, err := report(ctx); return err }); err != nil {
		return stop, err
	}
	installed = time.Since(start)
	fmt.Fprintf(os.Stderr, "realnode: %s installed through OLM, manager and agent running in %s\n", releasedCSV, installed.Round(100*time.Millisecond))

	// A grant made on the released version, and a login with it. The
	// released agent publishes no host keys, so until the upgrade the host
	// key is checked against sshd's own.
	key := filepath.Join(workDir, "upgrade-key")
	pub, err := localcluster.WriteKeyPair(key, "alice@upgrade")
	if err != nil {
		return stop, err
	}
	if err := k8s.Create(ctx, grant(upgradeGrant, nav1.UserAccess{Name: alice.Name, Keys: []nav1.AuthorizedKey{{Key: pub}}})); err != nil {
		return stop, err
	}
	if err := poll(ctx, loginWithin, "a login with the grant on "+releasedVersion, func() error { return verifiedLogin(ctx, key) }); err != nil {
		return stop, err
	}
	if err := poll(ctx, timeout, upgradeGrant+" in sync on "+releasedVersion, inSync(upgradeGrant)); err != nil {
		return stop, err
	}
	if err := k8s.Get(ctx, client.ObjectKey{Name: upgradeGrant}, &upgrade.before); err != nil {
		return stop, err
	}

	// The upgrade: the committed catalog published, the CatalogSource
	// pointed at it; logins and samples run until the new agent reports.
	loop := startLoginLoop(ctx, key)
	sampler := startKeySampler(blobOf(pub))
	full, err := olm.ServeCatalog(ctx, filepath.Join(root, "catalog"))
	if err != nil {
		loop.stop()
		sampler.stop()
		return stop, err
	}
	servers = append(servers, full)
	start = time.Now()
	err = upgradeTo(ctx, full.Address)
	upgrade.took = time.Since(start)
	upgrade.attempts, upgrade.refused, upgrade.loginErr = loop.stop()
	upgrade.samples, upgrade.badSample = sampler.stop()
	if err != nil {
		return stop, err
	}
	fmt.Fprintf(os.Stderr, "realnode: upgraded to this version through OLM in %s: %d logins (%d refused), %d samples of the file\n",
		upgrade.took.Round(100*time.Millisecond), upgrade.attempts, upgrade.refused, upgrade.samples)
	if err := k8s.Get(ctx, client.ObjectKey{Name: upgradeGrant}, &upgrade.after); err != nil {
		return stop, err
	}

	// The host key the plugin now publishes is sshd's own.
	if sshConfig, err = writeSSHConfig(ctx); err != nil {
		return stop, err
	}
	upgrade.hostKeyErr = samePublishedHostKey()
	if upgrade.hostKeyErr == nil {
		upgrade.hostKeyErr = login(alice.Name, key)
	}

	// Revocation after the upgrade.
	if err := k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: upgradeGrant}}); err != nil {
		return stop, err
	}
	start = time.Now()
	for upgrade.revokeErr == nil {
		err := login(alice.Name, key)
		if errors.Is(err, errRefused) {
			upgrade.revokedAfter = time.Since(start)
			break
		}
		if err != nil {
			upgrade.revokeErr = err
		} else if time.Since(start) > loginWithin {
			upgrade.revokeErr = fmt.Errorf("still logs in %s after the deletion", loginWithin)
		}
	}
	return stop, poll(ctx, timeout, upgradeGrant+" revoked and gone", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Name: upgradeGrant}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

// upgradeTo points the CatalogSource at the catalog served at address and
// waits until this version's CSV Succeeded (the released one gone), the
// manager and the agent DaemonSet run this version's image on the node,
// and the new agent has reported: the host keys it publishes, and the
// grant in sync.
func upgradeTo(ctx context.Context, address string) error {
	if err := poll(ctx, timeout, "the CatalogSource pointed at "+address, func() error {
		cs := &operatorsv1alpha1.CatalogSource{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: localcluster.OLMNamespace, Name: catalogName}, cs); err != nil {
			return err
		}
		cs.Spec.Address = address
		return k8s.Update(ctx, cs)
	}); err != nil {
		return err
	}
	steps := []struct {
		what string
		cond func() error
	}{
		{"this version's CSV Succeeded", func() error {
			if err := olm.Healthy(); err != nil {
				return err
			}
			csv, err := installedCSV(ctx)
			if err != nil {
				return err
			}
			if csv.Name == releasedCSV {
				return fmt.Errorf("the Subscription still runs %s", csv.Name)
			}
			return csvSucceeded()
		}},
		{releasedCSV + " removed", func() error {
			err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: releasedCSV}, &operatorsv1alpha1.ClusterServiceVersion{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (%v)", err)
			}
			return nil
		}},
		{"the new manager pod running", managerRuns(imageRef)},
		{"the agent DaemonSet rolled to " + imageRef, func() error { return agentRolledOut(agentImage(imageRef)) }},
		{"the new agent's report", func() error {
			pods, err := agentPods(ctx)
			if err != nil || len(pods) != 1 {
				return fmt.Errorf("%d agent pods (%v)", len(pods), err)
			}
			rep, err := report(ctx)
			if err != nil {
				return err
			}
			if rep.Status.SSHD == nil || len(rep.Status.SSHD.HostKeys) == 0 {
				return fmt.Errorf("no host keys in the report: %+v", rep.Status.SSHD)
			}
			if rep.Status.HeartbeatTime == nil || rep.Status.HeartbeatTime.Before(&pods[0].CreationTimestamp) {
				return fmt.Errorf("the report's heartbeat %v is older than the new agent pod (%s)", rep.Status.HeartbeatTime, pods[0].CreationTimestamp)
			}
			return inSync(upgradeGrant)()
		}},
	}
	for _, s := range steps {
		if err := poll(ctx, timeout, s.what, s.cond); err != nil {
			return err
		}
	}
	return nil
}

// csvIs says the Subscription installed csvName and it Succeeded.
func csvIs(csvName string) error {
	csv, err := installedCSV(context.Background())
	if err != nil {
		return err
	}
	if csv.Name != csvName {
		return fmt.Errorf("the Subscription installed %s, want %s", csv.Name, csvName)
	}
	return csvSucceeded()
}

// managerRuns says the one manager pod runs and is ready, on the node,
// from ref.
func managerRuns(ref string) func() error {
	return func() error {
		pod, err := managerPod(context.Background())
		if err != nil {
			return err
		}
		if img := pod.Spec.Containers[0].Image; pod.Spec.NodeName != nodeName || img != ref {
			return fmt.Errorf("the manager pod runs %s on %q, want %s on %s", img, pod.Spec.NodeName, ref, nodeName)
		}
		return nil
	}
}

// agentImage says the agent DaemonSet's template runs ref.
func agentImage(ref string) func(*appsv1.DaemonSet) error {
	return func(ds *appsv1.DaemonSet) error {
		if img := ds.Spec.Template.Spec.Containers[0].Image; img != ref {
			return fmt.Errorf("the agent DaemonSet runs %s, want %s", img, ref)
		}
		return nil
	}
}

// verifiedLogin logs in as alice with the key, checking the node's host
// key against sshd's own (StrictHostKeyChecking, BatchMode).
func verifiedLogin(ctx context.Context, key string) error {
	out, err := sshd.Login(ctx, alice.Name, key, "true")
	return loginResult(out, err)
}

// samePublishedHostKey says whether the known_hosts the plugin wrote from
// the reports names the node with sshd's own host key, and only it.
func samePublishedHostKey() error {
	own, err := os.ReadFile(sshd.KnownHosts())
	if err != nil {
		return err
	}
	fields := strings.Fields(string(own))
	if len(fields) < 3 {
		return fmt.Errorf("sshd's known_hosts: %q", own)
	}
	published, err := os.ReadFile(filepath.Join(workDir, "ssh", "known_hosts"))
	if err != nil {
		return err
	}
	var keys []string
	for _, line := range strings.Split(string(published), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && !strings.HasPrefix(f[0], "#") && slices.Contains(strings.Split(f[0], ","), nodeName) {
			keys = append(keys, f[1]+" "+f[2])
		}
	}
	if !slices.Contains(keys, fields[1]+" "+fields[2]) {
		return fmt.Errorf("the plugin's known_hosts names %s with %v, not sshd's own %s %s", nodeName, keys, fields[1], fields[2])
	}
	return nil
}

// loginLoop logs in back to back until stopped.
type loginLoop struct {
	cancel            context.CancelFunc
	done              chan struct{}
	attempts, refused int
	err               error
}

func startLoginLoop(ctx context.Context, key string) *loginLoop {
	ctx, cancel := context.WithCancel(ctx)
	l := &loginLoop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			err := verifiedLogin(ctx, key)
			if ctx.Err() != nil {
				// Cut short by stop: not a result.
				return
			}
			l.attempts++
			switch {
			case errors.Is(err, errRefused):
				l.refused++
			case err != nil && l.err == nil:
				l.err = fmt.Errorf("login %d at %s: %w", l.attempts, time.Now().Format(time.StampMilli), err)
			}
		}
	}()
	return l
}

// stop ends the loop (a login under way is cut short and not counted).
func (l *loginLoop) stop() (attempts, refused int, err error) {
	l.cancel()
	<-l.done
	return l.attempts, l.refused, l.err
}

// keySampler reads alice's authorized_keys every few milliseconds until
// stopped: each read must be whole (splitManaged) and hold the blob.
type keySampler struct {
	mu      sync.Mutex
	stopc   chan struct{}
	done    chan struct{}
	samples int
	bad     string
}

func startKeySampler(blob string) *keySampler {
	s := &keySampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stopc:
				return
			case <-time.After(20 * time.Millisecond):
			}
			data, err := os.ReadFile(aliceFile)
			var blobs []string
			if err == nil {
				blobs, err = splitManaged(data)
			}
			if err == nil && !slices.Contains(blobs, blob) {
				err = errors.New("the granted key is missing")
			}
			s.mu.Lock()
			s.samples++
			if err != nil && s.bad == "" {
				s.bad = fmt.Sprintf("sample %d at %s: %v:\n%s", s.samples, time.Now().Format(time.StampMilli), err, data)
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *keySampler) stop() (int, string) {
	close(s.stopc)
	<-s.done
	return s.samples, s.bad
}

// The suite installed the released 0.1.0 through OLM (its image built from
// its recorded commit), granted alice a key, and upgraded to this version
// through the Subscription while alice logged in back to back, the host
// key checked: no login was refused, the key was in her authorized_keys at
// every sample (each read whole, her own lines untouched), the NodeAccess
// came through unchanged, the host key the plugin publishes afterwards is
// sshd's own, and a deletion after the upgrade is refused by sshd as fast
// as any revocation. Every other test of the suite runs on this upgraded
// install.
func TestUpgradedFromTheReleasedVersion(t *testing.T) {
	u := &upgrade
	t.Logf("upgrade from %s took %s; %d logins with the granted key during it, %d refused; %d samples of alice's file",
		releasedCSV, u.took.Round(100*time.Millisecond), u.attempts, u.refused, u.samples)
	if u.loginErr != nil {
		t.Errorf("a login during the upgrade failed: %v", u.loginErr)
	}
	// The loop spans the whole rollout (manager and agent pods replaced):
	// a handful of logins at least, or it proved nothing.
	if u.attempts < 10 || u.refused != 0 {
		t.Errorf("%d logins during the upgrade, %d refused; want at least 10, none refused", u.attempts, u.refused)
	}
	if u.samples < 50 || u.badSample != "" {
		t.Errorf("%d samples of alice's authorized_keys; the first bad one: %s", u.samples, u.badSample)
	}
	b, a := u.before, u.after
	if a.UID != b.UID || a.Generation != b.Generation || !equality.Semantic.DeepEqual(a.Spec, b.Spec) {
		t.Errorf("%s changed across the upgrade: uid %s→%s, generation %d→%d, spec %+v→%+v", upgradeGrant, b.UID, a.UID, b.Generation, a.Generation, b.Spec, a.Spec)
	}
	if u.hostKeyErr != nil {
		t.Errorf("after the upgrade, with the plugin's known_hosts: %v", u.hostKeyErr)
	}
	if u.revokeErr != nil {
		t.Errorf("the deletion after the upgrade: %v", u.revokeErr)
	} else {
		t.Logf("the deletion after the upgrade refused by sshd in %s", u.revokedAfter.Round(time.Millisecond))
	}
	data, err := os.ReadFile(aliceFile)
	if err != nil {
		t.Fatal(err)
	}
	if blobs, err := splitManaged(data); err != nil || len(blobs) != 0 {
		t.Errorf("alice's authorized_keys after the revocation: managed keys %v (%v):\n%s", blobs, err, data)
	}
	checkHandWritten(t)
}
