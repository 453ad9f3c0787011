"""Sandbox tests: hostile programs must be contained and reported, and the machine left unharmed.

Every hostile program is bounded by itself as well (finite loops, short timeouts) so that even a broken
sandbox cannot take the machine down.
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from ioa import sandbox
from ioa.errors import ConfigError
from ioa.sandbox import ExecutionResult, SandboxLimits, run_python, run_tests

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

QUICK = SandboxLimits(timeout_s=5)


def strong() -> bool:
    """Kernel-level isolation (namespaces) is active."""
    return sandbox.isolation_mode() == "namespaces"


def separate_uid() -> bool:
    return sandbox.isolation_mode() in ("namespaces", "uid")


# ---------------------------------------------------------------------------------------------- normal


def test_pass() -> None:
    r = run_python("print('hello')", QUICK)
    assert isinstance(r, ExecutionResult)
    assert (r.status, r.returncode, r.stdout, r.reason) == ("pass", 0, "hello\n", "")
    assert r.passed and 0 < r.seconds < 5


def test_assertion_fail() -> None:
    r = run_python("assert 1 + 1 == 3, 'math is broken'", QUICK)
    assert r.status == "fail" and r.returncode == 1
    assert "AssertionError: math is broken" in r.reason
    assert "Traceback" in r.stderr


def test_syntax_error() -> None:
    r = run_python("def f(:\n    pass\n", QUICK)
    assert r.status == "error"
    assert "syntax error" in r.reason and "SyntaxError" in r.stderr


def test_stdin() -> None:
    r = run_python("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", QUICK, stdin="1 2 3\n4")
    assert r.status == "pass" and r.stdout == "10\n"


def test_stdin_closed_by_default() -> None:
    r = run_python("import sys\nprint(repr(sys.stdin.read()))", QUICK)
    assert r.status == "pass" and r.stdout == "''\n"


def test_large_stdin_is_streamed() -> None:
    data = "x" * (2 * 1024 * 1024)
    r = run_python("import sys\nprint(len(sys.stdin.read()))", QUICK, stdin=data)
    assert r.status == "pass" and r.stdout == f"{len(data)}\n"


def test_workdir_is_writable_and_home() -> None:
    code = """
        import os, tempfile
        open("out.txt", "w").write("ok")
        with tempfile.NamedTemporaryFile() as f:
            f.write(b"x")
        print(open("out.txt").read(), os.environ["HOME"] == os.getcwd() == os.environ["TMPDIR"])
    """
    r = run_python(textwrap.dedent(code), QUICK)
    assert r.status == "pass", r.stderr
    assert r.stdout == "ok True\n"


def test_run_tests_humaneval_style() -> None:
    solution = "def add(a, b):\n    return a + b\n"
    tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
    assert run_tests(solution, tests, "add", QUICK).status == "pass"
    wrong = "def add(a, b):\n    return a - b\n"
    r = run_tests(wrong, tests, "add", QUICK)
    assert r.status == "fail" and "AssertionError" in r.reason
    # Without an entry point the tests are plain statements.
    assert run_tests(solution, "assert add(1, 1) == 2", None, QUICK).status == "pass"
    assert run_tests(solution, tests, "add; import os", QUICK).status == "error"


def test_limits_validated() -> None:
    with pytest.raises(ConfigError):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ConfigError):
        SandboxLimits(memory_mb=1)


def test_isolation_is_detected_and_cached() -> None:
    assert sandbox.isolation_mode() in ("namespaces", "uid", "rlimits")
    assert sandbox.isolation_details()["name"] == sandbox.isolation_mode()
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "--mount", "--pid", "--fork", "true"]).returncode == 0:
        # The kernel lets us create namespaces, so a weaker mode would be a silent regression.
        assert strong(), sandbox.isolation_details()


# -------------------------------------------------------------------------------------------- hostile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_named(comm: str) -> list[int]:
    """Live (non-zombie) processes with this name; zombies are dead and only wait for their reaper."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != comm:
                    continue
                if "State:\tZ" not in (entry / "status").read_text():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_infinite_loop_times_out() -> None:
    start = time.monotonic()
    r = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=1.5))
    assert r.status == "timeout" and "wall-clock" in r.reason
    assert time.monotonic() - start < 4


def test_sleeping_program_times_out() -> None:
    r = run_python("import time\ntime.sleep(60)", SandboxLimits(timeout_s=1))
    assert r.status == "timeout" and r.seconds < 3


def test_cpu_limit() -> None:
    r = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=8, cpu_s=1))
    assert r.status == "timeout" and "CPU" in r.reason and r.seconds < 6


@pytest.mark.parametrize(
    "code",
    ["x = bytearray(10 * 1024**3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"],
    ids=["10GB-at-once", "growing"],
)
def test_memory_bomb(code: str) -> None:
    r = run_python(code, SandboxLimits(timeout_s=10, memory_mb=256))
    assert r.status == "error", r
    assert "memory" in r.reason.lower() or "MemoryError" in r.stderr
    assert r.seconds < 8


def _comm_prefix(marker: str) -> str:
    # prctl(PR_SET_NAME) lets the test find the program's processes in /proc afterwards.
    return f"import ctypes, os, time\nctypes.CDLL(None).prctl(15, ctypes.c_char_p({marker.encode()!r}), 0, 0, 0)\n"


def test_fork_flood_is_capped() -> None:
    marker = "ioafl" + secrets.token_hex(4)
    code = _comm_prefix(marker) + textwrap.dedent(
        """
        ok = failed = 0
        for _ in range(60):  # bounded even if the limit fails
            try:
                pid = os.fork()
            except OSError:
                failed += 1
                continue
            if pid == 0:
                time.sleep(20)
                os._exit(0)
            ok += 1
        print(ok, failed, flush=True)
        """
    )
    r = run_python(code, SandboxLimits(timeout_s=5, max_processes=8))
    assert r.status == "pass", r
    ok, failed = map(int, r.stdout.split())
    assert ok < 8 and failed > 0
    # The sleeping children did not outlive the run (PID namespace / uid kill).
    time.sleep(0.2)
    assert _processes_named(marker) == []


def test_fork_bomb_contained() -> None:
    marker = "ioafb" + secrets.token_hex(4)
    # Exponential but bounded (at most 2**10 processes if every limit failed), and sleeps afterwards
    # so only the timeout ends it.
    code = _comm_prefix(marker) + textwrap.dedent(
        """
        for _ in range(10):
            try:
                os.fork()
            except OSError:
                pass
        time.sleep(30)
        """
    )
    start = time.monotonic()
    r = run_python(code, SandboxLimits(timeout_s=3, max_processes=16))
    assert r.status == "timeout"
    assert time.monotonic() - start < 6
    time.sleep(0.2)
    assert _processes_named(marker) == []


def test_background_process_killed_after_exit() -> None:
    marker = "ioabg" + secrets.token_hex(4)
    code = _comm_prefix(marker) + textwrap.dedent(
        """
        if os.fork() == 0:
            os.setsid()  # tries to escape the process group
            time.sleep(30)
            os._exit(0)
        print("parent done")
        """
    )
    r = run_python(code, QUICK)
    assert r.status == "pass" and r.seconds < 3
    time.sleep(0.2)
    assert _processes_named(marker) == []


def test_write_outside_workdir(tmp_path: Path) -> None:
    tag = secrets.token_hex(6)
    if not separate_uid():
        pytest.skip("file-system protection needs root or namespaces")
    targets = [Path.home() / f"ioa-sandbox-canary-{tag}", Path(f"/etc/ioa-sandbox-canary-{tag}")]
    escape = Path(tempfile.gettempdir()) / f"ioa-escape-{tag}"  # ~/.. from the sandbox's HOME
    if strong():  # world-writable directories are only protected by the read-only mount namespace
        targets += [Path(f"/{d}/ioa-sandbox-canary-{tag}") for d in ("tmp", "var/tmp", "dev/shm")]
        targets.append(escape)
    code = textwrap.dedent(
        f"""
        import os
        results = []
        for path in {[str(t) for t in targets]!r}:
            try:
                with open(path, "w") as f:
                    f.write("escaped")
                results.append("WROTE " + path)
            except OSError as e:
                results.append(type(e).__name__)
        print(results)
        """
    )
    try:
        r = run_python(code, QUICK)
        assert r.status == "pass", r
        assert "WROTE" not in r.stdout
        for target in targets:
            assert not target.exists()
    finally:
        for target in [*targets, escape]:
            target.unlink(missing_ok=True)


def test_delete_outside_workdir(tmp_path: Path) -> None:
    if not separate_uid():
        pytest.skip("file-system protection needs root or namespaces")
    canaries = [Path(tempfile.gettempdir()) / f"ioa-sandbox-canary-{secrets.token_hex(6)}"]
    # A world-writable directory with a world-writable file: permissions alone would allow deletion,
    # so only the read-only mount namespace protects it.
    open_dir = Path(tempfile.gettempdir()) / f"ioa-sandbox-open-{secrets.token_hex(6)}"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    if strong():
        canaries.append(open_dir / "canary")
    try:
        for canary in canaries:
            canary.write_text("keep me")
            canary.chmod(0o666 if strong() else 0o644)
        code = textwrap.dedent(
            f"""
            import os, shutil
            for path in {[str(c) for c in canaries]!r}:
                for attempt in (os.remove, lambda p: open(p, "w").close()):
                    try:
                        attempt(path)
                        print("DAMAGED", path)
                    except OSError as e:
                        print(type(e).__name__)
            shutil.rmtree({str(open_dir)!r}, ignore_errors=True)
            """
        )
        r = run_python(code, QUICK)
        assert r.status == "pass", r
        assert "DAMAGED" not in r.stdout
        for canary in canaries:
            assert canary.read_text() == "keep me"
    finally:
        for canary in canaries:
            canary.unlink(missing_ok=True)
        open_dir.rmdir()


def test_network_blocked() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = textwrap.dedent(
        f"""
        import socket
        for attempt in range(2):
            try:
                s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
                s.sendall(b"leak")
                print("CONNECTED")
            except OSError as e:
                print("blocked", type(e).__name__, e)
        try:
            socket.getaddrinfo("example.com", 80)
            print("DNS")
        except OSError as e:
            print("dns blocked", type(e).__name__)
        """
    )
    try:
        r = run_python(code, QUICK)
        assert "CONNECTED" not in r.stdout, r
        assert "blocked" in r.stdout or "PermissionError" in r.stderr, r
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_environment_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "ioa-fake-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("IOA_FAKE_API_KEY", secret)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    code = textwrap.dedent(
        f"""
        import os
        print(dict(os.environ))
        for pid in (os.getppid(), {os.getpid()}, 1):
            try:
                print(open(f"/proc/{{pid}}/environ", "rb").read())
            except OSError as e:
                print(type(e).__name__)
        """
    )
    r = run_python(code, QUICK)
    assert r.status == "pass", r
    assert "IOA_FAKE_API_KEY" not in r.stdout
    if separate_uid():
        assert secret not in r.stdout  # not even through /proc/<parent>/environ
    else:
        assert secret not in r.stdout.splitlines()[0]


def test_printing_100mb_is_truncated() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    code = "import sys\nchunk = 'x' * (1024 * 1024)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
    start = time.monotonic()
    r = run_python(code, SandboxLimits(timeout_s=10, output_bytes=65536))
    assert time.monotonic() - start < 5
    assert r.status == "error" and r.truncated and "exceeded" in r.reason
    assert len(r.stdout) == 65536
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 50 * 1024  # never buffered the 100 MB


def test_stderr_flood_is_truncated() -> None:
    r = run_python("import sys\nwhile True:\n    sys.stderr.write('e' * 4096)\n", SandboxLimits(timeout_s=5))
    assert r.status == "error" and r.truncated and len(r.stderr) == 65536


def test_cannot_kill_parent() -> None:
    me = os.getpid()
    targets = ["os.getppid()"]
    if separate_uid():
        targets += [str(me), "-1", f"-{os.getpgid(0)}"]  # only safe to try when the uid is separate
    code = textwrap.dedent(
        f"""
        import os, signal
        for target in [{", ".join(targets)}]:
            try:
                os.kill(target, signal.SIGKILL)
                print("sent", target)
            except OSError as e:
                print(type(e).__name__, target)
        """
    )
    r = run_python(code, QUICK)
    assert _alive(me)
    assert r.status in ("pass", "error")  # kill(-1) may take the program itself down
    # The sandbox still works afterwards.
    assert run_python("print(1)", QUICK).status == "pass"


def test_no_privilege_or_capabilities() -> None:
    if not separate_uid():
        pytest.skip("runs as the caller's user")
    code = textwrap.dedent(
        """
        import os
        status = open("/proc/self/status").read()
        caps = [line for line in status.splitlines() if line.startswith(("CapEff", "NoNewPrivs"))]
        print(os.getuid(), os.geteuid(), caps)
        """
    )
    r = run_python(code, QUICK)
    assert r.status == "pass", r
    uid = int(r.stdout.split()[0])
    assert uid != 0
    assert "CapEff:\\t0000000000000000" in r.stdout and "NoNewPrivs:\\t1" in r.stdout


def test_processes_of_host_invisible() -> None:
    if not strong():
        pytest.skip("needs a PID namespace")
    r = run_python("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))", QUICK)
    assert r.status == "pass", r
    assert os.getpid() not in eval(r.stdout)  # only the sandbox's own processes are listed
    assert max(eval(r.stdout)) < 10


# --------------------------------------------------------------------------- fallback modes (smoke)


def _mode(name: str) -> sandbox._Mode:
    interps = sandbox._interpreter_candidates()
    if name == "userns":
        hide, expose = sandbox._hidden_and_exposed()
        return sandbox._Mode("namespaces", True, True, False, hide=hide, expose=expose, interpreters=interps)
    if name == "uid":
        return sandbox._Mode("uid", False, False, True, interpreters=interps)
    return sandbox._Mode("rlimits", False, False, False, interpreters=interps)


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid fallback needs root")
def test_uid_fallback_blocks_network_and_privilege() -> None:
    mode = _mode("uid")
    r = sandbox._execute("import os\nprint(os.getuid())", QUICK, None, mode)
    assert r.status == "pass" and int(r.stdout) != 0
    r = sandbox._execute("import socket\nsocket.create_connection(('127.0.0.1', 9))", QUICK, None, mode)
    assert r.status == "fail" and "network access is disabled" in r.reason
    r = sandbox._execute("open('/etc/ioa-canary', 'w')", QUICK, None, mode)
    assert r.status == "fail" and "Permission" in r.reason
    assert not Path("/etc/ioa-canary").exists()


def test_rlimits_fallback_runs_and_guards_network() -> None:
    mode = _mode("rlimits")
    r = sandbox._execute("print(6 * 7)", QUICK, None, mode)
    assert (r.status, r.stdout) == ("pass", "42\n")
    r = sandbox._execute("import socket\nsocket.socket()", QUICK, None, mode)
    assert r.status == "fail" and "network access is disabled" in r.reason


def test_userns_mode_runs_contained() -> None:
    """The mode used by non-root users (exercised here even when we are root)."""
    if not strong():
        pytest.skip("namespaces unavailable")
    mode = _mode("userns")
    code = textwrap.dedent(
        """
        import os, socket
        print(os.getuid())
        for path in (CANARY, "/etc/ioa-userns-canary"):
            try:
                open(path, "w")
                print("WROTE")
            except OSError:
                pass
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1)
        except OSError as e:
            print(e.errno)
        """
    )
    canary = Path(tempfile.gettempdir()) / "ioa-userns-canary"
    r = sandbox._execute(code.replace("CANARY", repr(str(canary))), QUICK, None, mode)
    if r.status == "error" and "setup failed" in r.reason:
        pytest.skip(f"user namespaces unavailable here: {r.reason}")
    assert r.status == "pass", r
    uid, *rest = r.stdout.split()
    assert uid == "65534" and "WROTE" not in rest and rest[-1] == "101"  # ENETUNREACH
    assert not canary.exists()


def test_mounts_do_not_leak_to_host() -> None:
    if not strong():
        pytest.skip("needs a mount namespace")
    before = Path("/proc/self/mountinfo").read_text()
    assert run_python("print(1)", QUICK).status == "pass"
    after = Path("/proc/self/mountinfo").read_text()
    assert "ioa-sandbox-" not in after
    assert before == after
    probe = Path(tempfile.gettempdir()) / f"ioa-host-writable-{secrets.token_hex(4)}"
    probe.write_text("host can still write")  # the host's / was not made read-only
    probe.unlink()


def test_home_hidden_but_interpreter_usable() -> None:
    if not strong():
        pytest.skip("needs a mount namespace")
    home = os.path.realpath(Path.home())
    if home not in sandbox.isolation_details()["hide"]:  # type: ignore[operator]
        pytest.skip("home directory holds the temp dir, so it stays visible")
    code = f"import os, sys\nprint(sys.version_info[:2])\nprint(os.listdir({home!r}))"
    r = run_python(code, QUICK)
    assert r.status == "pass", r
    version, listing = r.stdout.splitlines()
    assert version == str(tuple(sys.version_info[:2]))
    real_entries = set(os.listdir(home)) if os.access(home, os.R_OK) else set()
    visible = set(eval(listing))
    # Only the directories leading to the Python installation may remain visible.
    assert visible <= real_entries
    assert len(visible) <= 1


def test_per_mount_readonly_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels without mount_setattr (< 5.12) take the per-mount bind-remount path."""
    if not strong():
        pytest.skip("needs a mount namespace")
    sandbox._get_mode()
    patched = sandbox._LAUNCHER.replace("MOUNT_ATTR_RDONLY = 442", "MOUNT_ATTR_RDONLY = 999999")
    assert patched != sandbox._LAUNCHER
    monkeypatch.setattr(sandbox, "_LAUNCHER", patched)
    tag = secrets.token_hex(4)
    paths = [os.path.join(tempfile.gettempdir(), f"ioa-fb-{tag}"), f"/dev/shm/ioa-fb-{tag}", f"/var/tmp/ioa-fb-{tag}"]
    code = textwrap.dedent(
        f"""
        for path in {paths!r}:
            try:
                open(path, "w").write("x")
                print("WROTE", path)
            except OSError as e:
                print(e.errno)
        open("inside", "w").write("ok")
        """
    )
    try:
        r = run_python(code, QUICK)
        assert r.status == "pass", r
        assert "WROTE" not in r.stdout
    finally:
        for path in paths:
            Path(path).unlink(missing_ok=True)


def test_concurrent_runs() -> None:
    from concurrent.futures import ThreadPoolExecutor

    code = "import os, time\ntime.sleep(0.2)\nprint(os.getpid(), {})"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run_python(code.format(i), QUICK), range(8)))
    assert [r.status for r in results] == ["pass"] * 8
    assert [r.stdout.split()[1] for r in results] == [str(i) for i in range(8)]


def test_sandbox_dies_with_its_caller() -> None:
    """A crashed pipeline must not leave sandboxed programs running."""
    marker = "ioacd" + secrets.token_hex(4)
    program = _comm_prefix(marker) + "print('started', flush=True)\ntime.sleep(60)\n"
    # The caller reports its work directories, so that the test can remove the one it leaks when killed.
    caller_code = textwrap.dedent(
        f"""
        import tempfile
        from ioa.sandbox import SandboxLimits, run_python
        _mkdtemp = tempfile.mkdtemp
        def mkdtemp(*args, **kwargs):
            path = _mkdtemp(*args, **kwargs)
            print(path, flush=True)
            return path
        tempfile.mkdtemp = mkdtemp
        run_python({program!r}, SandboxLimits(timeout_s=60))
        """
    )
    caller = subprocess.Popen([sys.executable, "-c", caller_code], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not _processes_named(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_named(marker), "the sandboxed program never started"
    finally:
        caller.kill()
        workdirs, _ = caller.communicate()
    deadline = time.monotonic() + 5
    while _processes_named(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_named(marker) == []
    for workdir in workdirs.split():
        shutil.rmtree(workdir, ignore_errors=True)
