"""What vitwarm needs beside PyTorch, for benchmarks/gpu_check.sh on a machine that brings its own torch.

    python benchmarks/gpu_env.py missing        # top-level distributions to install, space-separated
    python benchmarks/gpu_env.py requirements   # name==version of everything they pull in, as installed here

``missing`` uses the standard library only (it runs before anything is installed); pip then resolves the
rest against what the machine has. ``requirements`` is for building the wheel folder on a development
machine (docs/performance.md): the transitive dependencies of the top-level distributions, pinned to the
versions installed here, without torch and torchvision and what only they pull in.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys

# Import name -> distribution name of what vitwarm imports directly (torch and torchvision aside).
TOP_LEVEL = {"timm": "timm", "webdataset": "webdataset", "omegaconf": "omegaconf", "accelerate": "accelerate",
             "safetensors": "safetensors", "PIL": "pillow", "numpy": "numpy", "tqdm": "tqdm", "yaml": "pyyaml"}
# Come with the machine's PyTorch build; a wheel of another build would not fit it.
WITH_TORCH = {"torch", "torchvision"}


def missing() -> list[str]:
    return [dist for module, dist in TOP_LEVEL.items() if importlib.util.find_spec(module) is None]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[str]:
    from packaging.requirements import Requirement  # development machine only

    seen, todo = set(), [canonical(d) for d in TOP_LEVEL.values()]
    while todo:
        dist = todo.pop()
        if dist in seen or dist in WITH_TORCH:
            continue
        seen.add(dist)
        for spec in importlib.metadata.requires(dist) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return sorted(f"{d}=={importlib.metadata.version(d)}" for d in seen)


if __name__ == "__main__":
    if sys.argv[1:] == ["missing"]:
        print(" ".join(missing()))
    elif sys.argv[1:] == ["requirements"]:
        print("\n".join(requirements()))
    else:
        sys.exit("usage: python benchmarks/gpu_env.py missing|requirements")
