"""What the machine is doing: GPUs through NVIDIA's management library (``pynvml``, from the
``nvidia-ml-py`` package) when it is importable and initialises, CPU and RAM through psutil.

Samplers are plain objects with a ``sample()`` method so tests and snapshots can inject
:class:`FrozenSampler` with fixed figures.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "FrozenSampler",
    "GpuInfo",
    "GpuProcess",
    "MachineSnapshot",
    "Sampler",
    "SystemSampler",
]


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    util: float | None  # percent
    mem_used: int | None  # bytes
    mem_total: int | None
    temperature: float | None = None  # °C
    power: float | None = None  # W
    power_limit: float | None = None


@dataclass(frozen=True)
class GpuProcess:
    gpu: int
    pid: int
    name: str
    mem: int | None  # bytes


@dataclass(frozen=True)
class MachineSnapshot:
    host: str
    cpu_percent: float | None
    cpu_count: int | None
    ram_used: int | None
    ram_total: int | None
    load: tuple[float, float, float] | None = None
    gpus: tuple[GpuInfo, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    gpu_note: str | None = None  # why no GPU figures (no pynvml, no driver, ...)
    extra: dict[str, Any] = field(default_factory=dict)


class Sampler(Protocol):
    def sample(self) -> MachineSnapshot: ...


class FrozenSampler:
    """Always the same snapshot (tests, screenshots)."""

    def __init__(self, snapshot: MachineSnapshot) -> None:
        self.snapshot = snapshot

    def sample(self) -> MachineSnapshot:
        return self.snapshot


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class SystemSampler:
    """Samples this machine. NVML is initialised once; if that fails the reason is kept in
    ``gpu_note`` and only CPU / RAM are reported. Call :meth:`close` when done."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self.gpu_note: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except ImportError:
            self.gpu_note = "no GPU figures: pynvml not installed (pip install nvidia-ml-py)"
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.gpu_note = f"no GPU figures: NVML unavailable ({_text(exc) or type(exc).__name__})"
        try:
            import psutil

            self._psutil: Any = psutil
            psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        except ImportError:  # pragma: no cover - psutil is a dependency
            self._psutil = None

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None

    def sample(self) -> MachineSnapshot:
        ps = self._psutil
        cpu = ram_used = ram_total = load = None
        cpu_count = os.cpu_count()
        if ps is not None:
            cpu = float(ps.cpu_percent(interval=None))
            vm = ps.virtual_memory()
            ram_used, ram_total = int(vm.total - vm.available), int(vm.total)
        if hasattr(os, "getloadavg"):
            try:
                load = os.getloadavg()
            except OSError:
                load = None
        gpus, procs = self._gpus()
        return MachineSnapshot(
            host=socket.gethostname(), cpu_percent=cpu, cpu_count=cpu_count, ram_used=ram_used,
            ram_total=ram_total, load=load, gpus=tuple(gpus), processes=tuple(procs),
            gpu_note=self.gpu_note,
        )

    def _gpus(self) -> tuple[list[GpuInfo], list[GpuProcess]]:
        nv = self._nvml
        if nv is None:
            return [], []
        gpus: list[GpuInfo] = []
        procs: list[GpuProcess] = []
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception as exc:
            self.gpu_note = f"no GPU figures: {_text(exc)}"
            return [], []

        def get(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except Exception:  # not supported on this board / MIG slice / permissions
                return None

        for i in range(count):
            h = get(nv.nvmlDeviceGetHandleByIndex, i)
            if h is None:
                continue
            util = get(nv.nvmlDeviceGetUtilizationRates, h)
            mem = get(nv.nvmlDeviceGetMemoryInfo, h)
            power = get(nv.nvmlDeviceGetPowerUsage, h)
            limit = get(nv.nvmlDeviceGetEnforcedPowerLimit, h)
            gpus.append(GpuInfo(
                index=i, name=_text(get(nv.nvmlDeviceGetName, h) or "GPU"),
                util=None if util is None else float(util.gpu),
                mem_used=None if mem is None else int(mem.used),
                mem_total=None if mem is None else int(mem.total),
                temperature=get(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
                power=None if power is None else power / 1000.0,
                power_limit=None if limit is None else limit / 1000.0,
            ))
            for p in get(nv.nvmlDeviceGetComputeRunningProcesses, h) or ():
                used = getattr(p, "usedGpuMemory", None)
                procs.append(GpuProcess(gpu=i, pid=int(p.pid), name=self._proc_name(int(p.pid)),
                                        mem=int(used) if isinstance(used, int) else None))
        return gpus, procs

    def _proc_name(self, pid: int) -> str:
        if self._psutil is None:
            return "?"
        try:
            proc = self._psutil.Process(pid)
            cmd = proc.cmdline()
            name = proc.name()
            # "python -m prunestudio ..." says more than "python"
            if len(cmd) > 1 and name.startswith("python"):
                return " ".join([os.path.basename(cmd[0]), *cmd[1:]])
            return name
        except Exception:  # gone, another PID namespace, no permission
            return "?"
