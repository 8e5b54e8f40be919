"""Issue 10, "nothing lost, nothing silently wrong", through the console script: export never
deletes what it did not write, results are never mixed across models or texts, interrupts leave
a resumable study, exit codes say what happened, and bad input is refused before anything is
recorded. Every refusal is checked to leave the store, the model and unrelated files
byte-identical."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cli_testlib import changed_files, cli, cli_error, start_until, statuses, tree_digest
from prunestudio.store import open_store
from tiny_models import save_tiny_model, slow_study_toml

CALIB = "source=pydoc,n=4,seqlen=32"
EVAL = "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000"
NON_FINITE = "pow(exp(div(X,sub(X,X))))"  # X/ε → e^50 (clamped) → cubed: inf, every time


def _prune(model: Path, db: Path, *extra: str, check: bool = True):
    return cli("prune", "--model", str(model), "--calib", CALIB, "--eval", EVAL,
               "--store", str(db), "--json", "--quiet", *extra, check=check)


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model_dirs):
    """A finished study (dense + wanda 50 %) on a private copy of the tiny LLaMA, in a folder
    that also holds an unrelated user file."""
    root = tmp_path_factory.mktemp("safety")
    model = root / "model"
    shutil.copytree(tiny_model_dirs["llama"], model)
    db = root / "work" / "prunestudio.db"
    db.parent.mkdir()
    (db.parent / "notes.txt").write_text("my notes\n")
    out = json.loads(_prune(model, db, "--methods", "wanda").stdout)
    return {"root": root, "model": model, "db": db, "result": out,
            "wanda": out["candidates"][1]["id"], "dense": out["candidates"][0]["id"]}


def _checkpointed(db: Path) -> None:
    """Fold the -wal into the .db so byte comparisons of the folder are meaningful."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


# -- 1. export never deletes what it did not write -------------------------------------------

@pytest.mark.parametrize("where", ["cwd", "store_folder", "model_folder", "store_flag"])
def test_export_force_refuses_folders_holding_the_store_model_or_cwd(study, where):
    db, model = study["db"], study["model"]
    _checkpointed(db)
    cwd, target, store = db.parent, None, db
    if where == "cwd":
        target = "."
    elif where == "store_folder":
        target = str(db.parent)
    elif where == "model_folder":
        target = str(model)
    else:  # `export 2 DIR --force --store DIR/prunestudio.db`, run from elsewhere
        cwd, target = study["root"], "work"
        store = Path("work/prunestudio.db")
    before = tree_digest(study["root"])
    err = cli_error("export", str(study["wanda"]), target, "--force", "--store", str(store),
                    cwd=cwd)
    expected = {"cwd": "current directory", "store_folder": "the store",
                "model_folder": "the source model", "store_flag": "the store"}[where]
    assert expected in err and "export folder" in err, err
    assert changed_files(before, study["root"]) == []  # store, model, notes.txt: identical


def test_export_refuses_foreign_files_and_an_existing_file(study, tmp_path):
    db = study["db"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work\n")
    before = tree_digest(tmp_path, db.parent)
    err = cli_error("export", str(study["wanda"]), str(foreign), "--force", "--store", str(db))
    assert "thesis.tex" in err and "no prunestudio export wrote" in err
    err = cli_error("export", str(study["wanda"]), str(foreign / "thesis.tex"), "--store",
                    str(db))
    assert "is an existing file" in err
    assert changed_files(before, tmp_path, db.parent) == []


def test_export_force_replaces_only_a_previous_export(study, tmp_path):
    db, out = study["db"], tmp_path / "exports" / "wanda"
    (tmp_path / "exports" / "keep.txt").parent.mkdir(parents=True)
    (tmp_path / "exports" / "keep.txt").write_text("sibling\n")
    cli("export", str(study["wanda"]), str(out), "--store", str(db))
    card = json.loads((out / "prunestudio.json").read_text())
    assert set(card["files"]) == {p.name for p in out.iterdir()}
    assert "is not empty" in cli_error("export", str(study["wanda"]), str(out), "--store",
                                       str(db))
    cli("export", str(study["dense"]), str(out), "--force", "--store", str(db))
    assert json.loads((out / "prunestudio.json").read_text())["candidate"] == study["dense"]
    assert (tmp_path / "exports" / "keep.txt").read_text() == "sibling\n"
    # nothing left behind: no temporary or previous-export folders beside it
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["keep.txt", "wanda"]
    (out / "extra.bin").write_bytes(b"user data")
    err = cli_error("export", str(study["wanda"]), str(out), "--force", "--store", str(db))
    assert "extra.bin" in err and (out / "extra.bin").read_bytes() == b"user data"


def test_a_failing_export_leaves_the_previous_one_intact(tmp_path):
    from prunestudio.engine.export import check_export_target, write_export

    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.bin").write_bytes(b"old")
    (out / "prunestudio.json").write_text(json.dumps({"files": ["prunestudio.json",
                                                                "weights.bin"]}))
    before = tree_digest(tmp_path)
    target = check_export_target(out, force=True, protected={})
    assert target.replaces_previous

    def crash(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_export(target, crash)
    assert tree_digest(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # temporary folder removed


# -- 2. a result computed on another model is refused -----------------------------------------

def test_resume_export_and_eval_refuse_a_replaced_model(tmp_path, tiny_model_dirs):
    model, db = tmp_path / "model", tmp_path / "s.db"
    shutil.copytree(tiny_model_dirs["llama"], model)
    out = json.loads(_prune(model, db, "--methods", "magnitude", "--name", "first").stdout)
    cid = out["candidates"][1]["id"]
    shutil.rmtree(model)
    save_tiny_model("llama", model, seed=7)  # same path, other weights
    _checkpointed(db)
    before = tree_digest(tmp_path)
    for args in (["run", "--resume", "first"], ["export", str(cid), str(tmp_path / "x")],
                 ["eval", str(cid), "--limit", "2"]):
        err = cli_error(*args, "--store", str(db))
        recorded = out["candidates"][0]["info"]["model_fingerprint"]
        assert "refusing to" in err and recorded in err and "--allow-changed-inputs" in err
        assert "now has fingerprint" in err
    assert changed_files(before, tmp_path) == []
    resumed = json.loads(cli("run", "--resume", "first", "--allow-changed-inputs", "--json",
                             "--quiet", "--store", str(db)).stdout)
    assert resumed["study"]["status"] == "finished"
    with open_store(db, readonly=True) as store:
        events = [e["message"] for e in store.db.query(
            "SELECT message FROM events WHERE level = 'warning'")]
    assert any("changed inputs" in e and recorded in e for e in events), events


# -- 3. a ratio never silently doubles; equal structures are flagged --------------------------

def test_structured_rounding_is_nearest_and_equal_structures_are_flagged(tmp_path,
                                                                        tiny_model_dirs):
    db = tmp_path / "s.db"
    # tiny LLaMA: 2 query heads per KV group; 25 % of 2 heads is half a head
    out = json.loads(_prune(tiny_model_dirs["llama"], db, "--methods", "structured",
                            "--no-dense", "--sparsities", "0.2,0.25,0.5",
                            "--option", "structured.ratio=groups",
                            "--option", "structured.attention_unit=query_head",
                            "--option", "structured.mlp=false",
                            "--option", "structured.importance=l2").stdout)
    by_target = {c["spec"]["sparsity"]: c for c in out["candidates"]}
    realised = {s: next(m for m in c["metrics"] if m["name"] == "realised_group_ratio")
                for s, c in by_target.items()}
    assert realised[0.5]["value"] == pytest.approx(0.5)
    assert realised[0.25]["value"] == 0.0  # nearest (ties down), never rounded up to 50 %
    assert realised[0.25]["protocol"]["target"] == pytest.approx(0.25)
    assert "realised 0% query heads" in by_target[0.25]["label"]
    assert "realised 50% query heads" in by_target[0.5]["label"]
    keys = {s: c["info"]["structured"]["structure_key"] for s, c in by_target.items()}
    assert keys[0.2] == keys[0.25] != keys[0.5]
    with open_store(db, readonly=True) as store:
        warnings = [e["message"] for e in store.db.query(
            "SELECT message FROM events WHERE level = 'warning'")]
    twin, first = by_target[0.25]["id"], by_target[0.2]["id"]
    assert any(w.startswith(f"candidate {twin} ") and "same structure as candidate(s) "
               f"{first}" in w for w in warnings), warnings


# -- 4. export --verify needs a recorded perplexity --------------------------------------------

def test_verify_without_a_recorded_perplexity_is_refused(study, tmp_path):
    db = tmp_path / "s.db"
    shutil.copy(study["db"], db)
    with open_store(db) as store:
        config = store.get_study(1)["config"]
        sid = store.create_study(name="manual", kind="grid", model=str(study["model"]),
                                 config=config)
        spec = dict(study["result"]["candidates"][1]["spec"], sparsity=0.3)
        cid, _ = store.add_candidate(sid, spec, origin="grid")
    _checkpointed(db)
    before = tree_digest(tmp_path)
    err = cli_error("export", str(cid), str(tmp_path / "out"), "--verify", "--store", str(db))
    assert changed_files(before, tmp_path) == []
    assert f"candidate {cid} (pending) has no recorded 'in_domain' perplexity" in err
    assert not (tmp_path / "out").exists()


# -- 5. a limit at least the task's size is a full measurement ---------------------------------

def test_task_limit_beyond_the_task_records_fidelity_full(tmp_path, tiny_model_dirs):
    proc = cli("prune", "--model", str(tiny_model_dirs["gpt2"]), "--calib", CALIB, "--eval",
               EVAL, "--store", str(tmp_path / "s.db"), "--json", "--quiet", "--methods",
               "magnitude", "--no-dense", "--tasks", "offline", "--task-limit", "100000",
               cwd=tmp_path)  # not a git checkout: lm-eval's `git describe` stays silent too
    assert proc.stderr == ""  # --quiet: no progress bars, warnings or library chatter
    out = json.loads(proc.stdout)
    acc = next(m for m in out["candidates"][0]["metrics"] if m["name"] == "acc")
    assert (acc["n_samples"], acc["fidelity"]) == (500, "full")
    assert acc["protocol"]["n_available"] == 500 and acc["protocol"]["limit"] == 100000


# -- 6. one numbering: events name candidates by the id that export / eval take ----------------

def test_events_name_candidates_by_id(study):
    with open_store(study["db"], readonly=True) as store:
        events = list(store.db.query(
            "SELECT candidate_id, message FROM events WHERE candidate_id IS NOT NULL"))
    assert events
    for e in events:
        assert e["message"].startswith(f"candidate {e['candidate_id']} "), e


# -- 7. interrupts -----------------------------------------------------------------------------

def _slow_config(tmp_path: Path, model_dir: Path) -> Path:
    cfg = tmp_path / "slow.toml"
    cfg.write_text(slow_study_toml(model_dir))
    return cfg


def _start_and_wait_for_running(cfg: Path, db: Path, name: str) -> subprocess.Popen:
    return start_until(["run", str(cfg), "--store", str(db), "--name", name, "--quiet"], db,
                       lambda rows: statuses(rows).count("done") >= 1
                       and "running" in statuses(rows), what="a running candidate")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_leaves_an_interrupted_resumable_study(tmp_path, tiny_model_dirs, sig, code):
    db = tmp_path / "s.db"
    cfg = _slow_config(tmp_path, tiny_model_dirs["llama"])
    proc = _start_and_wait_for_running(cfg, db, "victim")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    name = signal.Signals(sig).name
    assert f"interrupted by {name}: study victim (id 1)" in err
    assert f"prunestudio run --resume victim --store {db}" in err and "STUDY" not in err
    with open_store(db, readonly=True) as store:
        study = store.get_study("victim")
        statuses = [c["status"] for c in store.candidates(1)]
        events = [e["message"] for e in store.db.query("SELECT message FROM events")]
    assert study["status"] == "interrupted" and "running" not in statuses
    assert any(e.startswith(f"interrupted by {name}: candidate(s)") for e in events), events
    listed = cli("studies", "--store", str(db)).stdout
    assert "interrupted" in listed
    resumed = json.loads(cli("run", "--resume", "victim", "--store", str(db), "--json",
                             "--quiet").stdout)
    assert resumed["study"]["status"] == "finished"
    assert all(c["status"] == "done" for c in resumed["candidates"])
    with open_store(db, readonly=True) as store:
        messages = [e["message"] for e in store.db.query("SELECT message FROM events")]
    assert any(m.startswith("resumed by ") and "no candidate was in flight" in m
               for m in messages), messages


def test_a_killed_study_shows_as_stale_not_running(tmp_path, tiny_model_dirs):
    db = tmp_path / "s.db"
    cfg = _slow_config(tmp_path, tiny_model_dirs["llama"])
    proc = _start_and_wait_for_running(cfg, db, "killed")
    proc.kill()
    proc.wait(30)
    listed = json.loads(cli("studies", "--store", str(db), "--json").stdout)
    (row,) = listed
    assert row["status"] == "running" and row["stale"] is True
    assert "stale" in cli("studies", "--store", str(db)).stdout
    resumed = json.loads(cli("run", "--resume", "killed", "--store", str(db), "--json",
                             "--quiet").stdout)
    assert resumed["study"]["status"] == "finished"
    with open_store(db, readonly=True) as store:
        workers = list(store.db.query("SELECT name FROM workers"))
        messages = [e["message"] for e in store.db.query("SELECT message FROM events")]
    assert len(workers) <= 1, workers  # the dead worker's row is gone
    assert any("1 interrupted candidate(s)" in m for m in messages), messages


# -- 8. / 9. exit codes; checks before anything is recorded -------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["--methods", "wanda", "--patterns", "2:3"], "pattern 2:3: groups of 3"),
    (["--methods", "structured", "--sparsities", "0.99"], "structured"),
    (["--methods", "wanda", "--eval", "role=in_domain,source=pydoc,n=1,seqlen=1024"],
     "1024"),
    (["--methods", "wanda", "--device", "gpu7"], "gpu7"),
    (["--methods", "wanda", "--dtype", "float8"], "float8"),
    (["--methods", "wanda", "--calib", "source=shakespeare,split=hamlet,n=4000,seqlen=512"],
     "hamlet"),
])
def test_impossible_studies_fail_before_anything_is_recorded(tmp_path, tiny_model_dirs, args,
                                                             expected):
    db = tmp_path / "s.db"
    base = ["prune", "--model", str(tiny_model_dirs["llama"]), "--calib", CALIB,
            "--store", str(db), "--quiet"]
    if not any(a.startswith("role=") for a in args):
        base += ["--eval", EVAL]
    model_before = tree_digest(tiny_model_dirs["llama"])
    err = cli_error(*base, *args)
    assert expected in err, err
    assert changed_files(model_before, tiny_model_dirs["llama"]) == []
    if db.exists():
        with open_store(db, readonly=True) as store:
            assert list(store.db.query("SELECT id FROM studies")) == []


def test_finished_with_failed_candidates_exits_3(tmp_path, tiny_model_dirs):
    proc = _prune(tiny_model_dirs["llama"], tmp_path / "s.db", "--methods", "wanda",
                  "--metric", NON_FINITE, check=False)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    out = json.loads(proc.stdout)
    statuses = {c["spec"]["method"]: c["status"] for c in out["candidates"]}
    assert statuses == {"dense": "done", "wanda": "done", "symbolic": "failed"}
    assert "1 candidate(s) failed" in proc.stderr and "exit code 3" in proc.stderr


# -- 10. / 11. / 14. the store's and the model's paths -----------------------------------------

@pytest.mark.parametrize("store", ["/proc/prunestudio.db", "/sys/s.db", "FOLDER"])
def test_impossible_store_paths_are_clear_errors(tmp_path, store):
    path = str(tmp_path) if store == "FOLDER" else store
    (tmp_path / "keep.txt").write_text("mine\n")
    before = tree_digest(tmp_path)
    err = cli_error("studies", "--store", path) if store != "FOLDER" else cli_error(
        "prune", "--store", path, "--quiet")
    assert path in err
    assert ("is a folder; give a file path" in err if store == "FOLDER"
            else "not a place for a store" in err), err
    assert tree_digest(tmp_path) == before


def test_option_lists_are_json(tmp_path, tiny_model_dirs):
    before = tree_digest(tiny_model_dirs["llama"])
    err = cli_error("prune", "--model", str(tiny_model_dirs["llama"]), "--methods", "structured",
                    "--option", "structured.layer_ratios=[1.0,0.5", "--store",
                    str(tmp_path / "s.db"), "--quiet")
    assert "not valid JSON" in err and "[0.5,0.25]" in err
    assert changed_files(before, tiny_model_dirs["llama"]) == [] and not (tmp_path / "s.db").exists()


def test_export_and_eval_of_a_failed_candidate_say_it_failed(tmp_path, tiny_model_dirs):
    db = tmp_path / "s.db"
    out = json.loads(_prune(tiny_model_dirs["llama"], db, "--no-dense", "--metric",
                            NON_FINITE, check=False).stdout)
    (cand,) = out["candidates"]
    assert cand["status"] == "failed"
    _checkpointed(db)
    before = tree_digest(tmp_path, tiny_model_dirs["llama"])
    for args in (["export", str(cand["id"]), str(tmp_path / "x")],
                 ["eval", str(cand["id"])]):
        err = cli_error(*args, "--store", str(db))
        assert f"candidate {cand['id']} of study" in err and "failed when the study ran" in err
    assert not (tmp_path / "x").exists()
    assert changed_files(before, tmp_path, tiny_model_dirs["llama"]) == []


def test_lock_message_names_the_cli_flag(tmp_path, tiny_model_dirs):
    db = tmp_path / "s.db"
    with open_store(db):
        pass
    before = tree_digest(db)
    holder = sqlite3.connect(db, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    try:
        err = cli_error("prune", "--model", str(tiny_model_dirs["llama"]), "--methods", "wanda",
                        "--calib", CALIB, "--eval", EVAL, "--store", str(db), "--quiet",
                        "--lock-timeout", "0.2")
    finally:
        holder.rollback()
        holder.close()
    assert "locked" in err and "--lock-timeout" in err and "open_store" not in err
    assert changed_files(before, db) == []


# -- 13. backup ----------------------------------------------------------------------------------

def test_backup_is_one_consistent_file_and_never_overwrites(study, tmp_path):
    dest = tmp_path / "copy.db"
    cli("backup", str(study["db"]), str(dest))
    assert not Path(f"{dest}-wal").exists()
    with open_store(dest, readonly=True) as copy, open_store(study["db"], readonly=True) as orig:
        assert [c["id"] for c in copy.candidates(1, with_metrics=True)] == [
            c["id"] for c in orig.candidates(1, with_metrics=True)]
        assert copy.candidate(study["wanda"])["metrics"] == orig.candidate(
            study["wanda"])["metrics"]
    before = tree_digest(tmp_path)
    err = cli_error("backup", str(study["db"]), str(dest))
    assert "exists" in err and changed_files(before, tmp_path) == []


# -- 11. / 14. read-only media and full disks (real mounts) -------------------------------------

def test_readers_work_on_a_read_only_medium_and_writers_get_a_clear_error(tmp_path, tmpfs,
                                                                          tiny_model_dirs):
    mount = tmpfs(size="16m")
    db = mount.path / "s.db"
    out = json.loads(_prune(tiny_model_dirs["llama"], db, "--methods", "wanda").stdout)
    mount.remount(readonly=True)
    before = tree_digest(mount.path)
    shown = cli("show", "1", "--store", str(db)).stdout
    assert "wanda 50%" in shown and "dense" in shown
    assert out["study"]["name"] in cli("studies", "--store", str(db)).stdout
    err = cli_error("prune", "--model", str(tiny_model_dirs["llama"]), "--methods", "wanda",
                    "--store", str(db), "--quiet")
    assert "cannot write store" in err and "read-only" in err
    assert tree_digest(mount.path) == before


def test_a_full_disk_stops_the_study_cleanly_and_resume_finishes_it(tmp_path, tmpfs,
                                                                     tiny_model_dirs):
    mount = tmpfs(size="16m")
    db = mount.path / "s.db"
    cfg = _slow_config(tmp_path, tiny_model_dirs["llama"])
    proc = _start_and_wait_for_running(cfg, db, "full")
    filler = mount.fill()  # the disk is full from here on
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "disk full while writing store" in err
    filler.unlink()
    resumed = json.loads(cli("run", "--resume", "full", "--store", str(db), "--json",
                             "--quiet").stdout)
    assert resumed["study"]["status"] == "finished"
    assert [c["status"] for c in resumed["candidates"]] == ["done"] * 7
    hashes = [c["spec_hash"] for c in resumed["candidates"]]
    assert len(hashes) == len(set(hashes))
