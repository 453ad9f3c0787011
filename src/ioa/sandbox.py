"""Isolated execution of untrusted, model-written Python programs (DESIGN §4 verification).

Every program runs in a separate process tree, always sandboxed (there is no switch to turn it off):

* **namespaces** (preferred; root, or any user with unprivileged user namespaces): new mount, PID,
  network, IPC and UTS namespaces. The whole filesystem is bind-remounted read-only inside the sandbox;
  the only writable place is a small private tmpfs mounted over the run's temporary directory (cwd, HOME,
  TMPDIR), which vanishes with the sandbox. The network namespace has only a downed loopback, so every
  connection fails in the kernel. The supervisor is PID 1 of the PID namespace: when the program's main
  process exits (or the supervisor is killed on timeout) the kernel kills every process left inside,
  so daemons and fork bombs cannot outlive a run. The program itself runs as an unprivileged uid (a fresh
  random uid when we are root — RLIMIT_NPROC is not enforced for root and a shared uid would share the
  count; uid 65534 of a nested user namespace otherwise), with no capabilities and ``no_new_privs``.
* **degraded fallbacks**, each logged once as a warning: ``uid`` (root without namespaces: unprivileged
  random uid + a Python audit hook that blocks sockets; world-writable directories stay writable) and
  ``rlimits`` (neither: rlimits + audit hook only).

In every mode: wall-clock timeout (the process group is SIGKILLed), rlimits on CPU time, address space,
file size, process count and open files, a minimal environment (no inherited secrets), stdin closed unless
given, stdout/stderr read incrementally and capped (the program is killed once a stream exceeds the cap).

Only the standard library is used; namespaces, mounts and prctl are reached through ``ctypes`` in a small
launcher script, so nothing from util-linux is required.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import marshal
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ioa.errors import ConfigError, IoaError

__all__ = [
    "ExecutionResult",
    "SandboxError",
    "SandboxLimits",
    "isolation_details",
    "isolation_mode",
    "run_python",
    "run_tests",
]

logger = logging.getLogger(__name__)

Status = Literal["pass", "fail", "timeout", "error"]

MAX_PROGRAM_BYTES = 8 * 1024 * 1024
_EXIT_GRACE_S = 0.5  # after the main process exits, how long to wait for the output pipes to close


class SandboxError(IoaError):
    """The sandbox itself cannot run programs on this machine."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one sandboxed execution.

    ``cpu_s`` defaults to ``timeout_s``; ``max_processes`` counts processes *and threads* of the
    program's uid (the Python interpreter itself is one).
    """

    timeout_s: float = 10.0
    cpu_s: float | None = None
    memory_mb: int = 512
    file_size_mb: int = 16
    max_processes: int = 32
    output_bytes: int = 65536

    def __post_init__(self) -> None:
        checks = {
            "timeout_s": self.timeout_s > 0,
            "cpu_s": self.cpu_s is None or self.cpu_s > 0,
            # Python needs ~30 MB of address space just to start.
            "memory_mb": self.memory_mb >= 64,
            "file_size_mb": self.file_size_mb >= 1,
            "max_processes": self.max_processes >= 1,
            "output_bytes": self.output_bytes >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"invalid sandbox limits: {', '.join(bad)} ({self})",
                "use positive values; memory_mb must be at least 64",
            )


@dataclass
class ExecutionResult:
    """Outcome of one sandboxed run. ``status`` is ``pass`` iff the program exited with code 0."""

    status: Status
    returncode: int | None  # exit code; negative signal number if killed by a signal; None if unknown
    stdout: str
    stderr: str
    seconds: float
    reason: str = ""
    truncated: bool = False  # True when stdout or stderr hit the output cap

    @property
    def passed(self) -> bool:
        return self.status == "pass"


# --------------------------------------------------------------------------------------------------
# Launcher: runs as a separate interpreter (``python -I -S -c``), stdlib only, with our privileges.
# Layout: launcher -> [unshare] -> supervisor (PID 1 of the new PID namespace) -> program.
# It reports to the parent through a private status pipe, one ``event<TAB>value`` line per report.
# --------------------------------------------------------------------------------------------------
_LAUNCHER = r'''
import ctypes, marshal, os, resource, signal, sys, time

CFG = marshal.loads(bytes.fromhex(sys.argv[2]))  # marshal: built in, so no import cost (json pulls in re)
STATUS = CFG["status_fd"]
os.set_inheritable(STATUS, False)  # never reaches the program: close-on-exec
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
LIBC.unshare.argtypes = [ctypes.c_int]
LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME = 16384, 1 << 18, 1 << 21
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1


def report(event, value):
    try:
        os.write(STATUS, f"{event}\t{value}".replace("\n", " ").encode("utf-8", "replace") + b"\n")
    except OSError:
        pass


def fail(where, exc):
    report("setup-error", f"{where}: {exc}")
    os._exit(125)


def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enc(s):
    return None if s is None else s.encode()


def mount(src, target, fstype, flags, data=None):
    check(LIBC.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def mount_setattr(path, flags, attr_set, attr_clr):
    attr = (ctypes.c_uint64 * 4)(attr_set, attr_clr, 0, 0)
    rc = LIBC.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), enc(path),
                      ctypes.c_uint(flags), attr, ctypes.c_size_t(32))
    check(rc, f"mount_setattr {path}")


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def mountpoints():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4]
            for octal in ("\\040", "\\011", "\\012", "\\134"):  # mountinfo escapes
                mp = mp.replace(octal, chr(int(octal[1:], 8)))
            yield mp, parts[5].split(",")


def make_readonly(workdir):
    # One syscall for the whole tree (Linux >= 5.12); mount attributes are per mount, never the
    # superblock, so the host's filesystems are untouched.
    # The sandbox's own /proc stays writable: it only shows the sandbox's processes, and a nested
    # user namespace needs /proc/self/uid_map.
    try:
        mount_setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0)
        mount_setattr(workdir, 0, 0, MOUNT_ATTR_RDONLY)
        mount_setattr("/proc", 0, 0, MOUNT_ATTR_RDONLY)
        return
    except OSError:
        pass
    # Fallback: bind-remount each mount read-only. MS_BIND is essential: MS_REMOUNT without it would
    # make the shared superblock (the host's filesystem) read-only.
    keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
            "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
    failed = []
    for mp, opts in mountpoints():
        if mp in (workdir, "/proc"):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in opts:
            flags |= keep.get(opt, 0)
        try:
            mount(None, mp, None, flags)
        except OSError:
            if mp == "/":
                raise
            failed.append(mp)
    if failed:
        report("warning", "could not make read-only: " + ", ".join(failed))


def setup_filesystem():
    workdir = CFG["workdir"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    with open(os.path.join(workdir, "program.py"), "rb") as f:
        program = f.read()
    os.unlink(os.path.join(workdir, "program.py"))  # a crashed caller leaks at most an empty directory
    mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={CFG['tmpfs_mb']}m,mode=0700,uid={CFG['fs_uid']},gid={CFG['fs_gid']}")
    path = os.path.join(workdir, "program.py")
    with open(path, "wb") as f:
        f.write(program)
    os.chown(path, CFG["fs_uid"], CFG["fs_gid"])
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # only our PID namespace
    make_readonly(workdir)
    hide_private_dirs()


def hide_private_dirs():
    """Cover home directories with an empty read-only tmpfs, re-exposing only the Python installation.

    Why: they hold API keys, SSH keys and model caches; and a pyenv under /root (mode 700) would
    otherwise be unusable by the sandbox uid. The exposed trees are read-only bind mounts.
    """
    keep = []
    for path in CFG["expose"]:
        try:  # opened before the tmpfs covers it
            keep.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY)))
        except OSError:
            pass
    for hidden in CFG["hide"]:
        try:
            mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            for path, fd in keep:
                if path.startswith(hidden.rstrip("/") + "/"):
                    os.makedirs(path, 0o755)
                    mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)  # inherits read-only
            mount(None, hidden, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        except OSError as exc:
            report("warning", f"could not hide {hidden}: {exc}")
    for _, fd in keep:
        os.close(fd)


def drop_privileges():
    if CFG["userns"]:
        # Nested user namespace whose only uid (65534) maps to our namespace's root: the program keeps
        # no capability over the mount namespace we set up, so it cannot undo the read-only remounts.
        check(LIBC.unshare(CLONE_NEWUSER), "unshare user")
        write_file("/proc/self/setgroups", "deny")
        write_file("/proc/self/uid_map", "65534 0 1")
        write_file("/proc/self/gid_map", "65534 0 1")
    elif CFG["uid"] is not None:
        os.setgroups([])
        os.setresgid(CFG["gid"], CFG["gid"], CFG["gid"])
        os.setresuid(CFG["uid"], CFG["uid"], CFG["uid"])  # clears all capabilities
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")  # setuid binaries stay inert


def run_program():
    try:
        for name, value in CFG["rlimits"].items():
            resource.setrlimit(getattr(resource, name), tuple(value))
        drop_privileges()
        # Dies with its supervisor (set after the uid change, which clears it; exec keeps it).
        check(LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
        os.chdir(CFG["workdir"])
        os.closerange(3, STATUS)  # belt and braces: the program inherits only stdin/out/err
        os.closerange(STATUS + 1, 65536)
        for interp in CFG["interpreters"]:
            if os.access(interp, os.X_OK):
                break
        else:
            raise OSError(13, "no Python interpreter is executable by the sandbox user")
        argv = [interp, "-I", "-B", "-u"]
        argv += ["-c", CFG["guard"]] if CFG["guard"] else ["program.py"]
        os.execve(interp, argv, CFG["env"])
    except BaseException as exc:
        fail("program", exc)


def supervise():
    """Start the program, reap every process, report how the program ended."""
    pid = os.fork()
    if pid == 0:
        run_program()
    status = None
    while status is None:
        try:
            done, st = os.waitpid(-1, 0)  # as PID 1 we also reap orphans
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if done == pid:
            status = st
    if status is None:
        report("setup-error", "lost the program process")
        os._exit(125)
    if os.WIFSIGNALED(status):
        report("signal", os.WTERMSIG(status))
        code = 128 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
        report("exit", code)
    if not CFG["namespaces"]:
        clean_up_orphans()
    os._exit(code)


def clean_up_orphans():
    """No PID namespace: kill the program's leftover processes and reap them (we are their subreaper)."""
    for _ in range(200):  # bounded: about 2 s
        if CFG["uid"] is not None:
            # The uid is unique to this run, so kill(-1) from it reaches exactly the leftovers, even
            # those that left our process tree.
            killer = os.fork()
            if killer == 0:
                try:
                    os.setresuid(CFG["uid"], CFG["uid"], CFG["uid"])
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
                os._exit(0)
            os.waitpid(killer, 0)
        else:
            for pid in children():  # same user as us: only what is left in our subtree
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # nothing left
        time.sleep(0.01)


def children():
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def main():
    # If the caller dies mid-run, so does the launcher (and with it the whole sandbox). The caller's
    # thread stays blocked in run_python while we run, so this cannot fire early.
    try:
        check(LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    except OSError as exc:
        fail("launcher", exc)
    if os.getppid() != CFG["parent_pid"]:
        os._exit(125)  # the caller is already gone
    if not CFG["namespaces"]:
        # Orphans of the program reparent to us instead of the system's init, so we can reap them.
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        supervise()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    try:
        if CFG["userns"]:
            uid, gid = os.getuid(), os.getgid()
            check(LIBC.unshare(flags | CLONE_NEWUSER), "unshare")
            write_file("/proc/self/setgroups", "deny")
            write_file("/proc/self/uid_map", f"0 {uid} 1")
            write_file("/proc/self/gid_map", f"0 {gid} 1")
        else:
            check(LIBC.unshare(flags), "unshare")
    except OSError as exc:
        fail("namespaces", exc)
    init = os.fork()
    if init == 0:
        # PID 1 of the new namespace. Dies with the launcher, and its death kills the namespace.
        try:
            # (If the launcher died before this line, the parent's process-group kill still gets us.)
            check(LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
            setup_filesystem()
        except BaseException as exc:
            fail("filesystem", exc)
        supervise()
    while True:
        try:
            _, st = os.waitpid(init, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))


main()
'''

# The launcher runs under our own interpreter (sys.executable), so its compiled code object can be
# passed in marshal form: compiling the source on every run costs more than the rest of the launcher.
_BOOT = "import marshal, sys; exec(marshal.loads(bytes.fromhex(sys.argv[1])))"


@functools.lru_cache(maxsize=4)
def _compiled(source: str) -> str:
    return marshal.dumps(compile(source, "<ioa-sandbox-launcher>", "exec")).hex()


def _launcher_code() -> str:
    return _compiled(_LAUNCHER)  # keyed on the source, so tests may patch _LAUNCHER


# Installed before the program runs when the kernel cannot cut the network (no network namespace).
# Best effort only: ctypes could bypass it, hence the warning logged for those modes.
_NET_GUARD = r"""
import sys

def _ioa_guard(event, args):
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
        raise PermissionError("network access is disabled in the ioa sandbox")
    if event == "socket.__new__" and args[1] not in (1,):  # AF_UNIX only
        raise PermissionError("network access is disabled in the ioa sandbox")

sys.addaudithook(_ioa_guard)
del _ioa_guard
sys.argv = ["program.py"]
with open("program.py", "rb") as _f:
    _code = compile(_f.read(), "program.py", "exec")
del _f
exec(_code, {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class _Mode:
    name: Literal["namespaces", "uid", "rlimits"]
    namespaces: bool
    userns: bool  # namespaces created without root, through a user namespace
    drop_uid: bool  # run the program under a fresh random uid (needs root)
    hide: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    interpreters: tuple[str, ...] = ()
    warning: str = ""
    notes: tuple[str, ...] = ()  # why stronger modes were rejected

    @property
    def net_guard(self) -> bool:
        return not self.namespaces


_mode_lock = threading.Lock()
_mode_cache: _Mode | None = None


def _interpreter_candidates() -> tuple[str, ...]:
    """Interpreters to try for the program, best first; the sandbox user must be able to execute one.

    Why several: a virtualenv's python often links into a private directory (e.g. /root/.pyenv) that an
    unprivileged uid cannot traverse. With namespaces that tree is re-exposed read-only (see
    ``hide_private_dirs``), so the caller's own interpreter and packages run the program; without them
    the system interpreter of the same version does (standard library only).
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    names = [
        sys.executable,
        getattr(sys, "_base_executable", "") or "",
        os.path.realpath(sys.executable),
        shutil.which(version, path="/usr/local/bin:/usr/bin:/bin") or "",
        shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "",
    ]
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return tuple(seen)


def _hidden_and_exposed() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Private directories to cover (home directories), and the Python trees to re-expose inside them."""

    def inside(path: str, parent: str) -> bool:
        return path == parent or path.startswith(parent.rstrip("/") + "/")

    temp_roots = {os.path.realpath(tempfile.gettempdir()), "/tmp"}
    hide: list[str] = []
    for candidate in (str(Path.home()), "/root", "/home"):
        real = os.path.realpath(candidate)
        # The workdir must stay reachable, so a home directory holding the temp root stays visible.
        if os.path.isdir(real) and real != "/" and real not in hide and not any(inside(t, real) for t in temp_roots):
            hide.append(real)
    wanted = sorted(
        {
            os.path.realpath(sys.base_prefix),
            os.path.realpath(sys.prefix),
            os.path.dirname(os.path.realpath(sys.executable)),
        }
    )
    expose: list[str] = []
    for path in wanted:  # parents first; a path inside an exposed tree needs no mount of its own
        if any(inside(path, h) for h in hide) and not any(inside(path, e) for e in expose):
            expose.append(path)
    return tuple(hide), tuple(expose)


def _minimal_env(workdir: str) -> dict[str, str]:
    # Nothing is inherited: secrets in the parent's environment never reach the program.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",  # native libraries would otherwise start one thread per core
        "OPENBLAS_NUM_THREADS": "1",
    }


def _rlimits(limits: SandboxLimits) -> dict[str, list[int]]:
    cpu = math.ceil(limits.cpu_s if limits.cpu_s is not None else limits.timeout_s)
    mem = limits.memory_mb * 1024 * 1024
    fsize = limits.file_size_mb * 1024 * 1024
    return {
        "RLIMIT_CPU": [cpu, cpu + 1],  # SIGXCPU at the soft limit, SIGKILL one second later
        "RLIMIT_AS": [mem, mem],
        "RLIMIT_FSIZE": [fsize, fsize],
        "RLIMIT_NPROC": [limits.max_processes, limits.max_processes],
        "RLIMIT_NOFILE": [256, 256],
        "RLIMIT_CORE": [0, 0],
    }


def _temp_root(mode: _Mode) -> str | None:
    # The sandbox uid must be able to traverse the parent directories of its workdir; /tmp always can.
    if mode.drop_uid and os.path.isdir("/tmp"):
        return "/tmp"
    return None


def isolation_mode() -> str:
    """The isolation mechanism in use on this machine (detected once, then cached)."""
    return _get_mode().name


def _get_mode() -> _Mode:
    global _mode_cache
    with _mode_lock:
        if _mode_cache is None:
            _mode_cache = _detect_mode()
        return _mode_cache


def _detect_mode() -> _Mode:
    """Try the isolation mechanisms strongest first; keep the first one a probe proves effective."""
    interps = _interpreter_candidates()
    root = os.geteuid() == 0
    candidates: list[_Mode] = []
    if sys.platform.startswith("linux"):
        hide, expose = _hidden_and_exposed()
        candidates.append(
            _Mode("namespaces", True, userns=not root, drop_uid=root, hide=hide, expose=expose, interpreters=interps)
        )
    if root:
        candidates.append(
            _Mode(
                "uid",
                namespaces=False,
                userns=False,
                drop_uid=True,
                interpreters=interps,
                warning="no namespaces: network blocked only by a Python audit hook; world-writable "
                "directories (/tmp, /dev/shm) remain writable; other processes stay visible",
            )
        )
    candidates.append(
        _Mode(
            "rlimits",
            namespaces=False,
            userns=False,
            drop_uid=False,
            interpreters=interps,
            warning="no namespaces and not root: only rlimits and a Python audit hook; the program can "
            "write wherever this user can, read its files and signal its processes",
        )
    )
    failures: list[str] = []
    for mode in candidates:
        ok, detail, interp = _probe(mode)
        if ok:
            chosen = _Mode(
                mode.name,
                mode.namespaces,
                mode.userns,
                mode.drop_uid,
                hide=mode.hide,
                expose=mode.expose,
                interpreters=(interp,),
                warning=mode.warning,
                notes=tuple(failures),
            )
            if mode.warning:
                logger.warning(
                    "sandbox degraded to %r (%s); stronger modes failed: %s",
                    mode.name,
                    mode.warning,
                    "; ".join(failures) or "none",
                )
            else:
                logger.info(
                    "sandbox: %s (%s uid, interpreter %s, hidden %s)",
                    mode.name,
                    "random unprivileged" if mode.drop_uid else "nested userns",
                    interp,
                    ", ".join(mode.hide) or "nothing",
                )
            return chosen
        failures.append(f"{mode.name}: {detail}")
        logger.info("sandbox mode %r unavailable: %s", mode.name, detail)
    raise SandboxError(
        "cannot run sandboxed programs on this machine: " + "; ".join(failures),
        "run on Linux with a working Python; see the log for the failing mechanism",
    )


_PROBE = """
import errno, json, os, socket, sys
bad = []
if {check_uid} and os.getuid() == 0:
    bad.append("uid 0")
if {check_ns}:
    try:
        open({canary!r}, "w").close()
        bad.append("filesystem writable")
    except OSError:
        pass
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", 9))
        bad.append("network reachable")
    except OSError as e:
        if e.errno != errno.ENETUNREACH:
            bad.append("network reachable")
    if os.getppid() != 1:
        bad.append("no pid namespace")
open("written", "w").write("x")
print(json.dumps({{"bad": bad, "exe": sys.executable}}))
"""


def _probe(mode: _Mode) -> tuple[bool, str, str]:
    canary = os.path.join(tempfile.gettempdir(), f"ioa-sandbox-probe-{secrets.token_hex(6)}")
    code = _PROBE.format(check_uid=mode.drop_uid or mode.userns, check_ns=mode.namespaces, canary=canary)
    try:
        result = _execute(code, SandboxLimits(timeout_s=20), None, mode)
    except OSError as exc:
        return False, f"cannot start: {exc}", ""
    finally:
        if os.path.exists(canary):
            with contextlib.suppress(OSError):
                os.remove(canary)
    if result.status != "pass":
        return False, (result.reason or result.stderr.strip()[-300:]), ""
    try:
        info = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, f"unexpected probe output {result.stdout[:200]!r}", ""
    if info["bad"]:
        return False, "isolation not effective: " + ", ".join(info["bad"]), ""
    return True, "", info["exe"]


def run_python(code: str, limits: SandboxLimits | None = None, stdin: str | None = None) -> ExecutionResult:
    """Run ``code`` as a Python program in the sandbox. stdin is closed unless ``stdin`` is given."""
    return _execute(code, limits or SandboxLimits(), stdin, _get_mode())


def run_tests(
    solution: str,
    tests: str,
    entry_point: str | None = None,
    limits: SandboxLimits | None = None,
) -> ExecutionResult:
    """HumanEval-style check: ``solution`` + ``tests`` (+ ``check(entry_point)``); pass iff exit 0."""
    if entry_point is not None and not entry_point.isidentifier():
        return ExecutionResult("error", None, "", "", 0.0, f"invalid entry point {entry_point!r}")
    program = f"{solution.rstrip()}\n\n\n{tests.rstrip()}\n"
    if entry_point is not None:
        program += f"\n\ncheck({entry_point})\n"
    return run_python(program, limits)


def _execute(code: str, limits: SandboxLimits, stdin: str | None, mode: _Mode) -> ExecutionResult:
    start = time.monotonic()
    try:
        program = code.encode("utf-8")
        data = stdin.encode("utf-8") if stdin is not None else None
    except UnicodeEncodeError as exc:
        return ExecutionResult("error", None, "", "", 0.0, f"program or stdin is not valid text: {exc}")
    if len(program) > MAX_PROGRAM_BYTES:
        return ExecutionResult("error", None, "", "", 0.0, f"program larger than {MAX_PROGRAM_BYTES} bytes")

    workdir = tempfile.mkdtemp(prefix="ioa-sandbox-", dir=_temp_root(mode))
    status_r, status_w = os.pipe()
    try:
        uid = gid = None
        if mode.drop_uid:
            # Fresh uid per run: RLIMIT_NPROC counts per uid, and leftovers can be killed by uid.
            uid = gid = 1_500_000_000 + secrets.randbelow(500_000_000)
        path = os.path.join(workdir, "program.py")
        with open(path, "wb") as f:
            f.write(program)
        if uid is not None and not mode.namespaces:
            os.chown(workdir, uid, gid)  # type: ignore[arg-type]
            os.chown(path, uid, gid)  # type: ignore[arg-type]
        cfg = {
            "status_fd": status_w,
            "parent_pid": os.getpid(),
            "workdir": workdir,
            "namespaces": mode.namespaces,
            "userns": mode.userns,
            "uid": uid,
            "gid": gid,
            "fs_uid": 0 if mode.userns or uid is None else uid,
            "fs_gid": 0 if mode.userns or gid is None else gid,
            # Bounds disk use too: RLIMIT_FSIZE caps one file, the tmpfs caps them all.
            "tmpfs_mb": max(4 * limits.file_size_mb, 64),
            "hide": list(mode.hide),
            "expose": list(mode.expose),
            "rlimits": _rlimits(limits),
            "interpreters": list(mode.interpreters),
            "env": _minimal_env(workdir),
            "guard": _NET_GUARD if mode.net_guard else "",
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", _BOOT, _launcher_code(), marshal.dumps(cfg).hex()],
                stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_minimal_env(workdir),
                cwd=workdir,
                start_new_session=True,  # own process group, no controlling terminal
                close_fds=True,
                pass_fds=(status_w,),
            )
        except OSError as exc:  # e.g. EAGAIN/ENOMEM on an overloaded machine: not the program's fault
            logger.error("sandbox: cannot start the launcher: %s", exc)
            return ExecutionResult("error", None, "", "", time.monotonic() - start, f"sandbox could not start: {exc}")
        os.close(status_w)
        status_w = -1
        out, err, timed_out, overflow = _communicate(proc, data, limits, start + limits.timeout_s)
        events = _read_events(status_r)
        if uid is not None and not mode.namespaces and not any(e[0] in ("exit", "signal") for e in events):
            _kill_uid(uid)  # the launcher was killed before it could clean up
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - start
    for event, value in events:
        if event == "warning":
            logger.warning("sandbox: %s", value)
    return _classify(events, proc.returncode, out, err, timed_out, overflow, limits, seconds)


def _communicate(
    proc: subprocess.Popen[bytes], data: bytes | None, limits: SandboxLimits, deadline: float
) -> tuple[bytes, bytes, bool, str]:
    """Feed stdin, collect capped output, enforce the deadline; always kill the process group at the end.

    Output is read incrementally and never buffered beyond the cap, so a program printing gigabytes
    costs us at most ``output_bytes`` per stream before it is killed.
    """
    assert proc.stdout is not None and proc.stderr is not None
    buffers: dict[int, bytearray] = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    sel = selectors.DefaultSelector()
    for fd in buffers:
        sel.register(fd, selectors.EVENT_READ, "out")
    stdin_fd = -1
    pos = 0
    if data is not None and proc.stdin is not None:
        stdin_fd = proc.stdin.fileno()
        os.set_blocking(stdin_fd, False)
        if data:
            sel.register(stdin_fd, selectors.EVENT_WRITE, "in")
        else:
            proc.stdin.close()
    # A pidfd becomes readable when the launcher exits, without reaping it: its pid, and so the
    # process-group id we kill, cannot be reused by an unrelated process before we are done.
    pidfd = -1
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, "exit")
    exited_at: float | None = None
    timed_out = False
    overflow = ""
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and pidfd < 0 and _has_exited(proc.pid):
                exited_at = now
            if exited_at is not None and not any(k.data == "out" for k in sel.get_map().values()):
                break
            if exited_at is not None and now - exited_at > _EXIT_GRACE_S:
                break  # descendants still hold the pipes; they are killed below
            if now >= deadline:
                timed_out = exited_at is None
                break
            wait = deadline - now
            if exited_at is not None:
                wait = min(wait, exited_at + _EXIT_GRACE_S - now)
            if pidfd < 0:
                wait = min(wait, 0.01)
            for key, _ in sel.select(wait):
                fd = int(key.fd)
                if key.data == "exit":
                    exited_at = time.monotonic()
                    sel.unregister(fd)
                elif key.data == "in":
                    try:
                        pos += os.write(fd, data[pos : pos + 65536])  # type: ignore[index]
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:  # the program closed stdin or exited
                        pos = len(data)  # type: ignore[arg-type]
                    if pos >= len(data):  # type: ignore[arg-type]
                        sel.unregister(fd)
                        proc.stdin.close()  # type: ignore[union-attr]
                else:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    buf = buffers[fd]
                    room = limits.output_bytes - len(buf)
                    buf += chunk[:room]
                    if len(chunk) > room:
                        overflow = names[fd]
            if overflow:
                break
    finally:
        # Kill everything left before reaping the launcher (its zombie keeps the group id reserved).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sel.close()
        if pidfd >= 0:
            os.close(pidfd)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
    out_fd, err_fd = list(buffers)
    return bytes(buffers[out_fd]), bytes(buffers[err_fd]), timed_out, overflow


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (unique to one run) from a short-lived process running as that uid."""
    try:
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"],
            user=uid,
            group=uid,
            extra_groups=[],
            env={},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("sandbox: could not kill leftover processes of uid %d: %s", uid, exc)


def _has_exited(pid: int) -> bool:
    """Whether ``pid`` has exited, without reaping it (fallback when pidfds are unavailable)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid != 0


def _read_events(fd: int) -> list[tuple[str, str]]:
    """The launcher's reports: one ``event<TAB>value`` line each (exit, signal, setup-error, warning)."""
    os.set_blocking(fd, False)
    raw = b""
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            raw += chunk
    events = []
    for line in raw.decode("utf-8", "replace").splitlines():
        event, _, value = line.partition("\t")
        events.append((event, value))
    return events


def _last_exception(stderr: str) -> str:
    """The final ``ExceptionType: message`` line of a traceback, if any."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def _classify(
    events: list[tuple[str, str]],
    launcher_rc: int | None,
    out: bytes,
    err: bytes,
    timed_out: bool,
    overflow: str,
    limits: SandboxLimits,
    seconds: float,
) -> ExecutionResult:
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    truncated = bool(overflow)

    def result(status: Status, returncode: int | None, reason: str) -> ExecutionResult:
        return ExecutionResult(status, returncode, stdout, stderr, round(seconds, 4), reason, truncated)

    # A setup error (reported by the program's process before exec) outranks the exit code it caused.
    final = next((e for e in events if e[0] == "setup-error"), None) or next(
        (e for e in reversed(events) if e[0] in ("exit", "signal") and e[1].lstrip("-").isdigit()), None
    )
    returncode: int | None = None
    if final is not None and final[0] == "exit":
        returncode = int(final[1])
    elif final is not None and final[0] == "signal":
        returncode = -int(final[1])

    if timed_out:
        return result("timeout", returncode, f"wall-clock limit of {limits.timeout_s:g} s exceeded; killed")
    if overflow:
        return result("error", returncode, f"{overflow} exceeded {limits.output_bytes} bytes; output truncated, killed")
    if final is None:
        return result("error", returncode, f"sandbox launcher ended without a report (exit {launcher_rc})")
    if final[0] == "setup-error":
        return result("error", None, f"sandbox setup failed: {final[1]}")
    if returncode == 0:
        return result("pass", 0, "")
    assert returncode is not None
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        if sig == signal.SIGXCPU:
            return result("timeout", returncode, "CPU time limit exceeded")
        return result("error", returncode, f"killed by signal {name}")
    last = _last_exception(stderr)
    kind = last.split(":", 1)[0]
    if kind in ("SyntaxError", "IndentationError", "TabError"):
        return result("error", returncode, f"syntax error: {last}")
    if kind == "MemoryError":
        return result("error", returncode, f"memory limit of {limits.memory_mb} MB exceeded (MemoryError)")
    return result("fail", returncode, last if kind.isidentifier() else f"exit code {returncode}")


def isolation_details() -> dict[str, object]:
    """Diagnostic summary of the active isolation (for logs and doctor-style output)."""
    mode = _get_mode()
    info = asdict(mode)
    info["net_guard"] = mode.net_guard
    return info
