"""Runs untrusted Python (a candidate's train.py, or the eval worker holding its model) in bubblewrap.

Theory of operation. The sandboxed process sees a new, read-only root holding only what Python
needs: /usr and /lib*, a few files of /etc, the interpreter's prefixes (the venv and the Python it
was made from, each at its own path, nothing else of the home folder), the harness package at
/autoswarm/harness/trainer, the work folder at /autoswarm/work (writable only while training) and,
while training, train.bin with its metadata at /autoswarm/data. It runs as uid 1000 in new user,
pid, network, ipc, uts and cgroup namespaces (no network at all, not even the host's loopback), in
a new session (no terminal injection), and dies with its parent. /tmp and /dev/shm are small private
tmpfs mounts. GPU device nodes are bound through when the profile uses CUDA.

Limits. Address space (RLIMIT_AS) on CPU only: the CUDA driver reserves terabytes of virtual
memory, so on CUDA a watchdog sums the resident memory of the process tree instead (and on the CPU
profile of a CUDA build of torch, whose address-space limit is widened for its libraries).
CUDA. Before the first CUDA sandbox the host initializes CUDA once, so that /dev/nvidia-uvm exists
when the device nodes are bound; the sandbox inherits the CUDA, Triton and PyTorch variables of the
caller's environment (passed_env), but never the compile-cache locations, which the harness sets. CPU seconds and
file size are bounded by rlimits everywhere; wall time by the caller, which kills the process group.

Knows nothing of training or evaluation: a spec and an argv in, a running process out.
"""
from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Mapping

from trainer.errors import TrainerError

SANDBOX_ROOT = Path("/autoswarm")
WORK_MOUNT = SANDBOX_ROOT / "work"
DATA_MOUNT = SANDBOX_ROOT / "data"
HARNESS_MOUNT = SANDBOX_ROOT / "harness"  # PYTHONPATH; the package sits at HARNESS_MOUNT/trainer
SANDBOX_UID = 1000
TMPFS_BYTES = 256 << 20  # /tmp inside the sandbox; it lives in host memory, so it stays small
SHM_BYTES = 64 << 20  # /dev/shm inside, also host memory
WATCHDOG_INTERVAL_S = 0.25
PREFLIGHT_TIMEOUT_S = 30.0
MAX_LINE_BYTES = 64 << 10  # a line longer than this is split
ENV_NO_SANDBOX = "AUTOSWARM_NO_SANDBOX"  # "1": run candidates without bubblewrap (explicit opt-out)

_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "passwd", "group",
              "localtime", "alternatives", "hosts")
# What a CUDA run inherits from the caller's environment: the settings a GPU image relies on for the
# driver, CUDA libraries, Triton and PyTorch. Everything else is dropped (--clearenv).
PASS_ENV_PREFIXES = ("CUDA_", "CUDNN_", "CUBLAS_", "CUBLASLT_", "NVIDIA_", "NCCL_", "TRITON_", "TORCH_",
                     "TORCHINDUCTOR_", "PYTORCH_", "INDUCTOR_")
PASS_ENV_NAMES = ("LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "CC", "CXX", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Set by the harness, never inherited: the compile caches (cache poisoning) and the interpreter's paths.
HARNESS_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TRITON_HOME", "TORCH_HOME", "TORCH_EXTENSIONS_DIR")
# Importing a CUDA build of torch maps its multi-GB libraries even on the CPU profile: the
# address-space limit gets this much more, and the RSS watchdog bounds real memory instead.
CUDA_TORCH_ADDRESS_SPACE_MB = 32 << 10
CUDA_INIT_TIMEOUT_S = 60.0
# Run on the host before a CUDA sandbox starts, until /dev/nvidia-uvm exists: the driver creates
# that node (through the setuid nvidia-modprobe) on the first CUDA initialization, and a sandbox
# can only bind nodes that exist when its argv is computed.
CUDA_INIT_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("nvidia-modprobe", "-u", "-c=0"),
    (sys.executable, "-c", "import ctypes; ctypes.CDLL('libcuda.so.1').cuInit(0)"),
)
DEV_DIR = Path("/dev")


class SandboxError(TrainerError, RuntimeError):
    """The sandbox cannot be set up as asked."""


class SandboxUnavailable(SandboxError):
    """bubblewrap is missing and the user did not opt out of sandboxing."""


class PathExposed(SandboxError):
    """A path that must stay hidden (node key, home folder, val.bin) would be visible inside."""


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    work_dir: Path
    work_writable: bool
    data_files: tuple[Path, ...] = ()  # bound read-only at DATA_MOUNT/<name>
    env: tuple[tuple[str, str], ...] = ()
    cuda: bool = False
    memory_limit_mb: int = 4096
    cpu_limit_s: int = 3600  # CPU seconds of the whole sandboxed process (all threads)
    file_limit_mb: int = 4096  # largest file the sandboxed code may write
    hidden: tuple[Path, ...] = ()  # must not be inside any bound path
    sandboxed: bool = True  # False: the explicit opt-out; the same limits, no isolation

    def __post_init__(self) -> None:
        if self.memory_limit_mb <= 0 or self.cpu_limit_s <= 0 or self.file_limit_mb <= 0:
            raise SandboxError("sandbox limits must be positive")
        for f in self.data_files:
            if f.name in ("val.bin",):
                raise PathExposed("val.bin must never be bound into a sandbox")


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def sandbox_opted_out(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return env.get(ENV_NO_SANDBOX, "") == "1"


def check_available(sandboxed: bool) -> None:
    if not sandboxed:
        return
    if find_bwrap() is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, so candidate code cannot be isolated; install it "
            f"(Debian: apt-get install bubblewrap) or opt out explicitly with --no-sandbox / {ENV_NO_SANDBOX}=1")
    problem = _preflight()
    if problem:
        raise SandboxUnavailable(
            f"bubblewrap cannot create its namespaces here ({problem}); containers often forbid user "
            f"namespaces. Allow them, or opt out explicitly with --no-sandbox / {ENV_NO_SANDBOX}=1")


@functools.lru_cache(maxsize=1)
def _preflight() -> str:
    """Runs an empty sandbox once per process: '' when it works, else bwrap's complaint."""
    bwrap = find_bwrap() or "bwrap"
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID)] + _system_binds() + ["--proc", "/proc", "--dev", "/dev", "--", "true"]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=PREFLIGHT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return ""
    return proc.stderr.decode("utf-8", "replace").strip()[:300] or f"exit {proc.returncode}"


def harness_dir() -> Path:
    return Path(__file__).resolve().parent


def _python_roots() -> list[Path]:
    """The folders the interpreter needs: its prefixes, de-duplicated, outermost first."""
    roots: list[Path] = []
    for p in sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
                     Path(sys.executable).resolve().parent.parent}, key=lambda p: len(p.parts)):
        if not any(p == r or r in p.parents for r in roots):
            roots.append(p)
    return roots


def _system_binds() -> list[str]:
    args: list[str] = []
    for name in ("usr", "lib", "lib32", "lib64", "libx32", "bin", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in _ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _check_hidden(binds: list[Path], hidden: tuple[Path, ...]) -> None:
    for secret in hidden:
        secret = secret.resolve()
        for bound in binds:
            bound = bound.resolve()
            if secret == bound or bound in secret.parents:
                raise PathExposed(f"{secret} would be visible in the sandbox through {bound}")


def sandbox_env(spec: SandboxSpec) -> dict[str, str]:
    """The whole environment of the sandboxed process: nothing leaks in from the caller's."""
    work = str(WORK_MOUNT) if spec.sandboxed else str(spec.work_dir)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "USER": "sandbox", "LOGNAME": "sandbox",
        "LANG": "C.UTF-8", "PYTHONPATH": str(HARNESS_MOUNT) if spec.sandboxed else str(harness_dir().parent),
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1",
        "TMPDIR": "/tmp" if spec.sandboxed else str(spec.work_dir / "tmp"),
        # compile caches go to the work folder: never shared between candidates (cache poisoning)
        "TORCHINDUCTOR_CACHE_DIR": f"{work}/.cache/inductor", "TRITON_CACHE_DIR": f"{work}/.cache/triton",
    }
    if spec.cuda:
        env.update(passed_env(os.environ))
    env.update(dict(spec.env))
    return env


def passed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's variables a CUDA sandbox inherits: PASS_ENV_PREFIXES and PASS_ENV_NAMES, less
    the ones the harness owns (HARNESS_ENV)."""
    return {k: v for k, v in environ.items()
            if (k.startswith(PASS_ENV_PREFIXES) or k in PASS_ENV_NAMES) and k not in HARNESS_ENV}


def cuda_device_nodes(dev: Path | None = None) -> list[str]:
    """The NVIDIA device nodes (and /dev/dri) a CUDA sandbox binds, as they exist now."""
    dev = DEV_DIR if dev is None else dev
    nodes = sorted(str(p) for p in dev.glob("nvidia*"))
    return nodes + ([str(dev / "dri")] if (dev / "dri").exists() else [])


_cuda_initialized: list[bool] = []  # set once the host has /dev/nvidia-uvm


def init_cuda_on_host(dev: Path | None = None, commands: tuple[tuple[str, ...], ...] | None = None) -> str:
    """Makes the driver create /dev/nvidia-uvm on the host; '' when it exists (or there is no GPU
    at all), else why not. Each command is bounded by CUDA_INIT_TIMEOUT_S; a failure is not fatal
    here: train.py then reports that torch sees no GPU."""
    dev = DEV_DIR if dev is None else dev
    if _cuda_initialized and dev == DEV_DIR:
        return ""
    if not (dev / "nvidiactl").exists() or (dev / "nvidia-uvm").exists():
        return ""
    problems = []
    for argv in CUDA_INIT_COMMANDS if commands is None else commands:
        try:
            subprocess.run(list(argv), capture_output=True, timeout=CUDA_INIT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{argv[0]}: {exc}")
        if (dev / "nvidia-uvm").exists():
            if dev == DEV_DIR:
                _cuda_initialized.append(True)
            return ""
    return "; ".join(problems) or f"{dev / 'nvidia-uvm'} still missing after initializing CUDA"


@functools.lru_cache(maxsize=1)
def torch_is_cuda_build() -> bool:
    """Whether the installed torch carries CUDA libraries (found without importing torch)."""
    import importlib.util

    found = importlib.util.find_spec("torch")
    if found is None or not found.submodule_search_locations:
        return False
    lib = Path(list(found.submodule_search_locations)[0]) / "lib"
    return any(lib.glob("libtorch_cuda*.so*")) or any(lib.glob("libc10_cuda*.so*"))


def address_space_limit_mb(spec: SandboxSpec) -> int | None:
    """RLIMIT_AS for the sandbox: none on CUDA (the driver reserves terabytes of address space),
    the memory bound on a CPU-only torch, and the memory bound plus CUDA_TORCH_ADDRESS_SPACE_MB on
    the CPU profile of a CUDA build, whose libraries alone map several GB."""
    if spec.cuda:
        return None
    return spec.memory_limit_mb + (CUDA_TORCH_ADDRESS_SPACE_MB if torch_is_cuda_build() else 0)


def needs_watchdog(spec: SandboxSpec) -> bool:
    """Real memory is watched (Watchdog) wherever the address-space limit does not bound it."""
    return spec.cuda or address_space_limit_mb(spec) != spec.memory_limit_mb


def rlimits(spec: SandboxSpec) -> dict[int, tuple[int, int]]:
    """The resource limits the sandboxed process starts under."""
    size = spec.file_limit_mb << 20
    limits = {resource.RLIMIT_CPU: (spec.cpu_limit_s, spec.cpu_limit_s + 5), resource.RLIMIT_FSIZE: (size, size),
              resource.RLIMIT_CORE: (0, 0)}
    mem_mb = address_space_limit_mb(spec)
    if mem_mb is not None:
        limits[resource.RLIMIT_AS] = (mem_mb << 20, mem_mb << 20)
    return limits


def build_argv(spec: SandboxSpec, argv: list[str]) -> list[str]:
    """The full command line: bwrap and its mounts, then `argv` (paths as seen inside)."""
    if not spec.sandboxed:
        return list(argv)
    bwrap = find_bwrap()
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    roots = _python_roots()
    binds = roots + [harness_dir(), spec.work_dir] + list(spec.data_files)
    _check_hidden(binds, spec.hidden)
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
    args += _system_binds()
    # The private /tmp comes before the interpreter's binds: bwrap mounts in order, and a venv
    # that lives under /tmp (a CI checkout, say) must stay visible on top of the empty tmpfs.
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm",
             "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
    for root in roots:
        args += ["--ro-bind", str(root), str(root)]
    args += ["--ro-bind", str(harness_dir()), str(HARNESS_MOUNT / "trainer")]
    if spec.cuda:
        # the driver needs its device nodes and reads /sys for the PCI topology
        init_cuda_on_host()
        for node in cuda_device_nodes():
            args += ["--dev-bind", node, node]
        args += ["--ro-bind", "/sys", "/sys"]
    args += ["--bind" if spec.work_writable else "--ro-bind", str(spec.work_dir), str(WORK_MOUNT)]
    for f in spec.data_files:
        args += ["--ro-bind", str(f), str(DATA_MOUNT / f.name)]
    args += ["--remount-ro", "/", "--chdir", str(WORK_MOUNT), "--clearenv"]
    for key, value in sandbox_env(spec).items():
        args += ["--setenv", key, value]
    return args + ["--"] + list(argv)


def _limits(spec: SandboxSpec) -> Callable[[], None]:
    limits = rlimits(spec)  # computed before the fork: the child only calls setrlimit

    def apply() -> None:  # runs in the child between fork and exec
        for which, value in limits.items():
            resource.setrlimit(which, value)
    return apply


def spawn(spec: SandboxSpec, argv: list[str], *, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Starts `argv` in the sandbox, in its own process group, with pipes for stdout and stderr."""
    check_available(spec.sandboxed)
    if not spec.sandboxed:
        (spec.work_dir / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen(
        build_argv(spec, argv), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=spec.work_dir, env=sandbox_env(spec) if not spec.sandboxed else {"PATH": "/usr/bin:/bin"},
        start_new_session=True, preexec_fn=_limits(spec), close_fds=True)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILLs the process group; bwrap's --die-with-parent and the pid namespace take the rest."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tree_rss_mb(root_pid: int) -> float:
    """Resident memory of `root_pid` and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields_ = f.read().rsplit(b")", 1)[1].split()
            children.setdefault(int(fields_[1]), []).append(int(entry))
            rss[int(entry)] = int(fields_[21])  # pages
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


@dataclass
class Watchdog:
    """Kills a process tree that outgrows its memory bound (the CUDA substitute for RLIMIT_AS)."""

    proc: subprocess.Popen[bytes]
    limit_mb: float
    tripped: bool = False
    peak_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Watchdog":
        self._thread = threading.Thread(target=self._run, name=f"watchdog-{self.proc.pid}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(WATCHDOG_INTERVAL_S) and self.proc.poll() is None:
            rss = tree_rss_mb(self.proc.pid)
            self.peak_mb = max(self.peak_mb, rss)
            if rss > self.limit_mb:
                self.tripped = True
                kill_tree(self.proc)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


class Tail:
    """The last `max_bytes` of a stream, safe to append to from several threads."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._lock = threading.Lock()
        self.total_bytes = 0

    def append(self, data: bytes) -> None:
        with self._lock:
            data = data[-self._max:]
            self._chunks.append(data)
            self._size += len(data)
            self.total_bytes += len(data)
            while self._size > self._max:
                self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")


def drain(pipe: IO[bytes], *tails: Tail, name: str, on_line: Callable[[str], None] | None = None) -> threading.Thread:
    """Reads `pipe` to its end on a thread, feeding every line to `tails` and `on_line`."""
    def run() -> None:
        callback = on_line
        for line in iter(lambda: pipe.readline(MAX_LINE_BYTES), b""):  # bounded: no newline, no limit
            for tail in tails:
                tail.append(line)
            if callback is not None:
                try:
                    callback(line[:4096].decode("utf-8", "replace").rstrip("\n"))
                except Exception:  # a failing progress printer must not stop the draining
                    callback = None
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def wait_bounded(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Waits for exit until `deadline` (time.monotonic); kills the tree and returns False past it."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return True
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        proc.wait(timeout=30.0)
        return False
