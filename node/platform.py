"""What this machine offers: one worker per local NVIDIA GPU, or one CPU worker; their platform classes.

GPUs are found with `nvidia-smi` (bounded by a timeout) and, where it is missing, counted from
`/dev/nvidia<N>` nodes. torch is never imported here: the node's process stays free of training
code, so its version comes from package metadata.

A platform class names hardware whose results are comparable: "cpu-tiny" for the tiny CPU
model, else the GPU model and memory (e.g. "h100-80gb-hbm3"). Verifiers re-run claims of their
own class only.
"""
from __future__ import annotations

import asyncio
import glob
import importlib.metadata
import platform as _stdlib_platform
import re
import shutil
from dataclasses import dataclass

from node.errors import SetupError

NVIDIA_SMI_TIMEOUT_S = 10.0
CPU_CLASS = "cpu-tiny"
_QUERY = ["--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"]


@dataclass(frozen=True, slots=True)
class Device:
    """One worker's hardware."""

    index: int | None      # CUDA device index; None for the CPU worker
    name: str              # e.g. "NVIDIA H100 80GB HBM3", or the CPU model
    memory_mb: int
    driver: str
    platform_class: str

    @property
    def device(self) -> str:
        return "cpu" if self.index is None else "cuda"

    @property
    def profile(self) -> str:
        return "cpu" if self.index is None else "gpu"

    @property
    def label(self) -> str:
        return "cpu" if self.index is None else f"gpu{self.index}"


def gpu_class(name: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    words = re.sub(r"^nvidia-(geforce-)?", "", words)
    return (words or "gpu")[:64]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()[:200]
    except OSError:
        pass
    return (_stdlib_platform.processor() or _stdlib_platform.machine() or "unknown")[:200]


def torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


async def _nvidia_smi() -> list[Device]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = await asyncio.create_subprocess_exec(exe, *_QUERY, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return []
    try:
        async with asyncio.timeout(NVIDIA_SMI_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return []
    devices = []
    for line in out.decode(errors="replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        memory = int(parts[2]) if parts[2].isdigit() else 0
        devices.append(Device(int(parts[0]), parts[1], memory, parts[3], gpu_class(parts[1])))
    return devices


def _device_nodes() -> list[Device]:
    found = sorted(int(m.group(1)) for p in glob.glob("/dev/nvidia*") if (m := re.fullmatch(r"/dev/nvidia(\d+)", p)))
    return [Device(i, "NVIDIA GPU", 0, "unknown", "nvidia-gpu") for i in found]


async def detect(profile: str) -> list[Device]:
    """The workers for `profile` ("auto", "cpu" or "gpu")."""
    cpu = Device(None, cpu_model(), 0, "", CPU_CLASS)
    if profile == "cpu":
        return [cpu]
    gpus = await _nvidia_smi() or _device_nodes()
    if gpus:
        return gpus
    if profile == "gpu":
        raise SetupError("profile gpu: no NVIDIA GPU found (nvidia-smi and /dev/nvidia* show none)")
    return [cpu]
