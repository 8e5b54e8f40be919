"""The polling layer (cursors over the store's *_since queries) and the machine samplers."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from prunestudio.store import open_store
from prunestudio.tui.feed import StoreReader, StudiesFeed, StudyFeed
from prunestudio.tui.machine import SystemSampler
from prunestudio.tui.widgets import machine_text


def _ppl(value: float, role: str = "in_domain", fidelity: str = "full") -> dict[str, Any]:
    return {"name": "ppl", "value": value, "dataset": "pydoc", "seqlen": 256, "role": role,
            "fidelity": fidelity, "protocol": {"windows": "non-overlapping"}}


def test_studies_feed_reads_only_changes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        a = store.create_study(name="a", kind="grid", model="m", config={}, budget=4)
        b = store.create_study(name="b", kind="gp", model="m", config={})
        dense, _ = store.add_candidate(a, {"method": "dense"}, origin="baseline")
        store.finish_candidate(dense, metrics=[_ppl(10.0)])
        # origin 'grid', as the engine's runner records a grid candidate (a 'baseline' is a
        # reference, never the best)
        wanda, _ = store.add_candidate(a, {"method": "wanda", "sparsity": 0.5}, origin="grid")
        store.finish_candidate(wanda, metrics=[_ppl(30.0), _ppl(25.0, "search", "proxy")])
        reader = StoreReader(path)
        feed = StudiesFeed(reader)
        first = feed.poll()
        assert first is not None and sorted(s.id for s in first.studies) == [a, b]
        s = {x.id: x for x in first.studies}[a]
        assert (s.n_done, s.finished, s.total, s.status) == (2, 2, 4, "created")
        best = first.best[a]
        # the dense reference never counts, in_domain full beats the search proxy
        assert (best.value, best.candidate_id, best.column.role) == (30.0, wanda, "in_domain")
        assert b not in first.best
        assert feed.poll() is None
        store.add_candidate(b, {"method": "magnitude", "sparsity": 0.5}, origin="random")
        update = feed.poll()
        assert update is not None and [x.id for x in update.studies] == [b]
        assert update.studies[0].n_pending == 1
        reader.close()


def test_study_feed_chunks_and_bounded_events(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        sid = store.create_study(name="a", kind="gp", model="m", config={})
        other = store.create_study(name="b", kind="gp", model="m", config={})
        ids = [store.add_candidate(sid, {"i": i}, origin="random")[0] for i in range(7)]
        store.add_candidate(other, {"i": 0}, origin="random")
        for i in range(12):
            store.add_event(sid, f"event {i}")
        reader = StoreReader(path)
        feed = StudyFeed(reader, sid, chunk=3, keep_events=5)
        update = feed.poll()
        assert update.study is not None and update.study.id == sid
        assert [r.id for r in update.rows] == ids[:3] and update.more
        assert [e["message"] for e in update.events] == [f"event {i}" for i in range(7, 12)]
        update = feed.poll()
        assert [r.id for r in update.rows] == ids[3:6] and update.more and not update.events
        assert update.study is None  # unchanged since the last poll
        update = feed.poll()
        assert [r.id for r in update.rows] == ids[6:] and not update.more
        assert feed.poll().empty
        store.finish_candidate(ids[2], metrics=[_ppl(12.5)])
        store.add_event(sid, "done 2", progress=0.5)
        update = feed.poll()
        assert [r.id for r in update.rows] == [ids[2]] and update.rows[0].status == "done"
        assert update.rows[0].metrics == {update.columns[0].key: 12.5}
        assert [e["message"] for e in update.events] == ["done 2"]
        assert update.study is not None and update.study.status == "created"
        reader.close()


def test_system_sampler_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    sampler = SystemSampler()
    snap = sampler.sample()
    assert snap.gpus == () and "pynvml" in (snap.gpu_note or "")
    assert snap.ram_total and snap.ram_used is not None and snap.cpu_count
    text = machine_text(snap).plain
    assert "CPU" in text and "RAM" in text and "pynvml" in text
    sampler.close()


class _NVMLError(Exception):
    pass


def _fake_nvml(fail_init: bool = False) -> types.ModuleType:
    nv = types.ModuleType("pynvml")
    ns = types.SimpleNamespace

    def init() -> None:
        if fail_init:
            raise _NVMLError("Driver Not Loaded")

    def power(h: int) -> int:
        raise _NVMLError("Not Supported")

    nv.nvmlInit = init  # type: ignore[attr-defined]
    nv.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nv.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    nv.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nv.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    nv.nvmlDeviceGetUtilizationRates = lambda h: ns(gpu=40 + h)  # type: ignore[attr-defined]
    nv.nvmlDeviceGetMemoryInfo = lambda h: ns(used=2**30, total=80 * 2**30)  # type: ignore[attr-defined]
    nv.nvmlDeviceGetTemperature = lambda h, kind: 50  # type: ignore[attr-defined]
    nv.nvmlDeviceGetPowerUsage = power  # type: ignore[attr-defined]
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000  # type: ignore[attr-defined]
    nv.nvmlDeviceGetComputeRunningProcesses = (  # type: ignore[attr-defined]
        lambda h: [ns(pid=999_999_999, usedGpuMemory=5 * 2**30)] if h == 0 else [])
    return nv


def test_system_sampler_with_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    snap = SystemSampler().sample()
    assert [g.util for g in snap.gpus] == [40.0, 41.0] and snap.gpu_note is None
    g = snap.gpus[0]
    assert (g.name, g.mem_total, g.temperature, g.power, g.power_limit) == (
        "NVIDIA H100 80GB HBM3", 80 * 2**30, 50, None, 700.0)
    (proc,) = snap.processes
    assert (proc.gpu, proc.pid, proc.name, proc.mem) == (0, 999_999_999, "?", 5 * 2**30)
    text = machine_text(snap).plain
    assert "GPU0" in text and "GPU1" in text and "pid 999999999" in text

    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(fail_init=True))
    snap = SystemSampler().sample()
    assert snap.gpus == () and "Driver Not Loaded" in (snap.gpu_note or "")


def test_studies_feed_throttles_the_best_query(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    ticks = iter([1.0, 2.0, 3.0, 100.0, 100.5])  # each best query "takes" one second
    with open_store(path) as store:
        sid = store.create_study(name="a", kind="gp", model="m", config={})
        cid, _ = store.add_candidate(sid, {"method": "wanda", "sparsity": 0.5}, origin="x")
        store.finish_candidate(cid, metrics=[_ppl(30.0)])
        reader = StoreReader(path)
        feed = StudiesFeed(reader, best_duty=20, clock=lambda: next(ticks))
        assert feed.poll().best[sid].value == 30.0  # type: ignore[union-attr]
        cid, _ = store.add_candidate(sid, {"method": "wanda", "sparsity": 0.6}, origin="x")
        store.finish_candidate(cid, metrics=[_ppl(20.0)])
        update = feed.poll()  # t=3 < 1 + 20 × 1: counts now, best later
        assert update is not None and update.studies[0].n_done == 2 and update.best == {}
        update = feed.poll()  # t=100: the stale study's best is read, though it did not change
        assert update is not None and update.studies == [] and update.best[sid].value == 20.0
        assert feed.poll() is None
        reader.close()
