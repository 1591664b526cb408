package hostkeys

import (
	"strconv"
	"strings"
)

// UTCExpirySince is the first OpenSSH release whose authorized_keys
// expiry-time option accepts a UTC time ("YYYYMMDDHHMMSSZ"). expiry-time
// itself came with 7.7, but read in the node's local time zone, which the
// agent cannot know; a line whose options sshd cannot parse is ignored
// whole, so writing the option to an older sshd would lock the key out.
var UTCExpirySince = [2]int{9, 1}

// UnderstandsUTCExpiry tells, from an SSH version string
// ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6"), whether that sshd enforces an
// expiry-time="...Z" key option. Anything but a parsable OpenSSH version of
// at least UTCExpirySince (other servers, a hidden or changed banner) says
// no: the agent then enforces expiry alone.
func UnderstandsUTCExpiry(version string) bool {
	rest, ok := strings.CutPrefix(version, "SSH-2.0-OpenSSH_")
	if !ok {
		return false
	}
	major, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(rest[:end])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > UTCExpirySince[0] || ma == UTCExpirySince[0] && mi >= UTCExpirySince[1]
}
