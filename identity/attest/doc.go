// Package attest owns Unix workload attestation: given the server end of a
// Unix socket connection, it learns from the kernel who is at the other end
// and describes that process as selectors (unix:uid, unix:gid, unix:user,
// unix:group, unix:path, unix:sha256). It must never take the caller's word
// for anything (no field the peer sends is read), and it must never return
// the selectors of a process other than the one that connected: when it
// cannot be sure, it returns an error.
//
// It only attests; matching selectors to registration entries and serving the
// Workload API belong to other packages.
//
// # How a peer is identified
//
// Attest runs these steps, in this order, for a *net.UnixConn:
//
//  1. Peer credentials. SO_PEERCRED gives the pid, effective uid and
//     effective gid the peer had when it called connect(2) (or listen(2));
//     the kernel records them, the peer cannot forge them. In the same
//     socket call Attest asks for SO_PEERPIDFD (Linux 6.5 and later), a
//     pidfd for that very process, recorded by the kernel at connect time.
//     Where the kernel does not know SO_PEERPIDFD, Attest calls
//     pidfd_open(pid) at once. A pid that no longer exists fails here with
//     ErrPeerGone.
//  2. /proc/<pid>/status: a zombie (State Z or X) has exited and fails
//     with ErrPeerGone; its Uid and Gid lines must carry the effective
//     ids of step 1 (else ErrPeerChanged: the process changed its
//     credentials, or the pid is not the peer), and its Groups line gives
//     the supplementary groups.
//  3. /proc/<pid>/exe: readlink gives the path, open gives a file
//     descriptor on the executable itself; everything later (deleted
//     check, device, inode, size, mtime, content hash) uses that descriptor,
//     never the path again.
//  4. The pidfd check. pidfd_send_signal(pidfd, 0) must succeed, so the
//     process the pidfd names has not been reaped; and the Pid line of the
//     pidfd's /proc/self/fdinfo entry must equal the pid of step 1 (the
//     kernel writes -1 there once the process is gone). Otherwise
//     ErrPeerGone.
//
// Why step 4 makes steps 2 and 3 trustworthy: a pidfd pins one process, not
// a pid number. A pid number is only handed out again after the process
// holding it has been reaped, and a process keeps its number from fork to
// reaping. If, after the reads of steps 2 and 3, the pidfd's process is
// still unreaped and still has the number we read through, then it held
// that number during the whole interval, no other process could have had
// it, and every /proc/<pid> read in between was about the pidfd's process.
// If the peer exited at any point, step 4 fails and no selector is
// returned, even if a new process has taken the pid in the meantime. A
// start-time comparison from /proc/<pid>/stat is not needed on top of this:
// the fdinfo Pid line already ties the pidfd to the number.
//
// What step 4 cannot cover is the choice of process in step 1 on kernels
// without SO_PEERPIDFD: pidfd_open(pid) happens after the peer connected, so
// a peer that exits and whose pid is reused by a new process before that
// call would be replaced by the new process. Step 2 then still requires the
// new process to run with the peer's effective uid and gid, so the worst
// case is a process of the same user and group; with SO_PEERPIDFD (every
// current kernel) the window does not exist. The fallback is logged at
// debug level.
//
// The peer may also call execve(2) after connecting: it is then still the
// same process, and Attest reports the executable it runs at step 3.
//
// # Executable content
//
// unix:sha256 is the SHA-256 of the bytes read through the descriptor
// opened in step 3. Results are cached, bounded (Config.HashCacheSize,
// least recently used evicted), keyed by device, inode, size and mtime of
// that descriptor, so many connections from one binary hash it once. If the
// file's size or mtime changes while it is hashed, the result is neither
// cached nor returned.
//
// # When the executable cannot be used
//
// unix:path and unix:sha256 are left out, and the uid, gid, user and group
// selectors are still returned, when: /proc/<pid>/exe cannot be read or
// opened (for example a process of another user while Sigil is not root);
// the executable has been deleted (link count 0, or a readlink result
// ending in " (deleted)"); the link's target is not an absolute clean UTF-8
// path; or reading the content fails. The reason is logged at debug level
// with the key "reason". unix:path and unix:sha256 are then both absent, or
// only unix:sha256 when only the hashing failed. The same applies to user
// and group names that do not resolve or are not POSIX portable names: the
// numeric selectors stay.
//
// Paths are those of the peer's mount namespace; a peer in another mount
// namespace (a container) reports paths that may mean something else in
// Sigil's.
package attest
