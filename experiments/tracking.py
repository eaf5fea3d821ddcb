"""MLflow tracking of a run: params and tags at the start, metrics and artifacts every epoch, results at the end.

Default store: SQLite at ``<tracking.dir>/mlflow.db`` with artifacts under ``<tracking.dir>/artifacts``,
both absolute. Figures and checkpoints are written by one background thread (through
``MlflowClient`` with the run id, since MLflow's active run is per thread) so training goes on meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
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
from experiments.store import resolve_store
from nn.data import Dataset
from nn.network import parameter_count
from nn.serialization import architecture, training_snapshot, write

log = logging.getLogger("nnlab")


DEFAULT_STORE = Path("mlruns") / "mlflow.db"


def tracking_uri(uri: str | None = None) -> str:
    """The store a command reads: ``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else
    ``sqlite:///<cwd>/mlruns/mlflow.db`` (where ``run.py`` tracks by default)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE.resolve()}"


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) if it does not exist yet."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created meanwhile by a parallel run
        return client.get_experiment_by_name(name).experiment_id


def browse_hint(uri: str) -> str:
    """How to see the runs of tracking URI ``uri``: a server's own web UI, or ``mlflow ui`` over a database."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return f"open {uri} in a browser (the tracking server's UI)"
    if scheme == "databricks":
        return "open the experiment in your Databricks workspace"
    return f"mlflow ui --backend-store-uri {uri}"


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


def run_name(overrides: list[str]) -> str:
    """A readable name from the command-line overrides, e.g. ``model=wide1024 optimizer.lr=0.05``."""
    shown = [o for o in overrides if not o.lstrip("+~").startswith(("tracking.", "hydra."))]
    return " ".join(shown) if shown else "defaults"


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
            f"its process (pid {pid} on {host}) ended without closing it: killed (SIGKILL, out of memory) or "
            "crashed. Closed by the next command that opened this store; resume.py continues it from its last state."
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
    tags = {"numpy.version": np.__version__, "python.version": platform.python_version()}
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


class NullTracker:
    """``tracking=none``: the same calls, nothing stored."""

    run_id: str | None = None
    uri: str | None = None

    def start(self) -> None:
        pass

    def log_epoch(self, epoch, metrics, network, val_counts, last, trainer, history) -> None:
        pass

    def finish(self, network, dataset, history, final_metrics, test) -> None:
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
    ) -> None:
        tracking = cfg.tracking
        self.confusion_every = tracking.confusion_every
        self.policy, self.every = tracking.checkpoints.policy, tracking.checkpoints.every
        self.log_model, self.misclassified = tracking.log_model, tracking.misclassified
        self.best_acc = max((row["val/acc"] for row in history or []), default=-1.0)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-artifacts")
        self._pending: list[Future] = []
        self._scratch = tempfile.TemporaryDirectory(prefix="nnlab-")
        self.cfg, self.dataset, self.overrides, self.hydra_dir = cfg, dataset, overrides, hydra_dir
        self.params = experiment_params(cfg, dataset.train.X.shape[1], dataset.num_classes)
        self.resume_run_id, self.resumed_epochs = resume_run_id, len(history or [])
        self.uri: str | None = None
        self.run_id: str | None = None

    def start(self) -> None:
        """Open the run (or reopen the resumed one) and log what is known before training.

        Once the run exists, ``run_id`` is set: a failure after that is closed by ``fail``."""
        cfg, tracking = self.cfg, self.cfg.tracking
        self.uri, artifact_location = resolve_store(tracking)  # checked by train() before the data was read
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        experiment = experiment_id(self.client, tracking.experiment, artifact_location)
        close_orphans(self.client, experiment)
        name = tracking.run_name or run_name(self.overrides)
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
        if self.resume_run_id is not None:
            run = mlflow.start_run(run_id=self.resume_run_id, nested=nested)
        else:
            run = mlflow.start_run(
                experiment_id=experiment, run_name=name, nested=nested, parent_run_id=parent, tags=tags
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
        with warnings.catch_warnings():  # file:// is registered twice (local artifact schemes); either resolves
            warnings.simplefilter("ignore", UserWarning)
            data = mlflow.data.from_numpy(
                dataset.train.X, targets=dataset.train.y, source=dataset.source, name=dataset.name
            )
        tags = {"checksum": dataset.checksum, "files": ", ".join(str(path) for path in dataset.files)}
        try:
            mlflow.log_input(data, context="training", tags=tags)
        except MlflowException:  # a parallel run inserted the same data set at the same moment: it exists now
            mlflow.log_input(data, context="training", tags=tags)

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

    def _write_checkpoint(self, spec: dict, params: dict, name: str, extra: dict | None = None) -> None:
        path = write(Path(self._scratch.name) / name, spec, params, extra)
        self.client.log_artifact(self.run_id, str(path), "checkpoints")

    def _resume_point(self, network: nn.Network, trainer: nn.Trainer, history: list[dict]) -> None:
        """Everything ``experiments/resume.py`` needs to continue after this epoch, in one of two files
        used in turn, so that a kill while one is being written leaves the other intact."""
        epoch = len(history)
        spec, params, arrays = training_snapshot(network, trainer.state_dict(), {"epoch": epoch, "history": history})
        self._submit(self._write_checkpoint, spec, params, f"resume_{'ab'[epoch % 2]}.npz", arrays)

    def _confusion_image(self, counts: np.ndarray, epoch: int) -> None:
        fig = figures.confusion_figure(counts, title=f"validation, epoch {epoch}")
        self.client.log_image(self.run_id, figures.figure_to_array(fig), key="val_confusion", step=epoch)

    # -- the run's life -------------------------------------------------------------------------
    def log_epoch(
        self, epoch: int, metrics: dict, network: nn.Network, val_counts: np.ndarray, last: bool, trainer, history
    ) -> None:
        mlflow.log_metrics(metrics, step=epoch)
        confusion = {"epoch": epoch, "rows": "true label", "columns": "predicted label", "counts": val_counts.tolist()}
        self._submit(self.client.log_dict, self.run_id, confusion, f"confusion/val_epoch_{epoch:03d}.json")
        if epoch % self.confusion_every == 0 or last:
            self._submit(self._confusion_image, val_counts, epoch)
        if self.policy == "all" or (self.policy == "every_k" and epoch % self.every == 0):
            self._checkpoint(network, f"epoch_{epoch:03d}.npz")
        if self.policy == "best_and_last" and metrics["val/acc"] > self.best_acc:
            self._checkpoint(network, "best.npz")
        self.best_acc = max(self.best_acc, metrics["val/acc"])
        if self.policy in ("best_and_last", "last") or (self.policy == "every_k" and last):
            self._checkpoint(network, "last.npz")
        if self.policy != "none" and not last:
            self._resume_point(network, trainer, history)

    def finish(self, network: nn.Network, dataset: Dataset, history: list[dict], final: dict, test) -> None:
        """Log final metrics and figures, the pyfunc model, and close the run as FINISHED."""
        mlflow.log_metrics(final)
        self._submit(self._figure, figures.curves_figure(history), "figures/curves.png")
        if test is not None:
            counts, probs = test
            predicted = probs.argmax(axis=1)
            self._submit(self._figure, figures.confusion_figure(counts, title="test"), "figures/test_confusion.png")
            mlflow.log_dict({"counts": counts.tolist()}, "confusion/test.json")
            mlflow.log_dict(figures.per_class_accuracy(counts), "test_per_class_accuracy.json")
            if self.misclassified > 0:
                grid = figures.misclassified_figure(
                    dataset.test.X, dataset.test.y, predicted, probs, dataset.image_shape, self.misclassified
                )
                self._submit(self._figure, grid, "figures/misclassified.png")
        if self.log_model:
            from experiments.pyfunc import log_model

            log_model(network, dataset.train.X[:5])
        best = f"best validation accuracy {final['val/best_acc']:.4f} at epoch {final['best_epoch']}"
        result = (
            f"test accuracy {final['test/acc']:.4f} (loss {final['test/loss']:.4f}), " if "test/acc" in final else ""
        )
        self._end("FINISHED", {"nnlab.state": "finished"}, f"Finished after {len(history)} epochs: {result}{best}.")

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

    def warn(self, message: str) -> None:
        """A problem the run goes on with, as the tag ``nnlab.warning`` (shown in the runs table)."""
        if self._open():
            mlflow.set_tag("nnlab.warning", message[:5000])

    def kill(self, network: nn.Network, epoch: int, reason: str = "interrupted (Ctrl-C)") -> None:
        """Ctrl-C or SIGTERM: keep what was logged, store the last weights, close the run as KILLED."""
        if self.policy != "none" and self._open():
            self._checkpoint(network, "last.npz")
        tags = {"nnlab.state": "killed", "nnlab.failure_reason": reason, "nnlab.failed_epoch": str(epoch)}
        self._end("KILLED", tags, f"Killed in epoch {epoch}: {reason}; its last weights are checkpoints/last.npz.")

    def _end(self, status: str, tags: dict[str, str], outcome: str) -> None:
        """Tag and describe the run, if it was opened, and close it with ``status`` whatever happens."""
        try:
            if self._open():
                mlflow.set_tags(tags | {"mlflow.note.content": self.description(outcome)[:20000]})
        finally:
            self._close(status)

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

    def _open(self) -> bool:
        """Whether this tracker's run is the active run (started and not yet closed)."""
        active = mlflow.active_run()
        return self.run_id is not None and active is not None and active.info.run_id == self.run_id

    def _close(self, status: str) -> None:
        try:
            self._drain()
            self._worker.shutdown(wait=True)
            self._scratch.cleanup()
        finally:
            if self._open():
                mlflow.end_run(status=status)
