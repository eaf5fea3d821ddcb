"""MLflow tracking of a run: params and tags at the start, metrics and artifacts every epoch, results at the end.

Default store: SQLite at ``<tracking.dir>/mlflow.db`` with artifacts under ``<tracking.dir>/artifacts``,
both absolute. Figures and checkpoints are written by one background thread (through
``MlflowClient`` with the run id, since MLflow's active run is per thread) so training goes on meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

import nn
from experiments import figures
from experiments.store import first_line, resolve_store, root_cause, sqlite_path, use_store
from nn.data import Dataset
from nn.network import parameter_count
from nn.serialization import architecture, training_snapshot, write

log = logging.getLogger("nnlab")


# MLflow's loggers, at the level they are kept to: INFO lines a user cannot act on (system-metrics monitor
# start/stop, input-example validation), and a failed SQL write's traceback, logged before MLflow raises the
# error to us, which reports it in one paragraph
QUIET_LOGGERS = {
    "mlflow.system_metrics": logging.WARNING,
    "mlflow.pyfunc": logging.WARNING,
    "mlflow.models.model": logging.WARNING,
    "mlflow.store.db.utils": logging.CRITICAL,
}
RESUME_FOLDER, RESUME_STATES = "resume", ("state_a.npz", "state_b.npz")  # a run's training state, written in turn


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens it as model training


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) if it does not exist yet.

    A new experiment is tagged as model development, so the MLflow UI opens it in its model-training view."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
    except MlflowException:  # created meanwhile by a parallel run
        return client.get_experiment_by_name(name).experiment_id


UI_PORT = 5000


def ui_command(uri: str) -> str:
    """The README's lean ``mlflow ui`` (one worker, no GenAI job runner) over store ``uri``."""
    return (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {uri} "
        f"--host 127.0.0.1 --port {UI_PORT} --workers 1"
    )


def run_page(uri: str, experiment: str, run_id: str) -> str:
    """Where to see a run: the address of its page in the UI's model-training view and, for a database
    store, the command that serves that UI."""
    route = f"#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return f"{uri.rstrip('/')}/{route}"
    if scheme == "databricks":
        return f"run {run_id} of experiment {experiment} in your Databricks workspace"
    return f"http://127.0.0.1:{UI_PORT}/{route} (serve the UI with: {ui_command(uri)})"


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.05}}`` -> ``{"optimizer.lr": 0.05}``; lists and other values are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


CLASS_GROUPS = ("optimizer", "schedule", "clipping", "augment")  # groups whose option is a class: logged by name


def experiment_params(cfg: DictConfig, input_dim: int, num_classes: int) -> dict[str, str]:
    """The choices that define the experiment, as MLflow params (the whole config is the ``config.yaml``
    artifact): the data set, the network with its numeric ``model.depth``, ``model.width`` (widest hidden
    layer) and ``model.n_params``, each class group by class name with its arguments, batch size, epochs and
    seed. Nothing about where or how the run is tracked."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    data, model, train = resolved["dataset"], resolved["model"], resolved["train"]
    hidden = list(model["hidden"])
    sizes = [input_dim, *hidden, num_classes]
    params: dict[str, Any] = {"dataset": data["name"]}
    defaults = {"subset": None, "split": "holdout", "standardize": False}  # shown only when changed
    params |= {f"dataset.{k}": data[k] for k, default in defaults.items() if data.get(k, default) != default}
    params |= {
        "model.hidden": hidden,
        "model.depth": len(hidden),
        "model.width": max(hidden, default=0),
        "model.n_params": parameter_count(sizes),
    }
    params |= {f"model.{k}": model[k] for k in ("activation", "init", "dropout", "input_dropout")}
    for group in CLASS_GROUPS:
        node = resolved.get(group)
        params[group] = "none" if node is None else node["_target_"].rsplit(".", 1)[-1]
        for key, value in flatten(node or {}).items():
            if key.rsplit(".", 1)[-1] not in ("_target_", "_partial_"):
                params[f"{group}.{key}"] = value
    params |= {"train.batch_size": train["batch_size"], "train.epochs": train["epochs"], "seed": resolved["seed"]}
    if train["dtype"] != "float32":
        params["train.dtype"] = train["dtype"]
    return {key: json.dumps(value) if isinstance(value, list) else str(value) for key, value in params.items()}


NAMED_BY_OPTION = ("model", "optimizer", "schedule", "dataset", "experiment")  # wide1024, adam, cosine, digits, r1
CONTEXT = ("dataset", "experiment", "train.epochs")  # what runs compared side by side mostly share: named last
NAME_LIMIT = 60


def short_setting(key: str, value: Any) -> str:
    """``optimizer.lr=0.0581`` for a key's last part and a 3-digit float; a group's option alone: ``wide1024``."""
    if key in NAMED_BY_OPTION:
        return str(value)
    if isinstance(value, float):
        value = f"{value:.3g}"
    return f"{key.rsplit('.', 1)[-1]}={value}"


def run_name(overrides: list[str], swept: Collection[str] = ()) -> str:
    """A short name from the command-line overrides, what tells runs apart first: ``lr=0.05 wide1024 digits``.

    The keys a multirun sweeps (``swept``) come first; groups appear as their option, other keys by their
    last part; the data set, preset and epoch count come last; tracking, Hydra and progress-bar settings
    are left out; cut to ``NAME_LIMIT`` characters."""
    settings = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith(("tracking.", "hydra.", "train.progress")):
            continue
        try:
            value = float(value) if "." in value or "e" in value.lower() else value
        except ValueError:
            pass
        settings.append(((key not in swept, key in CONTEXT), short_setting(key, value)))
    name = " ".join(text for _, text in sorted(settings, key=lambda pair: pair[0])) or "defaults"
    return name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 1] + "…"


def log_input(data, context: str, tags: dict[str, str] | None = None) -> None:
    """``mlflow.log_input``, tried twice: runs in parallel (a sweep's workers) that insert the same new data
    set at the same moment collide on its unique key, and then it exists."""
    try:
        mlflow.log_input(data, context=context, tags=tags)
    except MlflowException:
        mlflow.log_input(data, context=context, tags=tags)


def process_tags() -> dict[str, str]:
    """The host and process that hold a run open: how a later command tells a run orphaned by SIGKILL."""
    return {"nnlab.host": socket.gethostname(), "nnlab.pid": str(os.getpid())}


def close_orphans(client: MlflowClient, experiment_id: str) -> list[str]:
    """Close as FAILED the RUNNING runs of this host whose process is gone (SIGKILL, out of memory, a
    power cut): nothing else would ever close them. Returns their ids."""
    host, closed = socket.gethostname(), []
    runs = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`nnlab.host` = '{host}'"
    )
    for run in runs:
        if "nnlab.trial" in run.data.tags:  # a sweep's trial: the sweep's heartbeats fail it, with their reason
            continue
        pid = int(run.data.tags.get("nnlab.pid", "0"))
        if pid <= 0 or pid == os.getpid() or process_alive(pid):
            continue
        reason = (
            f"its process (pid {pid} on {host}) ended without closing it: killed (SIGKILL, out of memory), crashed, "
            "or the store refused the write (a full disk). Closed by the next command that opened this store; "
            "resume.py continues it from its last state."
        )
        client.set_tag(run.info.run_id, "nnlab.failure_reason", reason)
        client.set_terminated(run.info.run_id, "FAILED")
        closed.append(run.info.run_id)
        log.warning("closed orphaned run %s as FAILED: %s", run.info.run_id, reason)
    return closed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def environment_tags() -> dict[str, str]:
    """Git commit and dirty flag, NumPy and BLAS versions, Python and machine."""
    tags = {"numpy.version": np.__version__, "python.version": platform.python_version(), "machine": machine()}
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    tags["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    try:
        repo = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
            tags["git.dirty"] = str(bool(status.stdout.strip())).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def machine() -> str:
    """The processor and the cores this process may use: ``AMD EPYC 7B13, 2 cores``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {cores} cores"


STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def uninterrupted(method):
    """Hold Ctrl-C and SIGTERM while a tracker's ``method`` writes to its SQLite store, and deliver them once it
    has: an interrupt inside a SQLite transaction leaves the database locked, so the run could then not be
    closed. The same signal a second time stops at once."""

    @functools.wraps(method)
    def held(tracker, *args, **kwargs):
        uri = getattr(tracker, "uri", None)  # None until start() resolves it
        if threading.current_thread() is not threading.main_thread() or (uri and sqlite_path(uri) is None):
            return method(tracker, *args, **kwargs)  # only the main thread gets signals; servers have no lock
        caught: list[int] = []

        def restore() -> None:
            for number, handler in previous.items():
                signal.signal(number, handler)

        def hold(signum, frame) -> None:
            caught.append(signum)
            if caught.count(signum) > 1:  # asked twice: stop now, whatever is being written
                caught.clear()
                restore()
                signal.raise_signal(signum)

        previous = {number: signal.signal(number, hold) for number in STOPPING_SIGNALS}
        try:
            return method(tracker, *args, **kwargs)
        finally:
            restore()
            for number in dict.fromkeys(caught):
                signal.raise_signal(number)  # now its own handler runs: Ctrl-C or SIGTERM as usual

    return held


class NullTracker:
    """``tracking=none``: the same calls, nothing stored."""

    run_id: str | None = None
    uri: str | None = None
    callbacks: list = []
    dead: dict = {}
    unclosed: str | None = None

    def start(self) -> None:
        pass

    def log_epoch(self, epoch, metrics, network, val_counts, last, trainer, history) -> None:
        pass

    def finish(self, network, dataset, history, final_metrics, test, stopped=None, kept=None) -> None:
        pass

    def fail(self, reason: str, epoch: int, state: str = "crashed") -> None:
        pass

    def prune(self, reason: str, epoch: int) -> None:
        pass

    def kill(self, network, epoch: int, reason: str = "") -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class MlflowTracker:
    """One MLflow run, nested under the active run if there is one (a sweep's parent)."""

    def __init__(
        self,
        cfg: DictConfig,
        dataset: Dataset,
        overrides: list[str],
        hydra_dir: Path | None,
        resume_run_id: str | None = None,
        history: list[dict] | None = None,
        swept: set[str] = frozenset(),
    ) -> None:
        tracking = cfg.tracking
        self.confusion_every = tracking.confusion_every
        self.policy, self.every = tracking.checkpoints.policy, tracking.checkpoints.every
        self.log_model, self.misclassified = tracking.log_model, tracking.misclassified
        best = max(history or [], key=lambda row: row["val/acc"], default={"val/acc": -1.0, "epoch": 0})
        self.best_acc, self.best_epoch = best["val/acc"], best["epoch"]
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-artifacts")
        self._pending: list[Future] = []
        self._scratch = tempfile.TemporaryDirectory(prefix="nnlab-")
        self.cfg, self.dataset, self.overrides, self.hydra_dir = cfg, dataset, overrides, hydra_dir
        self.swept = swept
        self.params = experiment_params(cfg, dataset.train.X.shape[1], dataset.num_classes)
        self.resume_run_id, self.resumed_epochs = resume_run_id, len(history or [])
        self.uri: str | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.callbacks: list = []  # train() sets them: their state goes into every resume point
        self.dead: dict[str, float] = {}  # train() sets it: ReLU layers more than half dead, last epoch
        self.unclosed: str | None = None  # why the store refused to close the run (a full disk), if it did

    @uninterrupted
    def start(self) -> None:
        """Open the run (or reopen the resumed one) and log what is known before training.

        Once the run exists, ``run_id`` is set: a failure after that is closed by ``fail``."""
        cfg, tracking = self.cfg, self.cfg.tracking
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for name, level in QUIET_LOGGERS.items():
            logging.getLogger(name).setLevel(level)
        self.uri, artifact_location = resolve_store(tracking)  # checked by train() before the data was read
        use_store(self.uri)
        self.client = MlflowClient(self.uri)
        experiment = self.experiment_id = experiment_id(self.client, tracking.experiment, artifact_location)
        close_orphans(self.client, experiment)
        name = tracking.run_name or run_name(self.overrides, self.swept)
        tags = (
            environment_tags()
            | process_tags()
            | {
                "nnlab.overrides": " ".join(self.overrides),
                "dataset.name": self.dataset.name,
                "dataset.checksum": self.dataset.checksum,
                "seed": str(cfg.seed),
            }
            | dict(tracking.tags)
        )
        parent = tracking.parent_run_id
        nested = parent is None and mlflow.active_run() is not None
        system = tracking.system_metrics
        if self.resume_run_id is not None:
            run = mlflow.start_run(run_id=self.resume_run_id, nested=nested, log_system_metrics=system)
        else:
            run = mlflow.start_run(
                experiment_id=experiment,
                run_name=name,
                nested=nested,
                parent_run_id=parent,
                tags=tags,
                log_system_metrics=system,
            )
        self.run_id = run.info.run_id
        if self.resume_run_id is not None:
            mlflow.set_tags({"nnlab.resumed_from_epoch": str(self.resumed_epochs)} | process_tags())
        else:
            self._log_start()

    def _log_start(self) -> None:
        """Params, the config, Hydra's folder and the dataset input of a new run."""
        mlflow.log_params(self.params)
        mlflow.log_text(OmegaConf.to_yaml(self.cfg), "config.yaml")  # unresolved: what resume and reproduce rebuild
        if self.hydra_dir is not None and self.hydra_dir.is_dir():
            mlflow.log_artifacts(str(self.hydra_dir), "hydra")
        self._log_dataset(self.dataset)

    def _log_dataset(self, dataset: Dataset) -> None:
        """The training set as the run's input: its source a file URI, tagged with the content checksum."""
        data = self._numpy_dataset(dataset.train, dataset.name, dataset)
        tags = {"checksum": dataset.checksum, "files": ", ".join(str(path) for path in dataset.files)}
        log_input(data, "training", tags)

    # -- background work ------------------------------------------------------------------------
    def _submit(self, fn, *args) -> None:
        self._pending.append(self._worker.submit(fn, *args))

    def _drain(self) -> None:
        for future in self._pending:
            try:
                future.result()
            except Exception as err:  # a lost figure must not lose the run
                log.warning("MLflow artifact upload failed: %s", err)
        self._pending.clear()

    def _checkpoint(self, network: nn.Network, name: str) -> None:
        spec, params = architecture(network), {k: v.copy() for k, v in network.params.items()}
        self._submit(self._write_checkpoint, spec, params, name)

    def _write_checkpoint(
        self, spec: dict, params: dict, name: str, extra: dict | None = None, folder: str = "checkpoints"
    ) -> None:
        path = write(Path(self._scratch.name) / folder / name, spec, params, extra)
        self.client.log_artifact(self.run_id, str(path), folder)

    def _resume_point(self, network: nn.Network, trainer: nn.Trainer, history: list[dict]) -> None:
        """Everything ``experiments/resume.py`` needs to continue after this epoch, in ``resume/`` in one of
        two files used in turn, so that a kill while one is being written leaves the other intact."""
        epoch = len(history)
        states, arrays = {}, {}
        for index, callback in enumerate(self.callbacks):
            if hasattr(callback, "state_dict"):
                state = dict(callback.state_dict())
                arrays |= {f"callback{index}/{k}": v for k, v in (state.pop("params", None) or {}).items()}
                states[str(index)] = state
        record = {"epoch": epoch, "history": history, "callbacks": states}
        spec, params, arrays = training_snapshot(network, trainer.state_dict(), record, arrays)
        self._submit(self._write_checkpoint, spec, params, RESUME_STATES[epoch % 2], arrays, RESUME_FOLDER)

    def _confusion_image(self, counts: np.ndarray, epoch: int) -> None:
        fig = figures.confusion_figure(counts, title=f"validation, epoch {epoch}")
        self.client.log_image(self.run_id, figures.figure_to_array(fig), key="val_confusion", step=epoch)

    # -- the run's life -------------------------------------------------------------------------
    @uninterrupted
    def log_epoch(
        self, epoch: int, metrics: dict, network: nn.Network, val_counts: np.ndarray, last: bool, trainer, history
    ) -> None:
        mlflow.log_metrics(metrics, step=epoch)
        if epoch % self.confusion_every == 0 or last:  # each table lengthens one run tag (8,000 characters at most)
            table = figures.confusion_table(val_counts)
            self._submit(self.client.log_table, self.run_id, table, f"confusion/val_epoch_{epoch:03d}.json")
            self._submit(self._confusion_image, val_counts, epoch)
        if self.policy == "all" or (self.policy == "every_k" and epoch % self.every == 0):
            self._checkpoint(network, f"epoch_{epoch:03d}.npz")
        if metrics["val/acc"] > self.best_acc:
            if self.policy == "best_and_last":
                self._checkpoint(network, "best.npz")
            self.best_acc, self.best_epoch = metrics["val/acc"], epoch
        if self.policy in ("best_and_last", "last") or (self.policy == "every_k" and last):
            self._checkpoint(network, "last.npz")
        if self.policy != "none" and not last:
            self._resume_point(network, trainer, history)

    @uninterrupted
    def finish(
        self,
        network: nn.Network,
        dataset: Dataset,
        history: list[dict],
        final: dict,
        test,
        stopped: str | None = None,
        kept: int | None = None,
    ) -> None:
        """Log the final metrics, tables and figures, the logged models, and close the run as FINISHED.

        ``stopped``: why a callback ended training early; ``kept``: the epoch whose weights the network
        now holds, when a callback restored them (early stopping's ``restore_best``)."""
        self._submit(self._figure, figures.curves_figure(history), "figures/curves.png")
        epoch = kept or len(history)
        models = self._log_models(network, epoch) if self.log_model else {}
        if test is not None:
            counts, probs = test
            predicted = probs.argmax(axis=1)
            self._submit(self._figure, figures.confusion_figure(counts, title="test"), "figures/test_confusion.png")
            # on the artifact thread, as the validation tables are: each table rewrites the run tag
            # mlflow.loggedArtifacts, and two writers at once collide (UNIQUE constraint) or lose an entry
            self._submit(self.client.log_table, self.run_id, figures.confusion_table(counts), "confusion/test.json")
            self._submit(self.client.log_table, self.run_id, figures.per_class_table(counts), "per_class/test.json")
            if self.misclassified > 0:
                grid = figures.misclassified_figure(
                    dataset.test.X, dataset.test.y, predicted, probs, dataset.image_shape, self.misclassified
                )
                self._submit(self._figure, grid, "figures/misclassified.png")
        test_metrics = {k: v for k, v in final.items() if k.startswith("test/")}
        mlflow.log_metrics({k: v for k, v in final.items() if k not in test_metrics})
        if test_metrics:  # linked to the final model and the test set: the logged model's page shows them
            test_set = self._numpy_dataset(dataset.test, f"{dataset.name}-test", dataset)
            log_input(test_set, "test")
            mlflow.log_metrics(test_metrics, step=epoch, model_id=models.get("last"), dataset=test_set)
        best = f"best validation accuracy {final['val/best_acc']:.4f} at epoch {final['best_epoch']}"
        result = (
            f"test accuracy {final['test/acc']:.4f} (loss {final['test/loss']:.4f}), " if "test/acc" in final else ""
        )
        weights = f" on the weights of epoch {kept}" if kept and kept != len(history) else ""
        outcome = f"Finished after {len(history)} epochs: {result}{best}{weights}."
        tags = {"nnlab.state": "finished"}
        if stopped:
            outcome += f" Training {stopped}."
            tags |= {"nnlab.stopped_early": str(len(history)), "nnlab.kept_epoch": str(epoch)}
        if self.dead:
            shares = ", ".join(f"{k.split('/')[1]} {v:.0%}" for k, v in self.dead.items())
            outcome += f" More than half of a layer's units are dead on the validation set ({shares})."
            tags["nnlab.warning"] = f"dead units: {shares}"
        self._end("FINISHED", tags, outcome)

    def _log_models(self, network: nn.Network, epochs: int) -> dict[str, str]:  # epochs: the final weights' epoch
        """The final network as a logged model named by its layer sizes (registered as ``register_as`` if
        set) and, when an earlier epoch validated better, that epoch's weights as ``<name>-best``; each with
        its epoch as step. Returns ``{"last": model_id, "best": model_id}``."""
        from experiments.pyfunc import log_model, model_name

        example, name = self.dataset.train.X[:1], model_name(network)
        self._drain()  # best.npz is written
        last = log_model(
            network,
            example,
            name,
            step=epochs,
            tags={"nnlab.checkpoint": "last", "epoch": str(epochs)},
            registered_model_name=self.cfg.tracking.register_as,
        )
        ids = {"last": last.model_id}
        best_file = Path(self._scratch.name) / "checkpoints" / "best.npz"
        if self.best_epoch != epochs and best_file.is_file():
            tags = {"nnlab.checkpoint": "best", "epoch": str(self.best_epoch), "val/acc": f"{self.best_acc:.4f}"}
            best = log_model(nn.load(best_file), example, f"{name}-best", step=self.best_epoch, tags=tags)
            ids["best"] = best.model_id
        return ids

    @staticmethod
    def _numpy_dataset(split, name: str, dataset: Dataset):
        """``split`` (X, y) as an MLflow dataset whose source is ``dataset``'s files."""
        with warnings.catch_warnings():  # file:// is registered twice (local artifact schemes); either resolves
            warnings.simplefilter("ignore", UserWarning)
            return mlflow.data.from_numpy(split.X, targets=split.y, source=dataset.source, name=name)

    def _figure(self, fig, path: str) -> None:
        self.client.log_figure(self.run_id, fig, path)

    def fail(self, reason: str, epoch: int, state: str = "crashed") -> None:
        """Closed as FAILED; ``state`` (tag ``nnlab.state``) tells a diverged run from one that crashed."""
        tags = {"nnlab.state": state, "nnlab.failure_reason": reason[:5000], "nnlab.failed_epoch": str(epoch)}
        self._end("FAILED", tags, f"{state.capitalize()} in epoch {epoch}: {reason}")

    def prune(self, reason: str, epoch: int) -> None:
        """A sweep's pruner stopped the run: closed as KILLED with ``nnlab.state=pruned``."""
        tags = {"nnlab.state": "pruned", "nnlab.failure_reason": reason, "nnlab.failed_epoch": str(epoch)}
        self._end("KILLED", tags, f"Pruned at epoch {epoch}: {reason}")

    @uninterrupted
    def warn(self, message: str) -> None:
        """A problem the run goes on with, as the tag ``nnlab.warning`` (shown in the runs table)."""
        if self.is_open():
            mlflow.set_tag("nnlab.warning", message[:5000])

    @uninterrupted
    def kill(self, network: nn.Network, epoch: int, reason: str = "interrupted (Ctrl-C)") -> None:
        """Ctrl-C or SIGTERM: keep what was logged, store the last weights, close the run as KILLED."""
        if self.policy != "none" and self.is_open():
            self._checkpoint(network, "last.npz")
        tags = {"nnlab.state": "killed", "nnlab.failure_reason": reason, "nnlab.failed_epoch": str(epoch)}
        self._end("KILLED", tags, f"Killed in epoch {epoch}: {reason}; its last weights are checkpoints/last.npz.")

    @uninterrupted
    def _end(self, status: str, tags: dict[str, str], outcome: str) -> None:
        """Tag and describe the run, if it was opened, and close it with ``status`` whatever happens; when the
        store refuses even that (a full disk), ``unclosed`` says why and the next command on the store closes it."""
        try:
            if self.is_open():
                mlflow.set_tags(tags | {"mlflow.note.content": self.description(outcome)[:20000]})
        except Exception:  # closing the run matters more than its tags
            log.debug("could not tag the run before closing it", exc_info=True)
        finally:
            try:
                self._close(status)
            except Exception as err:
                self.unclosed = first_line(root_cause(err))

    def description(self, outcome: str) -> str:
        """The run's MLflow description: the command, the network and data, and how it ended (in full)."""
        params = self.params
        sizes = "-".join(
            map(str, [self.dataset.train.X.shape[1], *json.loads(params["model.hidden"]), self.dataset.num_classes])
        )
        command = " ".join(["python experiments/run.py", *self.overrides])
        return (
            f"`{command}`\n\n{sizes} network ({int(params['model.n_params']):,} parameters), {params['optimizer']} "
            f"lr {params['optimizer.lr']}, {params['schedule']}, on {self.dataset.name} "
            f"({len(self.dataset.train.y)} training examples).\n\n{outcome}"
        )

    def page(self) -> str:
        """Where to see this run in the MLflow UI (``run_page``)."""
        return run_page(self.uri, self.experiment_id, self.run_id)

    def is_open(self) -> bool:
        """Whether this tracker's run is the active run (started and not yet closed)."""
        active = mlflow.active_run()
        return self.run_id is not None and active is not None and active.info.run_id == self.run_id

    def _close(self, status: str) -> None:
        try:
            self._drain()
            self._worker.shutdown(wait=True)
            self._scratch.cleanup()
        finally:
            if self.is_open():
                mlflow.end_run(status=status)
