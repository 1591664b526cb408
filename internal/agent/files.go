package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
)

// fileWatcher turns changes under the managed .ssh directories (and their
// homes, to see .ssh itself removed or replaced) into passes, so
// that a hand edit or deletion is repaired at once rather than at the next resync.
type fileWatcher struct {
	hostRoot string
	// w is nil when the kernel refused an inotify instance (its per-user
	// limit, 128 by default, is reached): hand edits are then repaired at
	// the next resync instead of at once.
	w        *fsnotify.Watcher
	startErr error
}

func newFileWatcher(hostRoot string) (*fileWatcher, error) {
	f := &fileWatcher{hostRoot: hostRoot}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		f.startErr = fmt.Errorf("starting file watcher: %w", err)
		return f, nil
	}
	f.w = w
	// The account database: a replaced file (useradd) changes its link
	// count, which the watch on it sees at once.
	_ = w.Add(filepath.Join(hostRoot, "etc", "passwd"))
	return f, nil
}

// watch watches the given host directories (a managed file's home and
// .ssh, as the writer resolved them). Watching is idempotent; a watch that
// cannot be added is not an error, since the periodic resync repairs drift
// anyway.
func (f *fileWatcher) watch(dirs []string) {
	if f.w == nil {
		return
	}
	for _, d := range dirs {
		_ = f.w.Add(filepath.Join(f.hostRoot, d))
	}
}

// run calls kick at every file event until ctx ends.
func (f *fileWatcher) run(ctx context.Context, kick func()) {
	log := logr.FromContextOrDiscard(ctx).WithName("files")
	if f.w == nil {
		if f.startErr != nil {
			log.Error(f.startErr, "Not watching authorized_keys files; hand edits are repaired at the next resync")
		}
		return
	}
	defer f.w.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-f.w.Events:
			if !ok {
				return
			}
			log.V(1).Info("Seeing file change", "path", ev.Name, "op", ev.Op.String())
			kick()
		case err, ok := <-f.w.Errors:
			if !ok {
				return
			}
			log.Info("Watching files failed; the periodic resync still repairs drift", "error", err.Error())
		}
	}
}
