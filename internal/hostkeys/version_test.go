package hostkeys

import "testing"

// Banners as the sshd of each distribution sends them.
func TestUnderstandsUTCExpiry(t *testing.T) {
	for banner, want := range map[string]bool{
		"SSH-2.0-OpenSSH_7.4":                            false, // Amazon Linux 2: no expiry-time at all
		"SSH-2.0-OpenSSH_8.0":                            false, // RHEL 8: expiry-time in local time only
		"SSH-2.0-OpenSSH_8.7":                            false, // RHEL 9
		"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10":       false, // Ubuntu 22.04
		"SSH-2.0-OpenSSH_9.0":                            false,
		"SSH-2.0-OpenSSH_9.1":                            true,
		"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6":         true, // Debian 12
		"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5":       true, // Ubuntu 24.04
		"SSH-2.0-OpenSSH_10.0":                           true,
		"SSH-2.0-dropbear_2022.83":                       false,
		"SSH-2.0-OpenSSH":                                false,
		"SSH-2.0-OpenSSH_x.y":                            false,
		"":                                               false,
		"SSH-1.99-OpenSSH_9.2":                           false,
		"SSH-2.0-OpenSSH_9.2 FreeBSD-openssh-portable-9": true,
	} {
		if got := UnderstandsUTCExpiry(banner); got != want {
			t.Errorf("%q: %v, want %v", banner, got, want)
		}
	}
}
