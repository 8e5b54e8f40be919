"""Ray actors behind the Executor seam: one per GPU, or CPU actors with a thread budget each.

    executor = RayExecutor(config, WorkerPlan(workers=2), prefix="host:1234")
    run_study(store, study_id, proposer, executor)   # the same loop as in one process

Each actor (`StudyWorker`) wraps an `InProcessExecutor`: it loads the model, cuts the windows
and warms the statistics once, then runs jobs — a JSON job goes in, a JSON result comes out,
never a model object. The driver (the loop) keeps one job per actor in flight and is the only
writer of the store. An actor whose process dies (SIGKILL, the kernel's OOM killer, a segfault)
is restarted by Ray (`max_restarts`); the job it was running comes back as a ``lost`` result and
the loop re-queues it. Every actor must report the model and calibration fingerprints the driver
validated: a worker that loaded another file is refused before its first job, and a result
computed on other inputs is recorded failed.

Ray is an optional extra (``pip install 'prunestudio[cluster]'``); this module imports it only
when an executor is set up. With no address a local Ray is started for the run (and stopped
after it); with ``address`` the executor joins an existing cluster (``ray start --head`` on one
machine, ``ray start --address=HEAD:6379`` on the others).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prunestudio.engine.progress import Reporter
from prunestudio.engine.study.executor import (
    CandidateResult,
    Completion,
    InProcessExecutor,
    Job,
    Ticket,
    WorkerRow,
    device_info,
)

from prunestudio.schema.study_file import ConfigError, StudyConfig, parse_config

log = logging.getLogger(__name__)

CLUSTER_EXTRA = "pip install 'prunestudio[cluster]'"
MAX_RESTARTS = 8  # per actor: a worker that dies more often than this ends the study (resumable)
# how this process joins or starts Ray: no dashboard, the actors' output stays in Ray's logs
RAY_INIT_OPTIONS = {"include_dashboard": False, "log_to_driver": False,
                    "logging_level": logging.ERROR}


def import_ray():
    """The `ray` module, or a ConfigError (the CLI's exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--workers / --ray-address run candidates on Ray actors, and Ray is not installed; "
            f"install the optional extra: {CLUSTER_EXTRA} (or pip install ray). Without it, "
            "leave out --workers: the study runs in this process") from None
    return ray


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class WorkerPlan:
    """How a run spreads over workers: `workers` actors, each on one GPU (`gpu`) or on
    `threads` CPU threads; `address` joins an existing Ray cluster (None: a local one)."""

    workers: int
    threads: int | None = None  # CPU actors: torch threads (and Ray CPUs) each
    gpu: bool | None = None  # None: a GPU per actor when the cluster has GPUs and the config's
    address: str | None = None  # device is not 'cpu'

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1; got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads-per-worker must be at least 1; got {self.threads}")


def visible_gpus(device: str) -> int:
    """CUDA devices this process sees (0 when the study's device is the CPU)."""
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_plan(workers: int | None, address: str | None, threads: int | None, *,
                device: str = "auto", reporter: Reporter | None = None) -> WorkerPlan | None:
    """The workers of a run from `prunestudio run`'s options; None: run in this process.

    Nothing given: one Ray worker per visible GPU when there are several (and Ray is
    installed; otherwise a note says how to use them all), else this process. `--workers N`:
    N Ray workers (a local Ray). `--ray-address` alone: one worker per GPU of the cluster."""
    reporter = reporter or Reporter()
    if workers is None and address is None:
        if threads is not None:
            raise ConfigError("--threads-per-worker goes with --workers N (CPU workers)")
        gpus = visible_gpus(device)
        if gpus < 2:
            return None
        if not ray_available():
            reporter.message(f"{gpus} GPUs are visible and this study runs on one: to use them "
                             f"all, {CLUSTER_EXTRA} (one Ray worker per GPU)")
            return None
        return WorkerPlan(gpus)
    if workers is None:  # join a cluster: one worker per GPU in it
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=address, **RAY_INIT_OPTIONS)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        workers = gpus if gpus and device != "cpu" else 1
        reporter.message(f"Ray cluster at {address}: {gpus} GPU(s); {workers} worker(s)")
    else:
        import_ray()
        gpus = 0 if address else visible_gpus(device)
        if 0 < gpus < workers:  # checked before the study is recorded
            raise ConfigError(f"--workers {workers} needs {workers} GPUs (one per worker); "
                              f"this machine has {gpus}. Give --workers {gpus} or fewer, or "
                              "--device cpu for CPU workers")
    return WorkerPlan(workers, threads, address=address)


class StudyWorker:
    """The actor: one `InProcessExecutor` kept loaded between jobs (wrapped by `ray.remote`)."""

    def __init__(self, config: dict[str, Any], warm: Sequence[str], threads: int | None,
                 name: str) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        study = parse_config(config, f"(worker {name})")
        if study.model.device.startswith("cuda"):  # Ray gave this actor one GPU: it is cuda:0
            study = study.model_copy(update={"model": study.model.model_copy(
                update={"device": "cuda"})})
        self.name = name
        self.executor = InProcessExecutor(study, reporter=Reporter(), name=name,
                                          role="ray actor")
        self.description = self.executor.setup(warm)

    def me(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "device": device_info(self.executor.ctx.lm, "ray actor")}

    def describe(self) -> dict[str, Any]:
        return {"description": self.description, **self.me()}

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        result = self.executor.run(Job.from_dict(job))
        result.worker = self.me()
        return result.to_dict()


class RayExecutor:
    """Jobs on `plan.workers` Ray actors, one job per actor in flight (`slots`)."""

    def __init__(self, config: StudyConfig, plan: WorkerPlan, *, prefix: str,
                 reporter: Reporter | None = None,
                 identity: dict[str, str] | None = None) -> None:
        self.config, self.plan = config, plan
        self.expected = identity  # the driver's fingerprints: every actor must match them
        self.reporter = reporter or Reporter()
        self.slots = plan.workers
        self.names = [f"{prefix}/w{i}" for i in range(plan.workers)]
        self._actors: list[Any] = []
        self._busy: dict[int, tuple[Ticket, Any]] = {}  # actor index -> (ticket, object ref)
        self._deaths = [0] * plan.workers
        self._restarting: dict[int, Any] = {}  # actor index -> probe that resolves once back
        self._rows: list[WorkerRow] = []
        self._identity: dict[str, str] = {}
        self._tickets = 0
        self._started_ray = False
        self._ray: Any = None

    # -- setup ---------------------------------------------------------------------------------

    def _init_ray(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            if self.plan.address:
                ray.init(address=self.plan.address, **RAY_INIT_OPTIONS)
            else:  # a local Ray for this run: CPUs for every actor's threads
                ray.init(num_cpus=max(os.cpu_count() or 1,
                                      self.plan.workers * (self.plan.threads or 1)),
                         **RAY_INIT_OPTIONS)
            self._started_ray = True
        return ray

    def _use_gpu(self, ray: Any) -> bool:
        if self.plan.gpu is not None:
            return self.plan.gpu
        return (self.config.model.device != "cpu"
                and ray.cluster_resources().get("GPU", 0) >= 1)

    def _check_resources(self, ray: Any, gpu: bool, threads: int) -> None:
        have = ray.cluster_resources()
        needs = [(self.plan.workers * threads, "CPU", f"{threads} CPU thread(s)")]
        if gpu:
            needs.insert(0, (self.plan.workers, "GPU", "one GPU"))
        for need, what, per in needs:
            if have.get(what, 0) < need:
                raise ConfigError(
                    f"--workers {self.plan.workers} needs {need} {what}(s) ({per} per worker); "
                    f"the Ray cluster has {have.get(what, 0):g}. Give fewer --workers"
                    + (" or --threads-per-worker" if what == "CPU" else ""))

    def setup(self, warm: Sequence[str] = ()) -> dict[str, Any]:
        ray = self._ray = self._init_ray()
        gpu = self._use_gpu(ray)
        # CPU threads per worker (a GPU worker's too: loading, dequantizing a GGUF, tokenizing)
        threads = self.plan.threads or max(
            1, int(ray.cluster_resources().get("CPU", 1)) // self.plan.workers)
        self._check_resources(ray, gpu, threads)
        actor_class = ray.remote(StudyWorker)
        options = {"num_gpus": 1 if gpu else 0, "num_cpus": threads,
                   "max_restarts": MAX_RESTARTS, "max_task_retries": 0}
        where = (f"one GPU and {threads} CPU thread(s) each" if gpu else
                 f"{threads} CPU thread(s) each")
        self.reporter.message(f"starting {self.plan.workers} Ray worker(s), {where}: each loads "
                              "the model and the statistics once ...")
        t0 = time.perf_counter()
        config = self.config.to_dict()
        self._actors = [actor_class.options(**options).remote(config, list(warm), threads,
                                                              name)
                        for name in self.names]
        described = []
        for name, actor in zip(self.names, self._actors, strict=True):
            try:
                described.append(ray.get(actor.describe.remote()))
            except ray.exceptions.RayError as exc:
                raise RuntimeError(f"worker {name} could not start: {_cause(exc)}") from exc
        first = described[0]["description"]
        self._identity = dict(self.expected or first.get("identity") or {})
        for name, d in zip(self.names, described, strict=True):
            if d["description"].get("identity") != self._identity:
                raise RuntimeError(
                    f"worker {name} ({d['host']}) loaded other inputs than the driver: "
                    f"{d['description'].get('identity')} vs {self._identity}; every node must "
                    "see the same model and text (a shared model cache)")
        self._rows = [WorkerRow(name, d["host"], d["pid"], d["device"])
                      for name, d in zip(self.names, described, strict=True)]
        first = dict(first)
        first["timings"] = {**first.get("timings", {}),
                            "workers_ready": time.perf_counter() - t0}
        first["workers"] = [{"name": r.name, "host": r.host, "device": r.device}
                            for r in self._rows]
        return first

    def workers(self) -> list[WorkerRow]:
        return list(self._rows)

    # -- jobs ----------------------------------------------------------------------------------

    def _idle(self) -> int:
        """The first worker neither busy nor restarting; when every free one is restarting
        (Ray reloads the model in a new process), wait until one is back — a job sent to a
        restarting actor would fail as if it had died again."""
        while True:
            free = [i for i in range(len(self._actors)) if i not in self._busy]
            if not free:
                raise RuntimeError(f"all {len(self._actors)} workers are busy: wait() first")
            for i in free:
                if self._back(i):
                    return i
            self._ray.wait([self._restarting[i] for i in free], num_returns=1, timeout=5.0)

    def _back(self, i: int) -> bool:
        """Is worker `i` up (not restarting)? A dead one for good ends the study."""
        probe = self._restarting.get(i)
        if probe is None:
            return True
        ray = self._ray
        ready, _ = ray.wait([probe], timeout=0)
        if not ready:
            return False
        try:
            ray.get(probe)
        except ray.exceptions.ActorDiedError as exc:
            raise RuntimeError(f"worker {self.names[i]} cannot be restarted: "
                               f"{_cause(exc)}") from exc
        except ray.exceptions.RayActorError:  # still restarting: ask again
            self._restarting[i] = self._actors[i].me.remote()
            return False
        del self._restarting[i]
        return True

    def idle_worker(self) -> str:
        return self.names[self._idle()]

    def submit(self, job: Job) -> Ticket:
        i = self._idle()
        self._tickets += 1
        ticket = Ticket(self._tickets, self.names[i])
        self._busy[i] = (ticket, self._actors[i].run.remote(job.to_dict()))
        return ticket

    def wait(self, timeout: float | None = None) -> list[Completion]:
        ray = self._ray
        if not self._busy:
            return []
        refs = {ref: i for i, (_, ref) in self._busy.items()}
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=timeout)
        if not ready:
            return []
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        out = []
        for ref in ready:
            i = refs[ref]
            ticket, _ = self._busy.pop(i)
            out.append(Completion(ticket, self._result(i, ref), time.time()))
        return out

    def _result(self, i: int, ref: Any) -> CandidateResult:
        ray = self._ray
        try:
            result = CandidateResult.from_dict(ray.get(ref))
        except ray.exceptions.RayActorError as exc:  # the process died: Ray restarts it
            self._deaths[i] += 1
            if self._deaths[i] > MAX_RESTARTS:
                raise RuntimeError(f"worker {self.names[i]} died {self._deaths[i]} times; Ray "
                                   "does not restart it again") from exc
            self._restarting[i] = self._actors[i].me.remote()  # resolves once it is back
            return CandidateResult("lost", error=f"{type(exc).__name__}: {_first_line(exc)}",
                                   error_summary=f"{type(exc).__name__}")
        except ray.exceptions.RayError as exc:  # e.g. a result that could not be sent back
            return CandidateResult("failed", error=f"{type(exc).__name__}: {exc}",
                                   error_summary=f"{type(exc).__name__}: {_first_line(exc)}")
        found = {k: result.info.get(k) for k in self._identity if k in result.info}
        if result.status == "done" and found and found != self._identity:
            return CandidateResult(
                "failed", result.metrics[:0], result.timings, result.info,
                error=f"worker {self.names[i]} computed this candidate on other inputs than "
                      f"the study's ({found} vs {self._identity}); not recorded",
                error_summary="InputsChanged: a worker loaded another model or text",
                worker=result.worker)
        return result

    def close(self) -> None:
        ray, self._busy = self._ray, {}
        if ray is None:
            return
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception as exc:  # already gone
                log.debug("kill %s: %s", actor, exc)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cause(exc: BaseException) -> str:
    """The error an actor raised (the last 'SomeError: message' line of Ray's report), else the
    report's first line."""
    import re

    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    found = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", ln)]
    return found[-1] if found else _first_line(exc)
