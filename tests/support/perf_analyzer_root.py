"""NVIDIA's perf_analyzer, runnable on this machine: natively or inside a cached Debian root.

perf_analyzer's PyPI wheels (`perf-analyzer`) are built for glibc >= 2.38
(manylinux_2_38); on an older host (Debian 12 has 2.36) pip installs a binary-less
placeholder. Where the host's own install has the binary, it is used as it is. Otherwise
`ensure_root` builds a Debian trixie root with `debootstrap` (from the Debian mirror and
proxy the host's apt uses), installs `perf-analyzer` into a venv inside it with pip (the
host's CA bundle and pip settings copied in), and `PerfAnalyzer.run` runs the binary there
under `chroot`. A chroot shares the host's network, so a server on 127.0.0.1 is reachable;
the host's /dev/shm is bind-mounted into the root for each run, so shared-memory regions
perf_analyzer creates are the ones the server (outside) opens.

The root is cached outside the repository (`$FERRY_PERF_ANALYZER_ROOT`, default
`${XDG_CACHE_HOME:-~/.cache}/ferry/perf-analyzer-trixie`). Building it is idempotent and
safe to race: one file lock serialises builders, the root is built in a `.partial` folder
whose marker file is written last and which is renamed into place only when complete, so a
half-built root (an interrupted build) is never used and is rebuilt. Measured on a 2-core
CI machine: 40-170 s (by its load) and 270 MB the first time; later uses find the marker
at once.

Building needs root (debootstrap, chroot, mount) and the network; `python
tests/support/perf_analyzer_root.py` builds it ahead of time and prints where it is.

Used by tests/compat/test_perf_analyzer.py and benchmarks/perf_analyzer.py.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import importlib.util
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SUITE = "trixie"
PERF_ANALYZER_VERSION = "2.60.0"
# perf_analyzer dlopens libcudart.so whenever `--shared-memory` is given, system shared
# memory included (its shared-memory data manager holds a CUDA runtime handle), and aborts
# without it. The runtime library loads without a GPU; it is only called for CUDA memory.
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12==12.9.79"
# Packages beyond debootstrap's minbase: Python with venv (for pip) and CA certificates.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# What the marker file holds: a root built from another recipe is rebuilt.
RECIPE = (
    f"suite={SUITE} perf-analyzer=={PERF_ANALYZER_VERSION} {CUDA_RUNTIME} "
    f"packages={','.join(PACKAGES)}\n"
)
MARKER = ".ferry-perf-analyzer-complete"
VENV_IN_ROOT = "/opt/perf-analyzer"
HOST_CA_IN_ROOT = "/etc/ssl/certs/ferry-host-ca-bundle.crt"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The first build took 40-170 s on a 2-core CI machine (170 s with a load average of 8);
# the bound leaves room for a slow mirror. tests/compat/test_perf_analyzer.py raises its
# pytest timeout to fit it.
DEFAULT_BUILD_TIMEOUT_S = 540.0
ROOT_ENV = "FERRY_PERF_ANALYZER_ROOT"
BUILD_TIMEOUT_ENV = "FERRY_PERF_ANALYZER_BUILD_TIMEOUT"
MIRROR_ENV = "FERRY_DEBIAN_MIRROR"
# pip settings worth carrying into the root; host paths (find-links) mean nothing there.
PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "retries")
PROXY_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class PerfAnalyzerUnavailable(RuntimeError):
    """perf_analyzer cannot run here; the message says why and what would fix it."""


@dataclass(frozen=True)
class PerfAnalyzerRun:
    """One finished perf_analyzer run: exit status, combined output, `-f` CSV rows."""

    returncode: int
    output: str
    rows: list[dict[str, str]]
    seconds: float


@dataclass(frozen=True)
class PerfAnalyzer:
    """A runnable perf_analyzer binary; `chroot` is the root it runs in, None for the host.

    `binary` is the path as perf_analyzer's own process sees it (inside the root when
    `chroot` is set). The binary is run directly, not through the wheel's Python wrapper,
    because that wrapper drops the binary's exit status (it always exits 0).
    """

    binary: str
    chroot: Path | None = None

    def describe(self) -> str:
        where = f"chroot {self.chroot}" if self.chroot else "host"
        return f"perf_analyzer {PERF_ANALYZER_VERSION if self.chroot else ''} ({where})".strip()

    def run(self, args: Sequence[str], timeout: float = 120.0) -> PerfAnalyzerRun:
        """Run `perf_analyzer ARGS -f CSV` and return its status, output and CSV rows.

        Never raises for perf_analyzer's own failures (the caller asserts on them); a run
        past `timeout` is killed (its whole process group) and reported with status -9.
        """
        with self._csv_path() as (csv_inside, csv_outside), self.shared_memory():
            command = [self.binary, *args, "-f", csv_inside]
            if self.chroot is not None:
                command = [_tool("chroot"), str(self.chroot), *command]
            started = time.monotonic()
            returncode, output = _run_bounded(command, timeout, env=self._env())
            seconds = time.monotonic() - started
            text = csv_outside.read_text() if csv_outside.exists() else ""
        return PerfAnalyzerRun(returncode, output, list(csv.DictReader(io.StringIO(text))), seconds)

    def _env(self) -> dict[str, str]:
        if self.chroot is None:
            return dict(os.environ)
        # The root's own environment: the host's PATH and Python settings mean nothing there.
        return {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}

    @contextlib.contextmanager
    def _csv_path(self) -> Iterator[tuple[str, Path]]:
        base = self.chroot / "tmp" if self.chroot is not None else None
        with tempfile.TemporaryDirectory(prefix="perf-analyzer-", dir=base) as folder:
            outside = Path(folder) / "result.csv"
            inside = outside if self.chroot is None else "/" / outside.relative_to(self.chroot)
            yield str(inside), outside

    @contextlib.contextmanager
    def shared_memory(self) -> Iterator[None]:
        """Bind the host's /dev/shm over the root's for the run; always unmounted after."""
        if self.chroot is None:
            yield
            return
        target = self.chroot / "dev" / "shm"
        target.mkdir(parents=True, exist_ok=True)
        _check([_tool("mount"), "--bind", "/dev/shm", str(target)], 30, "bind-mount /dev/shm")
        try:
            yield
        finally:
            _unmount(target)


def root_dir() -> Path:
    """Where the cached root lives (outside the repository)."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "ferry" / f"perf-analyzer-{SUITE}").resolve()


def build_timeout() -> float:
    return float(os.environ.get(BUILD_TIMEOUT_ENV) or DEFAULT_BUILD_TIMEOUT_S)


def native_binary() -> str | None:
    """The host's perf_analyzer binary, where pip could install the real wheel here."""
    spec = importlib.util.find_spec("perf_analyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "perf_analyzer"
        if binary.is_file() and os.access(binary, os.X_OK):
            probe = subprocess.run([binary, "--version"], capture_output=True, timeout=30)
            if probe.returncode == 0:
                return str(binary)
    return None


def find_perf_analyzer(timeout: float | None = None) -> PerfAnalyzer:
    """The host's perf_analyzer if it has one, else the one in the cached root (built now
    if need be, within `timeout` seconds). Raises PerfAnalyzerUnavailable saying why."""
    native = native_binary()
    if native is not None:
        return PerfAnalyzer(native)
    root = ensure_root(build_timeout() if timeout is None else timeout)
    return PerfAnalyzer(_binary_in_root(root), root)


def ensure_root(timeout: float = DEFAULT_BUILD_TIMEOUT_S) -> Path:
    """Return the complete root, building it first when it is missing or half-built.

    Holds an exclusive lock on `<root>.lock` throughout, so concurrent callers (two test
    sessions, a test and the benchmark) wait for one build instead of racing it.
    """
    final = root_dir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        raise PerfAnalyzerUnavailable(
            "the host has no perf_analyzer binary (its wheels need glibc >= 2.38) and "
            "building a Debian root for it needs root (debootstrap, chroot, mount)"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.with_name(final.name + ".lock")):
        # A /dev/shm bind left by a killed run is harmless (the next run binds over it)
        # and is not undone here: another process may be mid-run in this root.
        if _complete(final):
            return final
        deadline = time.monotonic() + timeout
        partial = final.with_name(final.name + ".partial")
        for stale in (final, partial):
            remove_root(stale)
        log = final.with_name(final.name + ".build.log")
        try:
            _build(partial, deadline, log)
        except PerfAnalyzerUnavailable as error:
            raise PerfAnalyzerUnavailable(f"{error} (build log: {log})") from None
        (partial / MARKER).write_text(RECIPE)
        partial.rename(final)
    return final


def _complete(root: Path) -> bool:
    marker = root / MARKER
    return marker.is_file() and marker.read_text() == RECIPE


def _binary_in_root(root: Path) -> str:
    found = sorted(root.glob("opt/perf-analyzer/lib/python3*/site-packages/perf_analyzer/bin/*"))
    if not found:
        raise PerfAnalyzerUnavailable(f"{root} is marked complete but has no perf_analyzer")
    return "/" + str(found[0].relative_to(root))


def _build(root: Path, deadline: float, log: Path) -> None:
    debootstrap = _find_tool("debootstrap") or _install_debootstrap(deadline)
    mirror = debian_mirror()
    env = {**os.environ, **_apt_proxy_env()}
    with open(log, "w") as sink:
        sink.write(f"debootstrap {SUITE} from {mirror}\n")
        sink.flush()
        _step(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                mirror,
            ],
            deadline,
            sink,
            "debootstrap",
            env=env,
        )
        # debootstrap's downloaded packages are not needed once they are installed.
        for cached in (root / "var/cache/apt").glob("**/*"):
            if cached.is_file() and cached.suffix in {".deb", ".bin"}:
                cached.unlink()
        _copy_pip_settings(root)
        pip_env = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            **{key: os.environ[key] for key in PROXY_ENV if key in os.environ},
        }
        cudart = f"{VENV_IN_ROOT}/lib/python3*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.*"
        install = (
            f"python3 -m venv {VENV_IN_ROOT} && {VENV_IN_ROOT}/bin/pip install --no-cache-dir "
            f"perf-analyzer=={PERF_ANALYZER_VERSION} {CUDA_RUNTIME} && "
            f"ln -sf $(ls {cudart} | head -n 1) /usr/local/lib/libcudart.so && /sbin/ldconfig"
        )
        _step(
            [_tool("chroot"), str(root), "/bin/sh", "-c", install], deadline, sink, "pip", pip_env
        )
        binary = _binary_in_root(root)
        _step(
            [_tool("chroot"), str(root), binary, "--version"],
            deadline,
            sink,
            "perf_analyzer",
            pip_env,
        )


def _install_debootstrap(deadline: float) -> str:
    if shutil.which("apt-get") is None:
        raise PerfAnalyzerUnavailable("debootstrap is not installed and there is no apt-get")
    install = ["apt-get", "install", "-y", "-qq", "debootstrap"]
    returncode, output = _run_bounded(install, deadline - time.monotonic())
    if returncode != 0:  # a fresh machine may have no package lists yet
        _run_bounded(["apt-get", "update", "-qq"], deadline - time.monotonic())
        returncode, output = _run_bounded(install, deadline - time.monotonic())
    found = _find_tool("debootstrap")
    if returncode != 0 or found is None:
        raise PerfAnalyzerUnavailable(f"apt-get install debootstrap failed:\n{output[-2000:]}")
    return found


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses (so a local mirror or proxy is used alike),
    unless $FERRY_DEBIAN_MIRROR names another."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV]
    texts: list[str] = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.suffix in {".list", ".sources"} or path.name == "sources.list":
            with contextlib.suppress(OSError):
                texts.append(path.read_text())
    for text in texts:
        # One-line format ("deb [opts] URI suite ...") and deb822 ("URIs: URI").
        for uri in re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M) + re.findall(
            r"^URIs:\s*(\S+)", text, re.M
        ):
            if "debian" in uri and "security" not in uri:
                return uri
    return DEFAULT_MIRROR


def _apt_proxy_env() -> dict[str, str]:
    """apt's configured HTTP proxy as debootstrap's `http_proxy`, where there is one."""
    if shutil.which("apt-config") is None or "http_proxy" in os.environ:
        return {}
    done = subprocess.run(
        ["apt-config", "shell", "PROXY", "Acquire::http::Proxy"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    match = re.search(r"PROXY='([^']+)'", done.stdout)
    return {"http_proxy": match.group(1)} if match else {}


def _copy_pip_settings(root: Path) -> None:
    """Copy the host's CA bundle and pip settings into the root, so pip there reaches the
    package index the way the host's pip does (through the same TLS inspection, index or
    proxy)."""
    settings = _host_pip_settings()
    bundle = settings.pop("cert", None) or os.environ.get("PIP_CERT")
    bundle = bundle or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    lines = ["[global]"]
    if Path(bundle).is_file():
        target = root / HOST_CA_IN_ROOT.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle, target)
        lines.append(f"cert = {HOST_CA_IN_ROOT}")
    lines += [f"{key} = {value}" for key, value in settings.items()]
    (root / "etc" / "pip.conf").write_text("\n".join(lines) + "\n")


def _host_pip_settings() -> dict[str, str]:
    """The host pip's effective settings (config files and PIP_* variables) worth copying."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    settings: dict[str, str] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line.strip())
        if not match:
            continue
        key, value = match.groups()
        key = "timeout" if key == "default-timeout" else key
        if key == "cert" or key in PIP_KEYS:
            settings[key] = value
    return settings


def _step(
    command: list[str], deadline: float, sink: io.TextIOBase, what: str, env: dict[str, str]
) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PerfAnalyzerUnavailable(f"building the perf_analyzer root ran out of time at {what}")
    started = time.monotonic()
    returncode, output = _run_bounded(command, remaining, env=env)
    took = time.monotonic() - started
    sink.write(f"$ {' '.join(command)}\n{output}\n({what}: exit {returncode} after {took:.0f} s)\n")
    sink.flush()
    if returncode != 0:
        why = "timed out" if returncode == -signal.SIGKILL else f"failed (exit {returncode})"
        raise PerfAnalyzerUnavailable(f"{what} {why}:\n{output[-2000:]}")


def _run_bounded(
    command: Sequence[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `command` with output captured; past `timeout`, kill its process group (the
    command's own children too: debootstrap and pip start many) and return -SIGKILL. An
    interruption kills the group too, then propagates."""
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=max(timeout, 1.0))
        return process.returncode, output
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return -signal.SIGKILL, output + f"\n(killed after {timeout:.0f} s)"
    except BaseException:
        # Interrupted (Ctrl-C, pytest-timeout): leave no build or run behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def _find_tool(name: str) -> str | None:
    """A host tool's full path, sbin included (commands run with the root's PATH)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin:/sbin"]))


def _tool(name: str) -> str:
    found = _find_tool(name)
    if found is None:
        raise PerfAnalyzerUnavailable(f"{name} is not installed on this host")
    return found


def _check(command: list[str], timeout: float, what: str) -> None:
    returncode, output = _run_bounded(command, timeout)
    if returncode != 0:
        raise PerfAnalyzerUnavailable(f"{what} failed: {output.strip()}")


def _mounts_below(folder: Path) -> list[Path]:
    """Mount points at or under `folder`, deepest first (the order to unmount them)."""
    prefix = str(folder)
    points = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with spaces and the like octal-escaped.
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(Path(point))
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def _unmount(target: Path) -> None:
    """Unmount `target`; lazily when it is busy, so the mount never outlives the caller."""
    umount = _tool("umount")
    if subprocess.run([umount, str(target)], capture_output=True, timeout=30).returncode:
        subprocess.run([umount, "--lazy", str(target)], capture_output=True, timeout=30)


def _unmount_below(folder: Path) -> None:
    for point in _mounts_below(folder):
        _unmount(point)
    if _mounts_below(folder):
        raise PerfAnalyzerUnavailable(f"cannot unmount what is mounted under {folder}")


def remove_root(folder: Path) -> None:
    """Delete a (partial) root: unmount what is mounted inside it, then delete without
    crossing into any file system still mounted there, so a bind mount of /dev/shm left
    by a killed run can never take the host's files along."""
    _unmount_below(folder)
    if folder.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], check=True, timeout=300)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


if __name__ == "__main__":
    started = time.monotonic()
    try:
        found = find_perf_analyzer()
    except PerfAnalyzerUnavailable as error:
        sys.exit(f"perf_analyzer unavailable: {error}")
    print(f"{found.describe()}: {found.binary} ready after {time.monotonic() - started:.0f} s")
