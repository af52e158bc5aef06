"""Where a result came from: the code commit, a preregistration's git blob sha, the package stack.

A study records these in its run folder (``provenance.json``) and in every episode it writes,
and refuses to resume on another package stack: results of one study come from one set of
installed packages (the locked install, ``uv.lock``).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import pathlib
import platform
import subprocess

REPO = pathlib.Path(__file__).resolve().parent.parent   # the checkout the package runs from (editable install)
STACK_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "mujoco",
                  "tensorflow-datasets", "grain")


def blob_sha(path) -> str:
    """The git blob sha1 of a file's bytes (what ``git hash-object FILE`` prints), git not needed."""
    data = pathlib.Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git(*args, repo=None) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(repo or REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def code_commit(repo=None, ignore=()) -> dict:
    """{"commit": HEAD's sha or None (not a git checkout), "dirty": whether tracked files differ
    from it (None when unknown)}, leaving out the folders in `ignore` (a study's own results
    folder, which it rewrites as it goes)."""
    commit = _git("rev-parse", "HEAD", repo=repo)
    if commit is None:
        return {"commit": None, "dirty": None}
    root = pathlib.Path(repo or REPO).resolve()
    skip = []
    for d in ignore:
        try:
            skip.append(f":(exclude){pathlib.Path(d).resolve().relative_to(root).as_posix()}")
        except ValueError:
            pass                        # outside the checkout: nothing to leave out
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *skip, repo=repo)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_stack(repo=None) -> dict:
    """Python's version, the sha256 of the checkout's ``uv.lock`` (None without one) and the
    installed versions of the packages results depend on."""
    lock = pathlib.Path(repo or REPO) / "uv.lock"
    versions = {}
    for name in STACK_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(),
            "lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.exists() else None,
            "packages": versions}


def _cpuinfo(path) -> tuple[str | None, list[str]]:
    """(model name, flags) of the first processor in a /proc/cpuinfo file; (None, []) without one."""
    flags, model = [], None
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, flags


def _widest(flags) -> str | None:
    return next((e for e in ("avx512f", "avx2", "avx") if e in flags), None)


def vector_extension(cpuinfo="/proc/cpuinfo") -> str | None:
    """The widest x86-64 vector extension of this CPU that XLA compiles for ("avx512f", "avx2",
    "avx"), or None (another architecture, or no /proc/cpuinfo)."""
    return _widest(_cpuinfo(cpuinfo)[1])


def machine(cpuinfo="/proc/cpuinfo") -> str:
    """The CPU a record is made on, in one phrase: architecture, model name and widest vector
    extension. XLA's CPU kernels round differently per extension, so a run trained again on
    another one is close to the first but not bit for bit the same; the records say where each
    part ran."""
    model, flags = _cpuinfo(cpuinfo)
    parts = (platform.machine() or "unknown", model, _widest(flags))
    return ", ".join(x for x in parts if x)


def check_stack(recorded: dict, current: dict, where: str) -> None:
    """A one-line ValueError when `current` is another package stack than `recorded`."""
    diff = []
    if recorded.get("lock_sha256") != current.get("lock_sha256"):
        diff.append(f"uv.lock sha256 {str(recorded.get('lock_sha256'))[:12]} -> {str(current.get('lock_sha256'))[:12]}")
    if recorded.get("python") != current.get("python"):
        diff.append(f"python {recorded.get('python')} -> {current.get('python')}")
    old, new = recorded.get("packages", {}), current.get("packages", {})
    diff += [f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        raise ValueError(f"{where} was made with another package stack ({'; '.join(diff)}): resume it in the "
                         "environment it was made with (make install from the same uv.lock), or use another --run-dir")


def preregistration(path, repo=None, ignore=()) -> dict:
    """{"path", "blob"} of a preregistration file that is committed unchanged at HEAD in a clean
    checkout; a one-line ValueError otherwise (a pre-registered run must be reproducible from
    its commit). `ignore`: folders whose changes do not count (the study's own results)."""
    p, repo = pathlib.Path(path), pathlib.Path(repo or REPO)
    if not p.is_file():
        raise ValueError(f"preregistration {p}: no such file")
    blob = blob_sha(p)
    code = code_commit(repo, ignore)
    if code["commit"] is None:
        raise ValueError(f"preregistration {p}: {repo} is not a git checkout, so the commit it runs with is unknown")
    try:
        rel = p.resolve().relative_to(repo.resolve())
    except ValueError:
        raise ValueError(f"preregistration {p}: not inside the checkout {repo}") from None
    if _git("rev-parse", f"HEAD:{rel.as_posix()}", repo=repo) != blob:
        raise ValueError(f"preregistration {p}: not committed as it is now; commit it before the report run")
    if code["dirty"]:
        raise ValueError(f"preregistration {p}: tracked files differ from commit {code['commit'][:12]}; "
                         "a pre-registered run needs a clean checkout")
    return {"path": rel.as_posix(), "blob": blob}
