"""Bad input and faults, end to end on digits: each ends in one paragraph naming the cause and the fix, a
non-zero exit, nothing stored lost, and no run left RUNNING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments import compare, predict, reproduce, resume
from experiments.schema import ConfigError
from experiments.store import StoreError
from experiments.train import train
from nn.data import datasets
from sweeps import report

REPO = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(REPO / "experiments" / "run.py")]
QUICK = ["dataset=digits", "model=mlp128", "train.progress=false", "tracking.log_model=false"]


def no_data(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a data file was read before the store was checked")

    for reader in ("_read_digits", "_read_csv_dataset", "_read_idx_dataset"):
        monkeypatch.setattr(datasets, reader, refuse)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("junk.db", "is not a SQLite database"),
        ("a-folder", "is a directory, not a SQLite file"),
        ("foo://bar", "has a scheme MLflow does not know"),
        ("file:///tmp/x", "plain folder, which MLflow 3 no longer accepts"),
        ("under-a-file/sub/mlflow.db", "cannot be created"),
    ],
)
def test_a_broken_store_is_refused_before_any_data_is_read(store, says, compose, tmp_path, monkeypatch):
    (tmp_path / "junk.db").write_text("junk\n")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "under-a-file").write_text("")
    uri = store if "://" in store else f"sqlite:///{tmp_path / store}"
    no_data(monkeypatch)
    with pytest.raises(StoreError, match=says) as caught:
        train(compose(*QUICK, f"tracking.uri={uri}"))
    assert "tracking=none" in str(caught.value) and "\n" not in str(caught.value)
    assert (tmp_path / "junk.db").read_text() == "junk\n"  # nothing overwritten


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_refused_within_15_seconds(compose, monkeypatch):
    no_data(monkeypatch)
    start = time.monotonic()
    with pytest.raises(StoreError, match="did not answer within 8 s"):
        train(compose(*QUICK, f"tracking.uri=http://127.0.0.1:{closed_port()}"))
    assert time.monotonic() - start < 15


@pytest.mark.slow
def test_the_command_line_prints_one_paragraph_and_exits_2_for_a_broken_store(tmp_path):
    (tmp_path / "mlflow.db").write_text("junk\n")
    done = subprocess.run([*RUN, *QUICK, f"tracking.dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "is not a SQLite database" in done.stderr + done.stdout


@pytest.mark.slow
def test_processes_starting_at_once_on_a_new_store_all_log_their_run(tmp_path):
    store = tmp_path / "store"
    command = [*RUN, *QUICK, "train.epochs=1", f"tracking.dir={store}", "tracking.misclassified=0"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nnlab").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3


def start_run(tmp_path, *extra: str) -> subprocess.Popen:
    command = [*RUN, *QUICK, "train.epochs=500", f"tracking.dir={tmp_path}", "tracking.misclassified=0", *extra]
    return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_epoch(process: subprocess.Popen, epoch: int = 2) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if f"epoch {epoch}/" in line:
            return lines
    raise AssertionError("".join(lines))


def only_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nnlab").experiment_id])
    return client, run


@pytest.mark.slow
def test_sigterm_closes_the_run_as_killed_and_exits_143_with_one_line(tmp_path):
    process = start_run(tmp_path)
    wait_for_epoch(process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output[-2000:]
    client, run = only_run(tmp_path)
    run_id = run.info.run_id
    assert "Traceback" not in output and f"terminated (SIGTERM): MLflow run {run_id} is closed as KILLED" in output
    assert f"python experiments/resume.py {run_id} continues it" in output  # the command to type, with the id
    assert run.info.status == "KILLED" and run.data.tags["nnlab.failure_reason"] == "terminated (SIGTERM)"
    assert "checkpoints/last.npz" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    process = start_run(tmp_path)
    wait_for_epoch(process)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130 and "Traceback" not in output, output[-2000:]
    assert "interrupted (Ctrl-C)" in output
    assert only_run(tmp_path)[1].info.status == "KILLED"


def test_ctrl_c_while_an_epoch_is_written_is_held_until_the_write_ends(
    compose, mlflow_store, experiment_name, monkeypatch
):
    """An interrupt inside a SQLite transaction left the store locked and the run RUNNING (1 of 15 Ctrl-Cs)."""
    import mlflow

    write = mlflow.log_metrics

    def interrupted_write(metrics, step=None, **kwargs):
        if step == 1 and "val/acc" in metrics:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the signal arrives in the middle of the write
        return write(metrics, step=step, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", interrupted_write)
    cfg = compose(*QUICK, "train.epochs=3", *mlflow_store.overrides(experiment_name))
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    (run,) = mlflow_store.runs(experiment_name)
    assert run.info.status == "KILLED"
    assert [m.step for m in mlflow_store.client.get_metric_history(run.info.run_id, "val/acc")] == [1]


def disk_full() -> Exception:
    """What MLflow raises when SQLite cannot write: its exception, caused by SQLAlchemy's, caused by sqlite3's."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as err:
            raise MlflowException("(raised as a result of Query-invoked autoflush)\n[SQL: INSERT ...]") from err
    except MlflowException as err:
        return err


def test_a_full_disk_fails_the_run_in_one_paragraph_and_says_who_closes_it(
    compose, mlflow_store, experiment_name, monkeypatch
):
    import mlflow

    from experiments.outcome import RunFailed

    write, end = mlflow.log_metrics, mlflow.end_run

    def full_after_epoch_1(metrics, step=None, **kwargs):
        if step == 2:
            raise disk_full()
        return write(metrics, step=step, **kwargs)

    def refused(*args, **kwargs):
        raise disk_full()

    monkeypatch.setattr(mlflow, "log_metrics", full_after_epoch_1)
    monkeypatch.setattr(mlflow, "end_run", refused)
    with pytest.raises(RunFailed) as caught:
        train(compose(*QUICK, "train.epochs=3", *mlflow_store.overrides(experiment_name)))
    message = caught.value.explain()
    assert message.startswith("The run failed: a disk is full (OperationalError: database or disk is full). Free")
    assert f"refused to record the end of MLflow run {caught.value.run_id} too" in message and "\n" not in message
    assert mlflow_store.client.get_run(caught.value.run_id).info.status == "RUNNING"  # for the next command
    monkeypatch.setattr(mlflow, "end_run", end)


def test_a_run_whose_end_the_store_refuses_is_not_reported_finished(
    compose, mlflow_store, experiment_name, monkeypatch
):
    import mlflow

    from experiments.outcome import RunFailed

    def refused(*args, **kwargs):
        raise disk_full()

    end = mlflow.end_run
    monkeypatch.setattr(mlflow, "end_run", refused)
    with pytest.raises(RunFailed, match="it trained to the end, but the store did not record that") as caught:
        train(compose(*QUICK, "train.epochs=1", *mlflow_store.overrides(experiment_name)))
    assert mlflow_store.client.get_run(caught.value.run_id).info.status == "RUNNING"
    monkeypatch.setattr(mlflow, "end_run", end)  # the run is ended (KILLED) after the test, as a fixture does


def test_a_store_that_cannot_be_created_is_refused_in_one_paragraph(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from experiments import store as store_module

    def refused(self, *args, **kwargs):
        raise disk_full()

    monkeypatch.setattr(MlflowClient, "search_experiments", refused)
    with pytest.raises(StoreError, match=r"could not be created \(OperationalError: database or disk is full\)"):
        store_module.open_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")


@pytest.mark.slow
def test_a_run_orphaned_by_sigkill_is_closed_by_the_next_command_on_the_store(tmp_path):
    process = start_run(tmp_path)
    wait_for_epoch(process)
    process.kill()
    process.wait(60)
    _, orphan = only_run(tmp_path)
    assert orphan.info.status == "RUNNING"
    done = subprocess.run([*RUN, *QUICK, "train.epochs=1", f"tracking.dir={tmp_path}"], cwd=tmp_path, timeout=300)
    assert done.returncode == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    closed = client.get_run(orphan.info.run_id)
    assert closed.info.status == "FAILED"
    assert f"pid {closed.data.tags['nnlab.pid']}" in closed.data.tags["nnlab.failure_reason"]


@pytest.mark.slow
def test_resume_of_a_run_killed_before_its_first_state_closes_it(compose, mlflow_store, experiment_name, capsys):
    cfg = compose(
        *QUICK, "train.epochs=1", "tracking.checkpoints.policy=none", *mlflow_store.overrides(experiment_name)
    )
    run_id = train(cfg).run_id
    mlflow_store.client.update_run(run_id, status="RUNNING")  # as SIGKILL in epoch 1 leaves it
    assert resume.main([run_id, "--tracking-uri", mlflow_store.uri]) == 2
    assert "now closed as FAILED" in capsys.readouterr().err
    run = mlflow_store.client.get_run(run_id)
    assert run.info.status == "FAILED" and "not resumable" in run.data.tags["nnlab.failure_reason"]


def test_resume_of_a_run_killed_before_its_config_was_logged_closes_it(mlflow_store, experiment_name, capsys):
    from experiments.store import experiment_id

    created = mlflow_store.client.create_run(experiment_id(mlflow_store.client, experiment_name))  # RUNNING, empty
    run_id = created.info.run_id
    assert resume.main([run_id, "--tracking-uri", mlflow_store.uri]) == 2
    said = capsys.readouterr().err
    assert "has no config.yaml" in said and "now closed as FAILED" in said
    run = mlflow_store.client.get_run(run_id)
    assert run.info.status == "FAILED" and "not resumable" in run.data.tags["nnlab.failure_reason"]


def test_read_commands_do_not_create_a_store_at_a_mistyped_path(tmp_path, capsys):
    missing = tmp_path / "typo" / "mlflow.db"
    for command in (resume.main, reproduce.main):
        assert command(["0" * 32, "--tracking-uri", f"sqlite:///{missing}"]) == 2
        assert "There is no MLflow store at" in capsys.readouterr().err
    assert compare.main(["--tracking-uri", f"sqlite:///{missing}"]) == 1
    assert "There is no MLflow store at" in capsys.readouterr().err
    assert not missing.parent.exists()


@pytest.mark.slow
def test_artifacts_go_beside_the_sqlite_store_not_into_the_current_folder(tmp_path):
    store, here = tmp_path / "elsewhere", tmp_path / "here"
    here.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    done = subprocess.run([*RUN, *QUICK, "train.epochs=1", f"tracking.uri={uri}"], cwd=here, timeout=300)
    assert done.returncode == 0
    assert list(here.iterdir()) == [] or not (here / "mlruns").exists()
    assert any((store / "artifacts").rglob("config.yaml"))


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["+train.epoch=3"], r"Unknown key\(s\) in train: epoch \(did you mean epochs\?\)"),
        (["+optimizer.lrr=1"], r"Unknown key\(s\) in optimizer: lrr \(did you mean lr\?\)"),
        (["optimizer.lr=inf"], "optimizer.lr=inf is not allowed"),
        (["seed=-1"], "seed=-1 is not allowed"),
        (["model.hidden=[100000000]"], "model.hidden=.* must be small enough to fit: .* GiB"),
        (["schedule=warmup_cosine", "train.epochs=2"], r"schedule.epochs=2 is not allowed: .*shorter than the run"),
    ],
)
def test_config_values_that_slipped_through_are_refused(overrides, says, compose, mlflow_store, experiment_name):
    with pytest.raises(ConfigError, match=says):
        train(compose(*QUICK, *overrides, *mlflow_store.overrides(experiment_name)))
    assert mlflow_store.runs(experiment_name) == []


def test_a_full_batch_run_on_digits_is_not_taken_for_a_diverged_one(compose):
    result = train(compose(*QUICK, "train.batch_size=null", "train.epochs=3", "tracking=none"))
    assert result.status == "finished"


def test_a_csv_too_small_to_split_names_the_file_and_the_key(compose, tmp_path):
    import numpy as np

    table = np.column_stack([np.arange(3), np.zeros((3, 784), dtype=int)])
    np.savetxt(tmp_path / "tiny.csv", table, fmt="%d", delimiter=",")
    cfg = compose("dataset=csv", f"dataset.train_csv={tmp_path / 'tiny.csv'}", "tracking=none", "train.epochs=1")
    with pytest.raises(datasets.DataError, match=r"tiny\.csv \(3 labelled rows\).*dataset\.val_fraction"):
        train(cfg)


@pytest.mark.slow
def test_sweep_config_errors_end_in_one_message_and_exit_2(tmp_path):
    for bad in (
        "hydra.sweeper.n_trials=0",
        "optimizer.lr=tag(log,interval(0,1))",
        "hydra.sweeper.sampler._target_=x.Y",
    ):
        command = [*RUN, "-m", "sweep=digits_smoke", "tracking=none", f"hydra.sweep.dir={tmp_path}", bad]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (bad, done.stderr[-2000:])


def test_a_report_on_a_file_that_is_not_a_journal_says_so(tmp_path, capsys):
    (tmp_path / "x.log").write_bytes(b"\x89PNG not a journal")
    assert report.main(["--study", "x", "--storage", str(tmp_path / "x.log")]) == 2
    assert "cannot read study 'x'" in capsys.readouterr().err


def test_predict_refuses_an_image_too_large_to_decode_before_decoding_it(tmp_path):
    from PIL import Image

    Image.new("L", (6000, 6000)).save(tmp_path / "huge.png")
    with pytest.raises(predict.InputError, match="6000x6000 pixels, more than the 25 million"):
        predict.image_features(tmp_path / "huge.png")


def test_ci_refuses_to_run_without_the_data_folder(tmp_path):
    check = REPO / ".ci" / "check-data"
    assert subprocess.run([check, str(tmp_path / "missing")], capture_output=True).returncode == 1
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    assert subprocess.run([check, str(tmp_path / "data")], capture_output=True).returncode == 1
    data_dir = os.environ.get("NNLAB_DATA_DIR")
    if data_dir:
        found = subprocess.run([check, data_dir], capture_output=True, text=True)
        assert found.returncode == 0 and Path(found.stdout.strip()).resolve() == Path(data_dir).resolve()


@pytest.mark.slow
def test_predict_against_an_unreachable_tracking_server_gives_up_within_15_seconds():
    start = time.monotonic()
    with pytest.raises(predict.InputError, match="did not answer within 8 s"):
        predict.load_model("runs:/0123456789abcdef0123456789abcdef/model", f"http://127.0.0.1:{closed_port()}")
    assert time.monotonic() - start < 15
