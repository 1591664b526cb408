package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// fileWatcher turns changes under the managed .ssh directories (and their
// homes, to see .ssh itself removed or replaced) into reconcile requests, so
// that a hand edit or deletion is repaired at once rather than at the next resync.
type fileWatcher struct {
	hostRoot string
	w        *fsnotify.Watcher
	// events carries at most one pending request: bursts collapse into one reconcile.
	events chan event.TypedGenericEvent[struct{}]
}

func newFileWatcher(hostRoot string) (*fileWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("starting file watcher: %w", err)
	}
	return &fileWatcher{hostRoot: hostRoot, w: w, events: make(chan event.TypedGenericEvent[struct{}], 1)}, nil
}

// watch watches the directory of a managed file and its parent. path is the
// file's path on the host. Watching is idempotent; a watch that cannot be
// added is not an error, since the periodic resync repairs drift anyway.
func (f *fileWatcher) watch(path string) {
	sshDir := filepath.Join(f.hostRoot, filepath.Dir(path))
	_ = f.w.Add(filepath.Dir(sshDir))
	_ = f.w.Add(sshDir)
}

// Start forwards file events until ctx ends; it is a manager Runnable.
func (f *fileWatcher) Start(ctx context.Context) error {
	defer f.w.Close()
	log := ctrl.LoggerFrom(ctx).WithName("files")
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-f.w.Events:
			if !ok {
				return nil
			}
			log.V(1).Info("Seeing file change", "path", ev.Name, "op", ev.Op.String())
			select {
			case f.events <- event.TypedGenericEvent[struct{}]{}:
			default:
			}
		case err, ok := <-f.w.Errors:
			if !ok {
				return nil
			}
			log.Info("Watching files failed; the periodic resync still repairs drift", "error", err.Error())
		}
	}
}
