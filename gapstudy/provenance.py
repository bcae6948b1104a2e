"""What made a run, beyond its config: the code's commit and the environment (package versions, CPU kernels,
device, threads). Both are saved in every run's config.yaml, so committed results name what made them and
analysis can warn when pooled runs were made under different environments. A leaf: imports nothing of the project.
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf


def code_version() -> str | None:
    """The git commit of the gapstudy checkout that runs (`+dirty` with uncommitted changes); None outside git.
    Saved in every run's config.yaml, so committed results name the code that made them."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here.parent), "status", "--porcelain", "--untracked-files=no", "--",
                                "gapstudy", "configs", "experiments"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


PROVENANCE_PACKAGES = ("torch", "transformers", "datasets", "numpy", "pandas", "scipy", "pyarrow", "hydra-core",
                       "omegaconf", "tokenizers", "safetensors")


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor()); None when unknown. Two machines
    with the same packages and CPU capability can still differ in float results (measured: an AMD EPYC and another
    AVX512 machine give step-1 losses differing in the 7th digit), so the model is part of the record."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def environment(device) -> dict:
    """What a run's numbers may depend on beyond its config: package versions, Python, the CPU model and the CPU
    kernels torch dispatches to (e.g. AVX512 vs AVX2), the device used and torch's thread count. Saved in config.yaml under
    `environment` (not an override: it never enters the run's name nor the suite runner's staleness check), so
    analysis can warn when pooled runs were made under different ones."""
    import platform
    from importlib import metadata

    import torch

    packages = {}
    for name in PROVENANCE_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"packages": packages, "python": platform.python_version(),
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "device": str(device),
            "threads": torch.get_num_threads()}


def warn_if_environment_changed(run_dir: Path, now) -> None:
    """A run resumed under other package versions, CPU kernels, device or thread count: say so (config.yaml then
    records the environment that finished it)."""
    path = run_dir / "config.yaml"
    if not (run_dir / "state.pt").exists() or not path.is_file():
        return
    try:
        before = OmegaConf.to_container(OmegaConf.load(path)).get("environment")
    except Exception:  # noqa: BLE001 -- an unreadable old config only loses this warning
        return
    now = OmegaConf.to_container(now)
    if not before or before == now:
        return

    def flat(env: dict) -> dict:  # packages.torch, python, ...
        return {f"{k}.{j}" if isinstance(v, dict) else k: w for k, v in env.items()
                for j, w in (v.items() if isinstance(v, dict) else [(None, v)])}

    a, b = flat(before), flat(now)
    changed = [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    print(f"gapstudy: warning: {run_dir.name} resumes under another environment ({', '.join(changed)})",
          file=sys.stderr)
