"""Studies on a real local Ray: two actors record what one process records (a grid on logical
GPUs, a GP search on CPU actors); an actor killed with SIGKILL mid-candidate is restarted and
its candidate re-queued; a killed driver resumes. Ray is the optional `cluster` extra, which
the set-up script installs for the tests."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time

import pytest
from parallel_testlib import study_records
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.report import print_study
from prunestudio.engine.runner import launch_study
from prunestudio.store import open_store, queries
from tiny_models import slow_study_toml, tiny_gp_toml, tiny_study_toml

from prunestudio.schema.study_file import ConfigError, parse_config

ray = pytest.importorskip("ray")
from cli_testlib import cli, cli_error, start_until, statuses  # noqa: E402
from prunestudio.engine.study.ray_executor import WorkerPlan, choose_plan  # noqa: E402

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: 2 CPUs and 2 logical GPUs (a CPU machine schedules them
    like real ones; torch inside an actor still finds no CUDA and runs on the CPU)."""
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def one_thread():
    """The in-process reference with one torch thread, as each actor has: the same
    reductions in the same order, so metrics agree to the last digit."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(text: str):
    return parse_config(tomllib.loads(text))


def test_a_grid_on_two_gpu_actors_records_what_one_process_records(tmp_path, tiny_model_dirs,
                                                                   local_ray, one_thread):
    config = _config(tiny_study_toml(tiny_model_dirs["llama"]))
    lm = load_model(str(tiny_model_dirs["llama"]), device="cpu")
    sid, status = launch_study(config, tmp_path / "one.db", lm=lm)
    rid, rstatus = launch_study(config, tmp_path / "ray.db", plan=WorkerPlan(2))
    assert status == rstatus == "finished"
    assert study_records(tmp_path / "ray.db", rid) == study_records(tmp_path / "one.db", sid)
    with open_store(tmp_path / "ray.db", readonly=True) as store:
        cands = store.candidates(rid)
        events = [e["message"] for e in queries.events_since(store, rid, 0)[0]]
    workers = {c["worker"] for c in cands}
    assert len(workers) == 2 and all("/w" in w for w in workers)  # both actors worked
    assert all(c["started_at"] <= c["finished_at"] for c in cands)
    assert not [e for e in events if "died" in e]
    # `show` names the worker of each candidate (one process: no such column)
    shown, single = io.StringIO(), io.StringIO()
    with open_store(tmp_path / "ray.db", readonly=True) as store:
        print_study(store, rid, file=shown)
    with open_store(tmp_path / "one.db", readonly=True) as store:
        print_study(store, sid, file=single)
    assert "worker" in shown.getvalue() and "worker" not in single.getvalue()
    rows = {ln.split("│")[1].strip(): ln for ln in shown.getvalue().splitlines()
            if ln.startswith("│") and ln.split("│")[1].strip().isdigit()}
    assert {cid: c["worker"] in rows[str(cid)] for cid, c in
            ((c["id"], c) for c in cands)} == {c["id"]: True for c in cands}, shown.getvalue()


def test_a_gp_search_on_two_cpu_actors_records_what_one_process_records(
        tmp_path, tiny_model_dirs, local_ray, one_thread):
    text = tiny_gp_toml(tiny_model_dirs["llama"], budget=30).replace(
        "iterations = 4", "iterations = 12").replace("population = 6", "population = 8")
    config = _config(text)
    lm = load_model(str(tiny_model_dirs["llama"]), device="cpu")
    sid, _ = launch_study(config, tmp_path / "one.db", lm=lm)
    rid, status = launch_study(config, tmp_path / "ray.db",
                               plan=WorkerPlan(2, threads=1, gpu=False))
    one, two = study_records(tmp_path / "one.db", sid), study_records(tmp_path / "ray.db", rid)
    assert status == "finished" and {"done", "skipped"} <= {r[5] for r in one}
    assert two == one


def _slower(model_dir) -> str:
    """The slow study with ~1 s candidates (192 × 256 evaluation tokens): a kill can land well
    inside one even on a busy machine."""
    return slow_study_toml(model_dir).replace("seqlen = 128, n = 64, offset = 20000",
                                              "seqlen = 256, n = 192, offset = 20000")


def _kill_a_busy_actor(db, killed: dict, stop: threading.Event) -> None:
    """Poll the store (read-only, as a UI does) for an actor running a candidate; SIGKILL it
    once, well inside the candidate (after a tenth and before half of the time the finished
    ones took, so the result cannot be on its way back), and say which process and candidate."""
    while not stop.is_set() and not killed:
        time.sleep(0.02)
        try:
            with open_store(db, readonly=True) as store:
                rows = [w for w in queries.list_workers(store)
                        if "/w" in w["name"] and w["candidate_id"] is not None]
                cands = {c["id"]: c for c in store.candidates(1)}
        except Exception:  # the store is still being created
            continue
        took = sorted(c["finished_at"] - c["started_at"] for c in cands.values()
                      if c["status"] == "done" and c["started_at"])
        if not took:
            continue
        typical, now = took[len(took) // 2], time.time()
        for w in rows:
            c = cands.get(w["candidate_id"])
            if (c is None or c["status"] != "running" or not c["started_at"]
                    or not 0.1 * typical <= now - c["started_at"] <= 0.5 * typical):
                continue
            os.kill(int(w["pid"]), signal.SIGKILL)
            killed.update(pid=int(w["pid"]), candidate=int(w["candidate_id"]), name=w["name"])
            return


def test_an_actor_killed_mid_candidate_is_restarted_and_nothing_is_lost(tmp_path,
                                                                        tiny_model_dirs,
                                                                        local_ray):
    db = tmp_path / "kill.db"
    config = _config(_slower(tiny_model_dirs["llama"]))
    killed: dict = {}
    stop = threading.Event()
    poller = threading.Thread(target=_kill_a_busy_actor, args=(db, killed, stop))
    poller.start()
    try:
        sid, status = launch_study(config, db, plan=WorkerPlan(2))
    finally:
        stop.set()
        poller.join()
    assert killed, "no actor was ever seen running a candidate"
    with open_store(db, readonly=True) as store:
        cands = store.candidates(sid, with_metrics=True)
        events = [e["message"] for e in queries.events_since(store, sid, 0)[0]]
    assert status == "finished"
    assert [c["status"] for c in cands] == ["done"] * len(config.candidate_specs())
    assert len({c["spec_hash"] for c in cands}) == len(cands)  # nothing twice
    # every candidate has its metrics once (one ppl per evaluation set)
    assert all(sum(m["name"] == "ppl" for m in c["metrics"]) == 2 for c in cands)
    cid = killed["candidate"]
    restart = [e for e in events if f"died while running candidate {cid}" in e]
    assert len(restart) == 1 and "re-queued" in restart[0], events
    # one death, one event: nothing was sent to the actor while Ray restarted it
    assert sum("died" in e for e in events) == 1, events
    assert killed["name"] in restart[0]


def test_a_killed_driver_resumes_on_workers(tmp_path, tiny_model_dirs):
    db, cfg = tmp_path / "d.db", tmp_path / "slow.toml"
    cfg.write_text(slow_study_toml(tiny_model_dirs["llama"]))
    proc = start_until(["run", str(cfg), "--store", str(db), "--name", "driver", "--quiet",
                        "--workers", "2", "--threads-per-worker", "1"], db,
                       lambda rows: statuses(rows).count("done") >= 1
                       and "running" in statuses(rows), what="a candidate done on a worker")
    proc.kill()  # SIGKILL: no handler runs, the study stays 'running'
    proc.communicate(timeout=60)
    with open_store(db, readonly=True) as store:
        before = store.candidates(1)
    assert "running" in statuses(before)
    out = json.loads(cli("run", "--resume", "driver", "--store", str(db), "--workers", "2",
                         "--threads-per-worker", "1", "--json", "--quiet").stdout)
    assert out["study"]["status"] == "finished"
    assert [c["status"] for c in out["candidates"]] == ["done"] * len(before)
    with open_store(db, readonly=True) as store:
        after = store.candidates(1)
        events = [e["message"] for e in queries.events_since(store, 1, 0)[0]]
    assert len({c["spec_hash"] for c in after}) == len(after) == len(before)
    # what was done before the kill was kept as it was, not re-run
    kept = {c["id"]: c["finished_at"] for c in before if c["status"] == "done"}
    assert {c["id"]: c["finished_at"] for c in after if c["id"] in kept} == kept
    assert any(e.startswith("resumed by ") and "go back to pending" in e for e in events)


def test_workers_without_ray_say_how_to_install_it(tmp_path, tiny_model_dirs):
    cfg = tmp_path / "s.toml"
    cfg.write_text(tiny_study_toml(tiny_model_dirs["llama"]))
    code = ("import sys; sys.modules['ray'] = None; from prunestudio.cli import main; "
            f"sys.exit(main(['run', {str(cfg)!r}, '--workers', '2', '--store', "
            f"{str(tmp_path / 'x.db')!r}]))")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'prunestudio[cluster]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists()
    assert "expected a whole number ≥ 1; got 0" in cli_error("run", str(cfg), "--workers", "0")


def test_the_default_is_this_process_on_a_machine_without_several_gpus():
    assert choose_plan(None, None, None, device="auto") is None
    assert choose_plan(None, None, None, device="cpu") is None
    assert choose_plan(3, None, 2).workers == 3
    with pytest.raises(ConfigError, match="--threads-per-worker goes with --workers"):
        choose_plan(None, None, 2)


def test_a_tpe_study_asks_one_trial_per_worker_of_the_run_that_creates_it(tiny_model_dirs):
    from prunestudio.engine.runner import _batch_for_workers

    text = (tiny_study_toml(tiny_model_dirs["llama"]).split("[grid]")[0]
            + '[study]\nkind = "tpe"\n[tpe]\ntrials = 4\nsparsity = 0.2\nsamples = 2\n')
    config = _config(text)
    assert config.tpe.batch is None
    assert _batch_for_workers(config, WorkerPlan(3)).tpe.batch == 3
    assert _batch_for_workers(config, None).to_dict()["tpe"]["batch"] == 1  # recorded
    fixed = _config(text.replace("trials = 4", "trials = 4\nbatch = 2"))
    assert _batch_for_workers(fixed, WorkerPlan(3)).tpe.batch == 2  # the user's choice stays


def test_workers_that_loaded_other_inputs_than_the_driver_are_refused(tiny_model_dirs,
                                                                      local_ray):
    from prunestudio.engine.study.ray_executor import RayExecutor

    config = _config(tiny_study_toml(tiny_model_dirs["llama"]))
    executor = RayExecutor(config, WorkerPlan(1, threads=1, gpu=False), prefix="test",
                           identity={"model_fingerprint": "a-different-model",
                                     "calibration_tokens_hash": "x"})
    try:
        with pytest.raises(RuntimeError, match="test/w0 .* loaded other inputs than the "
                                               "driver.*a-different-model"):
            executor.setup()
    finally:
        executor.close()
    assert ray.is_initialized()  # the module's Ray: an executor stops only a Ray it started


def test_a_worker_that_cannot_start_names_the_cause(tmp_path, local_ray):
    from prunestudio.engine.study.ray_executor import RayExecutor

    gone = tmp_path / "gone"  # the model folder vanished between validation and the workers
    config = _config(tiny_study_toml(gone))
    executor = RayExecutor(config, WorkerPlan(1, threads=1, gpu=False), prefix="test")
    try:
        with pytest.raises(RuntimeError, match=r"worker test/w0 could not start: .*Error.*gone"):
            executor.setup()
    finally:
        executor.close()


def test_more_workers_than_the_cluster_holds_are_refused_naming_both(tiny_model_dirs,
                                                                    local_ray):
    from prunestudio.engine.study.ray_executor import RayExecutor

    config = _config(tiny_study_toml(tiny_model_dirs["llama"]))
    for plan, needs in ((WorkerPlan(3), "needs 3 GPU\\(s\\) \\(one GPU per worker\\); the Ray "
                                        "cluster has 2"),
                        (WorkerPlan(2, threads=2, gpu=False), "needs 4 CPU\\(s\\) \\(2 CPU "
                                                              "thread\\(s\\) per worker\\)")):
        executor = RayExecutor(config, plan, prefix="test")
        try:
            with pytest.raises(ConfigError, match=needs):
                executor.setup()
        finally:
            executor.close()
