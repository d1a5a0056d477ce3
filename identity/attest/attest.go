//go:build linux

package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors callers branch on. Both mean the connection must not be served.
var (
	// ErrPeerGone means the peer process exited (or was replaced under its
	// pid) before attestation finished.
	ErrPeerGone = errors.New("attest: peer process is gone")
	// ErrPeerChanged means the process found under the peer's pid does not
	// carry the credentials the kernel recorded for the connection.
	ErrPeerChanged = errors.New("attest: peer process credentials changed")
)

// DefaultHashCacheSize is the number of executable hashes kept when
// Config.HashCacheSize is zero.
const DefaultHashCacheSize = 256

// Config configures an Attestor. The zero value is usable.
type Config struct {
	// Logger receives debug records about selectors left out and why.
	// Default: nil, which discards.
	Logger *slog.Logger
	// HashCacheSize bounds how many executable hashes are cached.
	// Default: 0, which means DefaultHashCacheSize; negative disables caching.
	HashCacheSize int
}

// Attestor attests the peers of Unix socket connections. It is safe for
// concurrent use.
type Attestor struct {
	log   *slog.Logger
	cache *hashCache
}

// New returns an Attestor configured by cfg.
func New(cfg Config) *Attestor {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	size := cfg.HashCacheSize
	if size == 0 {
		size = DefaultHashCacheSize
	}
	return &Attestor{log: log, cache: newHashCache(size)}
}

// peer is what attestation learned, including the pid, which is not a
// selector.
type peer struct {
	pid       int
	selectors []Selector
}

// Attest returns the selectors of the process at the other end of conn:
// unix:uid and unix:gid (effective ids at connect time), one unix:gid per
// supplementary group, unix:user and unix:group where the ids resolve, and
// unix:path and unix:sha256 of the executable where it can be read. See the
// package documentation for the steps and why they are race free. It returns
// an error wrapping ErrPeerGone or ErrPeerChanged when the peer cannot be
// pinned down, and never partial results with an error.
func (a *Attestor) Attest(ctx context.Context, conn *net.UnixConn) ([]Selector, error) {
	p, err := a.attest(ctx, conn)
	if err != nil {
		return nil, err
	}
	return p.selectors, nil
}

func (a *Attestor) attest(ctx context.Context, conn *net.UnixConn) (peer, error) {
	if conn == nil {
		return peer{}, errors.New("attesting peer: nil connection")
	}
	if err := ctx.Err(); err != nil {
		return peer{}, fmt.Errorf("attesting peer: %w", err)
	}
	cred, pidfd, err := a.peerCredentials(conn)
	if err != nil {
		return peer{}, err
	}
	defer unix.Close(pidfd)
	pid := int(cred.Pid)

	status, err := readStatus(pid)
	if err != nil {
		return peer{}, err
	}
	if status.euid != cred.Uid || status.egid != cred.Gid {
		return peer{}, fmt.Errorf("attesting pid %d: /proc status has euid %d egid %d, connection has uid %d gid %d: %w",
			pid, status.euid, status.egid, cred.Uid, cred.Gid, ErrPeerChanged)
	}

	exe, exeErr := openExe(pid)
	if exe != nil {
		defer exe.file.Close()
	}

	if err := checkPidfd(pidfd, pid); err != nil {
		return peer{}, err
	}

	sels := a.idSelectors(cred.Uid, cred.Gid, status.groups)
	if exeErr != nil {
		a.log.DebugContext(ctx, "leaving out unix:path and unix:sha256", "pid", pid, "reason", exeErr.Error())
		return peer{pid: pid, selectors: sels}, nil
	}
	sels = append(sels, unixSelector(KindPath, exe.path))
	sum, err := a.hashExe(ctx, exe)
	if err != nil {
		if ctx.Err() != nil {
			return peer{}, fmt.Errorf("attesting pid %d: hashing executable: %w", pid, ctx.Err())
		}
		a.log.DebugContext(ctx, "leaving out unix:sha256", "pid", pid, "path", exe.path, "reason", err.Error())
		return peer{pid: pid, selectors: sels}, nil
	}
	sels = append(sels, unixSelector(KindSHA256, sum))
	return peer{pid: pid, selectors: sels}, nil
}

// peerCredentials reads SO_PEERCRED and obtains a pidfd for the peer, from
// SO_PEERPIDFD when the kernel has it, else from pidfd_open right away.
func (a *Attestor) peerCredentials(conn *net.UnixConn) (*unix.Ucred, int, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, -1, fmt.Errorf("attesting peer: getting raw connection: %w", err)
	}
	var (
		cred              *unix.Ucred
		credErr, pidfdErr error
		pidfd             = -1
	)
	ctrlErr := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr != nil {
			return
		}
		pidfd, pidfdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	})
	if ctrlErr != nil {
		return nil, -1, fmt.Errorf("attesting peer: accessing socket: %w", ctrlErr)
	}
	if credErr != nil {
		return nil, -1, fmt.Errorf("attesting peer: reading SO_PEERCRED: %w", credErr)
	}
	if cred.Pid <= 0 {
		closeIfOpen(pidfd, pidfdErr)
		return nil, -1, fmt.Errorf("attesting peer: SO_PEERCRED has pid %d (peer in another pid namespace?)", cred.Pid)
	}
	switch {
	case pidfdErr == nil:
		return cred, pidfd, nil
	case errors.Is(pidfdErr, unix.ESRCH):
		return nil, -1, fmt.Errorf("attesting pid %d: reading SO_PEERPIDFD: %w", cred.Pid, ErrPeerGone)
	case errors.Is(pidfdErr, unix.ENOPROTOOPT), errors.Is(pidfdErr, unix.EINVAL), errors.Is(pidfdErr, unix.EOPNOTSUPP):
		a.log.Debug("kernel lacks SO_PEERPIDFD, falling back to pidfd_open", "pid", cred.Pid, "err", pidfdErr)
	default:
		return nil, -1, fmt.Errorf("attesting pid %d: reading SO_PEERPIDFD: %w", cred.Pid, pidfdErr)
	}
	pidfd, err = unix.PidfdOpen(int(cred.Pid), 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, -1, fmt.Errorf("attesting pid %d: opening pidfd: %w", cred.Pid, ErrPeerGone)
	}
	if err != nil {
		return nil, -1, fmt.Errorf("attesting pid %d: opening pidfd: %w", cred.Pid, err)
	}
	return cred, pidfd, nil
}

func closeIfOpen(fd int, err error) {
	if err == nil && fd >= 0 {
		unix.Close(fd)
	}
}

// checkPidfd verifies that the process the pidfd names is still unreaped
// and still has pid.
func checkPidfd(pidfd, pid int) error {
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("attesting pid %d: signalling pidfd: %w", pid, ErrPeerGone)
		}
		return fmt.Errorf("attesting pid %d: signalling pidfd: %w", pid, err)
	}
	info, err := readProcFile("/proc/self/fdinfo/"+strconv.Itoa(pidfd), 256)
	if err != nil {
		return fmt.Errorf("attesting pid %d: reading pidfd fdinfo: %w", pid, err)
	}
	got, ok := fieldValue(info, "Pid:")
	if !ok {
		return fmt.Errorf("attesting pid %d: pidfd fdinfo has no Pid line", pid)
	}
	if got != strconv.Itoa(pid) {
		return fmt.Errorf("attesting pid %d: pidfd now names pid %s: %w", pid, got, ErrPeerGone)
	}
	return nil
}

// fieldValue returns the trimmed rest of the first line starting with key.
func fieldValue(b []byte, key string) (string, bool) {
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte(key)); ok {
			return string(bytes.TrimSpace(rest)), true
		}
	}
	return "", false
}

type procStatus struct {
	euid, egid uint32
	groups     []uint32
}

// readStatus reads the effective ids and supplementary groups of pid.
func readStatus(pid int) (procStatus, error) {
	b, err := readProcFile("/proc/"+strconv.Itoa(pid)+"/status", 2048)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return procStatus{}, fmt.Errorf("attesting pid %d: reading /proc status: %w", pid, ErrPeerGone)
	}
	if err != nil {
		return procStatus{}, fmt.Errorf("attesting pid %d: reading /proc status: %w", pid, err)
	}
	if state, _ := fieldValue(b, "State:"); strings.HasPrefix(state, "Z") || strings.HasPrefix(state, "X") {
		return procStatus{}, fmt.Errorf("attesting pid %d: process state %q: %w", pid, state, ErrPeerGone)
	}
	var st procStatus
	if st.euid, err = effectiveID(b, "Uid:"); err != nil {
		return procStatus{}, fmt.Errorf("attesting pid %d: %w", pid, err)
	}
	if st.egid, err = effectiveID(b, "Gid:"); err != nil {
		return procStatus{}, fmt.Errorf("attesting pid %d: %w", pid, err)
	}
	groups, ok := fieldValue(b, "Groups:")
	if !ok {
		return procStatus{}, fmt.Errorf("attesting pid %d: /proc status has no Groups line", pid)
	}
	for _, f := range strings.Fields(groups) {
		g, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return procStatus{}, fmt.Errorf("attesting pid %d: /proc status group %q: %w", pid, f, err)
		}
		st.groups = append(st.groups, uint32(g))
	}
	return st, nil
}

// procFileMax bounds what readProcFile reads; /proc/<pid>/status is about
// 1.5 KiB.
const procFileMax = 16 << 10

// readProcFile reads a small /proc file with one open, as few reads as it
// takes and one close: no stat (/proc reports size 0) and no *os.File.
func readProcFile(path string, sizeHint int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, sizeHint)
	for len(buf) < procFileMax {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
	return nil, fmt.Errorf("%s is larger than %d bytes", path, procFileMax)
}

// effectiveID returns the second of the four ids (real, effective, saved,
// filesystem) on a Uid: or Gid: line.
func effectiveID(b []byte, key string) (uint32, error) {
	v, ok := fieldValue(b, key)
	if !ok {
		return 0, fmt.Errorf("/proc status has no %s line", key)
	}
	f := strings.Fields(v)
	if len(f) != 4 {
		return 0, fmt.Errorf("/proc status %s line has %d fields, want 4", key, len(f))
	}
	id, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("/proc status %s line: %w", key, err)
	}
	return uint32(id), nil
}

// idSelectors builds the uid, gid, user and group selectors; names that do
// not resolve or are not portable are left out with a debug record.
func (a *Attestor) idSelectors(uid, gid uint32, groups []uint32) []Selector {
	uidStr := strconv.FormatUint(uint64(uid), 10)
	sels := []Selector{unixSelector(KindUID, uidStr)}
	if u, err := user.LookupId(uidStr); err != nil {
		a.log.Debug("leaving out unix:user", "uid", uid, "reason", err.Error())
	} else if err := checkName(u.Username); err != nil {
		a.log.Debug("leaving out unix:user", "uid", uid, "reason", err.Error())
	} else {
		sels = append(sels, unixSelector(KindUser, u.Username))
	}
	seen := make(map[uint32]bool, len(groups)+1)
	for _, g := range append([]uint32{gid}, groups...) {
		if seen[g] {
			continue
		}
		seen[g] = true
		gidStr := strconv.FormatUint(uint64(g), 10)
		sels = append(sels, unixSelector(KindGID, gidStr))
		if grp, err := user.LookupGroupId(gidStr); err != nil {
			a.log.Debug("leaving out unix:group", "gid", g, "reason", err.Error())
		} else if err := checkName(grp.Name); err != nil {
			a.log.Debug("leaving out unix:group", "gid", g, "reason", err.Error())
		} else {
			sels = append(sels, unixSelector(KindGroup, grp.Name))
		}
	}
	return sels
}

// executable is the peer's executable, opened through /proc/<pid>/exe.
type executable struct {
	path string
	file *os.File
	key  fileKey
}

const deletedSuffix = " (deleted)"

// openExe resolves and opens the executable of pid. Its error is a reason
// to leave out unix:path and unix:sha256, not to fail attestation.
func openExe(pid int) (*executable, error) {
	link := "/proc/" + strconv.Itoa(pid) + "/exe"
	path, err := os.Readlink(link)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", link, err)
	}
	if strings.HasSuffix(path, deletedSuffix) {
		return nil, fmt.Errorf("executable %q is deleted", strings.TrimSuffix(path, deletedSuffix))
	}
	if err := checkPath(path); err != nil {
		return nil, fmt.Errorf("executable path: %w", err)
	}
	f, err := os.Open(link)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", link, err)
	}
	key, nlink, err := statKey(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("examining executable %q: %w", path, err)
	}
	if nlink == 0 {
		f.Close()
		return nil, fmt.Errorf("executable %q is deleted", path)
	}
	return &executable{path: path, file: f, key: key}, nil
}

// fileKey identifies one version of a file's content.
type fileKey struct {
	dev, ino  uint64
	size      int64
	mtimeSec  int64
	mtimeNsec int64
}

func statKey(f *os.File) (fileKey, uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileKey{}, 0, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileKey{}, 0, fmt.Errorf("not a regular file (mode %#o)", st.Mode)
	}
	return fileKey{
		dev:       uint64(st.Dev),
		ino:       uint64(st.Ino),
		size:      int64(st.Size),
		mtimeSec:  int64(st.Mtim.Sec),
		mtimeNsec: int64(st.Mtim.Nsec),
	}, uint64(st.Nlink), nil
}

// hashExe returns the hex SHA-256 of exe's content, from the cache when the
// same file version was hashed before.
func (a *Attestor) hashExe(ctx context.Context, exe *executable) (string, error) {
	if sum, ok := a.cache.get(exe.key); ok {
		return sum, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, &ctxReader{ctx: ctx, r: io.NewSectionReader(exe.file, 0, 1<<62)}); err != nil {
		return "", fmt.Errorf("reading executable: %w", err)
	}
	after, _, err := statKey(exe.file)
	if err != nil {
		return "", fmt.Errorf("examining executable after hashing: %w", err)
	}
	if after != exe.key {
		return "", errors.New("executable changed while it was hashed")
	}
	sum := hex.EncodeToString(h.Sum(nil))
	a.cache.put(exe.key, sum)
	return sum, nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
