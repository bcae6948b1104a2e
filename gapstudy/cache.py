"""The artifact cache: what gapstudy builds once (a world's policy, the proxy reward model, D_golden's pairs) lives
under <results root>/.cache/<kind>-<hash of its settings>, built by one process while the others wait, published
by a rename, with the file modes a plain open() would give.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock


def cached_artifact(cache_root: Path, kind: str, spec: dict, build: Callable[[Path], None]) -> Path:
    """Build `build(tmp_dir)` once per (kind, spec) under cache_root and return the finished directory.

    The key is a hash of the spec, so changing any setting rebuilds; parallel runs wait on a file lock and reuse
    the first one's result; a crash mid-build leaves no half-written directory behind (build, then rename). A
    build may checkpoint itself under `tmp_dir / RESUME` (see `gapstudy.worlds.pretrain`): that folder alone
    survives a killed build, so the next attempt resumes it, and it is removed before the result is published.
    """
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    target = Path(cache_root) / ".cache" / f"{kind}-{key}"
    if (target / "DONE").exists():
        return _readable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "DONE").exists():
            return _readable(target)
        tmp = target.with_name(target.name + ".tmp")
        _clear_but_resume(tmp)
        build(tmp)
        shutil.rmtree(tmp / RESUME, ignore_errors=True)
        (tmp / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True, default=str))
        _umask_modes(tmp)
        (tmp / "DONE").write_text("")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


RESUME = "resume"  # the folder of a build's checkpoints inside its in-progress directory


def _clear_but_resume(tmp: Path) -> None:
    """An empty in-progress directory, except for the checkpoints a killed attempt left in tmp/RESUME."""
    tmp.mkdir(exist_ok=True)
    for path in tmp.iterdir():
        if path.name == RESUME and path.is_dir() and not path.is_symlink():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _umask_modes(folder: Path) -> None:
    """The modes a plain open() would give (0666 / 0777 less the umask). Some writers (safetensors' model files)
    create 0600 files, which would make a cache shared by a group or a cluster unreadable to every other user."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _readable(target: Path) -> Path:
    """A finished artifact whose files this user can read; else a PermissionError naming the first one (the Auto
    classes would report it as a missing file)."""
    import errno
    import os

    for path in [target, *target.rglob("*")]:
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            raise PermissionError(errno.EACCES, "permission denied (a cached artifact; make it readable, or delete "
                                  f"{target} to rebuild it)", str(path))
    return target
