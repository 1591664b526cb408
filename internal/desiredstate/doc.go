// Package desiredstate turns rendered NodeAccess objects into what one node
// must hold: for each local account, the managed sections of its
// authorized_keys file. It is pure: no clients, no files, the time is an
// argument. The manager uses Hash to stamp what it renders; the agent uses
// ForNode to decide what to write, and reports the hashes it applied.
package desiredstate
