package agent

import (
	"crypto/sha256"
	"slices"

	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
)

// lastWrite is what a pass left in an account's file: the sections it
// rendered, a digest of the bytes that made, where the managed block is
// in them, and the grants they hold. Rendering is deterministic and
// idempotent (Render(Render(c, s), s) is Render(c, s)), so while the
// sections are the same and the file still holds exactly those bytes,
// rendering again would return the file as it is; and while the file
// holds those bytes, new sections need only a new block in the old one's
// place (authorizedkeys.Rerender), not a parse of the whole file. The
// next pass still reads the file, through the same checks, and so still
// proves what it holds; it skips only the parse and, when nothing
// changed, the render, which under churn were most of an agent's CPU:
// one grant's change leaves the other accounts of the node as they were,
// and the lines around the block of the one it changes.
//
// The digest is SHA-256 since the file's owner chooses its bytes: no one
// can make other content that passes for the rendered one.
type lastWrite struct {
	sections []authorizedkeys.Section
	sum      [sha256.Size]byte
	span     authorizedkeys.Span
	held     map[authorizedkeys.Owner]int
}

// wrote reports whether current is the file this render left.
func (l lastWrite) wrote(current []byte) bool {
	return sha256.Sum256(current) == l.sum
}

// rendered reports whether sections are what it rendered.
func (l lastWrite) rendered(sections []authorizedkeys.Section) bool {
	return slices.EqualFunc(l.sections, sections, func(a, b authorizedkeys.Section) bool {
		return a.Owner == b.Owner && a.UID == b.UID && slices.Equal(a.Keys, b.Keys)
	})
}
