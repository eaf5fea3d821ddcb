"""The MLflow run of a training loop, as a callback: params and tags at the start, metrics and artifacts every
epoch, results at the end, closed as FINISHED, FAILED or KILLED whatever happens.

Default store: SQLite at ``<tracking.dir>/mlflow.db`` with artifacts under ``<tracking.dir>/artifacts``,
both absolute. Figures and checkpoints are written by one background thread (through
``MlflowClient`` with the run id, since MLflow's active run is per thread) so training goes on meanwhile.

A sweep's trial (tag ``nnlab.trial``) does not wait for that thread at its end: the thread logs its figures,
tables and models and then closes the run, while the next trial trains. Until then the run stays RUNNING
(never FINISHED without its files); ``wait_for_uploads`` waits for every such run, and the sweep calls it
before it summarizes, the job of a launcher's process before it returns, and Python at exit (the thread is
joined with its queue emptied). A run left RUNNING by a process killed meanwhile is closed as FAILED by the
next command, with the reason (``close_orphans``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

import nn
from experiments import figures
from experiments.callbacks import Callback, FinalEvaluation, no_test_set
from experiments.outcome import outcome
from experiments.store import experiment_id, first_line, resolve_store, root_cause, run_page, use_store
from experiments.tracking import tags as T
from experiments.tracking.checkpoints import Checkpoints
from experiments.tracking.naming import description, experiment_params, logged_model_name, result_line, run_name
from experiments.tracking.provenance import clear_ending, close_orphans, environment_tags, process_tags
from experiments.tracking.signals import uninterrupted
from nn.data import Dataset
from nn.serialization import write

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


UPLOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-artifacts")  # one, in order, for every run
CLOSING: list[Future] = []  # runs closed on UPLOADER once their files are in (a sweep's trials)
CLOSING_LOCK = threading.Lock()


def wait_for_uploads() -> None:
    """Wait until every run handed to the background thread to close is closed, with its files logged."""
    with CLOSING_LOCK:
        pending = list(CLOSING)
        CLOSING.clear()
    for future in pending:
        try:
            future.result()
        except Exception as err:  # said by the job itself; the run is closed whatever happens
            log.warning("closing an MLflow run in the background failed: %s", err)


def log_input(data, context: str, tags: dict[str, str] | None = None) -> None:
    """``mlflow.log_input``, tried twice: runs in parallel (a sweep's workers) that insert the same new data
    set at the same moment collide on its unique key, and then it exists."""
    try:
        mlflow.log_input(data, context=context, tags=tags)
    except MlflowException:
        mlflow.log_input(data, context=context, tags=tags)


class MlflowRun(Callback):
    """One MLflow run, nested under the active run if there is one (a sweep's parent); ``resume_run_id``
    reopens an interrupted run instead. ``evaluation`` gives the test set's results at the end."""

    def __init__(
        self,
        cfg: DictConfig,
        dataset: Dataset,
        evaluation: FinalEvaluation,
        overrides: list[str],
        hydra_dir: Path | None,
        resume_run_id: str | None = None,
        swept: set[str] = frozenset(),
    ) -> None:
        self.cfg, self.dataset, self.evaluation = cfg, dataset, evaluation
        self.overrides, self.hydra_dir, self.swept, self.resume_run_id = overrides, hydra_dir, swept, resume_run_id
        self.params = experiment_params(cfg, dataset.train.X.shape[1], dataset.num_classes)
        self._pending: list[Future] = []
        self._upload_warnings: set[str] = set()  # causes of failed uploads already said
        self.background = T.TRIAL in cfg.tracking.tags  # a sweep's trial: closed by the thread (module docstring)
        self._scratch = tempfile.TemporaryDirectory(prefix="nnlab-")
        self.checkpoints: Checkpoints | None = None  # made when the run starts: a resumed run's history is known
        self.uri: str | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.state: str | None = None  # how the run was closed (tags.FINISHED, ...), once it is
        self.dead: dict[str, float] = {}  # ReLU layers more than half dead in the last epoch
        self.unclosed: str | None = None  # why the store refused to close the run (a full disk), if it did
        self.last_val_acc: float | None = None  # the last epoch's, for the result line of a run cut short

    # -- the loop's hooks -------------------------------------------------------------------------
    def on_train_start(self, loop: nn.Loop) -> None:
        checkpoints = self.cfg.tracking.checkpoints
        scratch = Path(self._scratch.name)
        stopper = nn.callbacks.early_stopping(loop.callbacks)  # where there is one, it says which epoch is best
        self.checkpoints = Checkpoints(
            checkpoints.policy, checkpoints.every, scratch, self._upload, loop.history, stopper
        )
        self.start(len(loop.history))
        for callback in loop.callbacks:
            if isinstance(callback, Callback):
                callback.run_id = self.run_id

    @uninterrupted
    def on_epoch_end(self, loop: nn.Loop, metrics: dict[str, float]) -> None:
        epoch, last = loop.epoch, loop.epoch == loop.epochs
        mlflow.log_metrics(metrics, step=epoch)
        if epoch % self.cfg.tracking.confusion_every == 0 or last:  # each table lengthens one run tag
            counts = figures.confusion_matrix(
                self.dataset.val.y, loop.val_probs.argmax(axis=1), self.dataset.num_classes
            )
            self._submit(self.client.log_table, self.run_id, figures.confusion_table(counts),
                         f"confusion/val_epoch_{epoch:03d}.json")  # fmt: skip
        self.checkpoints.after_epoch(loop, metrics)
        self.last_val_acc = metrics.get("val/acc")
        self.dead = {k: v for k, v in metrics.items() if k.endswith("dead_fraction") and v > 0.5}

    def on_train_end(self, loop: nn.Loop) -> None:
        kept = next((c.kept_epoch for c in loop.callbacks if getattr(c, "kept_epoch", None)), None)
        self.finish(loop, kept)

    def on_exception(self, loop: nn.Loop, error: BaseException) -> None:
        state, reason = outcome(error, loop)
        if state == T.KILLED:
            if self.run_id is None or self.is_open():
                self.kill(loop.network, loop.epoch, reason)
        elif state == T.PRUNED:
            self.prune(reason, loop.epoch)
        else:
            self.fail(reason, loop.epoch, state)

    @uninterrupted
    def warn(self, message: str) -> None:
        """A problem the run goes on with, as the tag ``nnlab.warning`` (shown in the runs table)."""
        if self.is_open():
            mlflow.set_tag(T.WARNING, message[:5000])

    # -- start ------------------------------------------------------------------------------------
    @uninterrupted
    def start(self, resumed_epochs: int = 0) -> None:
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
        parent = tracking.parent_run_id
        nested = parent is None and mlflow.active_run() is not None
        system = tracking.system_metrics
        if self.resume_run_id is not None:
            run = mlflow.start_run(run_id=self.resume_run_id, nested=nested, log_system_metrics=system)
            self.run_id = run.info.run_id
            self._reopen(resumed_epochs)
            return
        tags = (
            environment_tags()
            | process_tags()
            | {
                T.OVERRIDES: " ".join(self.overrides),
                "dataset.name": self.dataset.name,
                "dataset.checksum": self.dataset.checksum,
                "seed": str(cfg.seed),
            }
            | dict(tracking.tags)
        )
        name = tracking.run_name or run_name(self.overrides, self.swept)
        run = mlflow.start_run(
            experiment_id=experiment, run_name=name, nested=nested, parent_run_id=parent, tags=tags,
            log_system_metrics=system,
        )  # fmt: skip
        self.run_id = run.info.run_id
        mlflow.log_params(self.params)
        config = OmegaConf.to_yaml(cfg, resolve=True)  # as run: no ${...} left
        hydra_dir = self.hydra_dir if self.hydra_dir is not None and self.hydra_dir.is_dir() else None
        if self.background:  # a sweep's trial: on the artifact thread, as its other files
            self._submit(self.client.log_text, self.run_id, config, "config.yaml")
            if hydra_dir is not None:
                self._submit(self.client.log_artifacts, self.run_id, str(hydra_dir), "hydra")
        else:
            mlflow.log_text(config, "config.yaml")
            if hydra_dir is not None:
                mlflow.log_artifacts(str(hydra_dir), "hydra")
        self._log_dataset(self.dataset)

    def _reopen(self, resumed_epochs: int) -> None:
        """A resumed run: its command line as first logged (for the description), and the tags of how it was cut
        off removed, since it goes on."""
        tags = self.client.get_run(self.run_id).data.tags
        self.overrides = tags[T.OVERRIDES].split(" ") if tags.get(T.OVERRIDES) else []
        clear_ending(self.client, self.run_id, tags)
        mlflow.set_tags({T.RESUMED_FROM_EPOCH: str(resumed_epochs)} | process_tags())

    def _log_dataset(self, dataset: Dataset) -> None:
        """The training set as the run's input: its source a file URI, tagged with the content checksum."""
        data = self._numpy_dataset(dataset.train, dataset.name, dataset)
        tags = {"checksum": dataset.checksum, "files": ", ".join(str(path) for path in dataset.files)}
        log_input(data, "training", tags)

    def _logged_best(self, folder: Path) -> Path | None:
        """The best epoch's weights as an earlier process of this (resumed) run logged them, or None."""
        try:
            return Path(self.client.download_artifacts(self.run_id, "checkpoints/best.npz", str(folder)))
        except (MlflowException, OSError):
            return None

    @staticmethod
    def _numpy_dataset(split, name: str, dataset: Dataset):
        """``split`` (X, y) as an MLflow dataset whose source is ``dataset``'s files."""
        with warnings.catch_warnings():  # file:// is registered twice (local artifact schemes); either resolves
            warnings.simplefilter("ignore", UserWarning)
            return mlflow.data.from_numpy(split.X, targets=split.y, source=dataset.source, name=name)

    # -- background work --------------------------------------------------------------------------
    def _submit(self, fn, *args) -> None:
        self._pending.append(UPLOADER.submit(fn, *args))

    def _drain(self) -> None:
        for future in self._pending:
            try:
                future.result()
            except Exception as err:  # a lost figure must not lose the run
                self._warn_upload(err)
        self._pending.clear()

    def _warn_upload(self, err: BaseException) -> None:
        """A failed upload, said once per run and cause (a run of many epochs may fail the same way each time)."""
        if str(err) not in self._upload_warnings:
            self._upload_warnings.add(str(err))
            log.warning("MLflow artifact upload failed: %s (said once for this run)", err)

    def _upload(self, folder: str, name: str, spec: dict, params: dict, extra: dict | None) -> None:
        """Write a checkpoint or state file and log it under ``folder``, on the artifact thread."""
        self._submit(self._write_and_log, folder, name, spec, params, extra)

    def _write_and_log(self, folder: str, name: str, spec: dict, params: dict, extra: dict | None) -> None:
        path = write(Path(self._scratch.name) / folder / name, spec, params, extra)
        self.client.log_artifact(self.run_id, str(path), folder)

    def _figure(self, fig, path: str) -> None:
        self.client.log_figure(self.run_id, fig, path)

    def _draw(self, path: str, make_figure, *args) -> None:
        """``make_figure(*args)`` drawn and logged as ``path``, all on the artifact thread."""
        self._figure(make_figure(*args), path)

    # -- the end ----------------------------------------------------------------------------------
    @uninterrupted
    def finish(self, loop: nn.Loop, kept: int | None = None) -> None:
        """Log the final metrics, tables and figures, the logged models, and close the run as FINISHED.

        ``kept``: the epoch whose weights the network now holds, when a callback restored them (early
        stopping's ``restore_best``)."""
        network, dataset, history, final = loop.network, self.dataset, loop.history, loop.final
        # figures are drawn on the artifact thread (matplotlib's Figure API, no pyplot: one thread per figure)
        self._submit(self._draw, "figures/curves.png", figures.curves_figure, list(history))
        epoch = kept or len(history)
        if self.evaluation.test is not None:
            counts, probs = self.evaluation.test
            predicted = probs.argmax(axis=1)
            if not self.background:  # a sweep's trial keeps the tables (its rerun, sweeps.rerun, draws them)
                self._submit(self._draw, "figures/test_confusion.png", figures.confusion_figure, counts, "test")
            # on the artifact thread, as the validation tables are: each table rewrites the run tag
            # mlflow.loggedArtifacts, and two writers at once collide (UNIQUE constraint) or lose an entry
            self._submit(self.client.log_table, self.run_id, figures.confusion_table(counts), "confusion/test.json")
            self._submit(self.client.log_table, self.run_id, figures.per_class_table(counts), "per_class/test.json")
            if self.cfg.tracking.misclassified > 0 and not self.background:
                test, shown = dataset.test, self.cfg.tracking.misclassified
                self._submit(self._draw, "figures/misclassified.png", figures.misclassified_figure,
                             test.X, test.y, predicted, probs, dataset.image_shape, shown)  # fmt: skip
        test_metrics = {k: v for k, v in final.items() if k.startswith("test/")}
        mlflow.log_metrics({k: v for k, v in final.items() if k not in test_metrics})
        if self.background:  # models and test metrics need the run active in that thread: logged there
            self._submit(self._log_results, network, epoch, test_metrics, True)
        else:
            self._log_results(network, epoch, test_metrics)
        stopper = nn.callbacks.early_stopping(loop.callbacks)
        best = f"best validation accuracy {final['val/best_acc']:.4f} at epoch {final['best_epoch']}"
        if stopper is not None and stopper.monitor != "val/acc":  # the best epoch is the monitor's
            best = (
                f"validation accuracy {final['val/best_acc']:.4f} at the best epoch by {stopper.monitor}, "
                f"{final['best_epoch']}"
            )
        result = (
            f"test accuracy {final['test/acc']:.4f} (loss {final['test/loss']:.4f}), "
            if "test/acc" in final
            else f"{no_test_set(dataset)}; "
        )
        weights = f" on the weights of epoch {kept}" if kept and kept != len(history) else ""
        outcome_line = f"Finished after {len(history)} epochs: {result}{best}{weights}."
        kept_val = next(row["val/acc"] for row in history if row["epoch"] == epoch)
        tags = {T.STATE: T.FINISHED, T.RESULT: result_line(T.FINISHED, epoch, len(history), kept_val, final)}
        if loop.stopped:
            outcome_line += f" Training {loop.stopped}."
            tags |= {T.STOPPED_EARLY: str(len(history)), T.KEPT_EPOCH: str(epoch)}
        if self.dead:
            shares = ", ".join(f"{k.split('/')[1]} {v:.0%}" for k, v in self.dead.items())
            outcome_line += f" More than half of a layer's units are dead on the validation set ({shares})."
            tags[T.WARNING] = f"dead units: {shares}"
        self._end(T.FINISHED, tags, outcome_line)

    def _log_results(self, network: nn.Network, epoch: int, test_metrics: dict, reopen: bool = False) -> None:
        """The logged models (``tracking.log_model``) and the test metrics linked to the last one and to the
        test set; ``reopen``: on the artifact thread, which makes the run its active run meanwhile."""
        if reopen:
            mlflow.start_run(run_id=self.run_id, log_system_metrics=False)
        try:
            models = self._log_models(network, epoch, drain=not reopen) if self.cfg.tracking.log_model else {}
            if test_metrics:  # linked to the final model and the test set: the logged model's page shows them
                dataset = self.dataset
                test_set = self._numpy_dataset(dataset.test, f"{dataset.name}-test", dataset)
                log_input(test_set, "test")
                mlflow.log_metrics(test_metrics, step=epoch, model_id=models.get("last"), dataset=test_set)
        finally:
            if reopen:  # leave it RUNNING: _close_when_uploaded closes it after the last file
                mlflow.end_run(status="RUNNING")

    def _log_models(self, network: nn.Network, epochs: int, drain: bool = True) -> dict[str, str]:
        # epochs: the final weights' epoch
        """The final network as a logged model named by its layer sizes and epoch, ``mlp-64-128-10-e8``
        (registered as ``register_as`` if set) and, when the best epoch (``Checkpoints``: early stopping's where
        the run has it) is another, that epoch's weights as ``mlp-64-128-10-best-e3``; each with its epoch as step
        and a description (``model_note``). Returns ``{"last": model_id, "best": model_id}``."""
        from experiments.pyfunc import log_model, model_name

        example, name = self.dataset.train.X[:1], model_name(network)
        run = mlflow.active_run().info.run_name or self.run_id[:8]
        if drain:  # best.npz is written (on the artifact thread itself, it was, before this job)
            self._drain()
        last = log_model(
            network,
            example,
            logged_model_name(name, epochs),
            step=epochs,
            tags={T.CHECKPOINT: "last", "epoch": str(epochs), T.NOTE: self.model_note(name, run, epochs)},
            registered_model_name=self.cfg.tracking.register_as,
        )
        ids = {"last": last.model_id}
        best_epoch, best_file = self.checkpoints.best_epoch, self.checkpoints.best_file
        if best_epoch != epochs and not best_file.is_file() and self.resume_run_id is not None:
            best_file = self._logged_best(best_file.parent / "logged")
        if best_epoch != epochs and best_file is not None and best_file.is_file():
            tags = {T.CHECKPOINT: "best", "epoch": str(best_epoch), "val/acc": f"{self.checkpoints.best_acc:.4f}"}
            best_note = f"the best epoch, val acc {self.checkpoints.best_acc:.4f}"
            tags[T.NOTE] = self.model_note(name, run, best_epoch, best_note)
            best = log_model(nn.load(best_file), example, logged_model_name(f"{name}-best", best_epoch),
                             step=best_epoch, tags=tags)  # fmt: skip
            ids["best"] = best.model_id
        return ids

    def model_note(self, name: str, run: str, epoch: int, result: str = "") -> str:
        """A logged model's description: its architecture, data, run and epoch, and (the final model) the test
        result linked to it."""
        data, test = self.dataset, self.evaluation.test
        if not result:
            accuracy = f", test acc {np.trace(test[0]) / test[0].sum():.4f}" if test is not None else ""
            result = f"the run's final model{accuracy}"
        return (
            f"{name}: {self.params['model.n_params']} parameters, {self.params['model.activation']}, trained on "
            f"{data.name} ({len(data.train.y)} examples); run {run!r}, epoch {epoch}: {result}."
        )

    def fail(self, reason: str, epoch: int, state: str = T.CRASHED) -> None:
        """Closed as FAILED; ``state`` (tag ``nnlab.state``) tells a diverged run from one that crashed."""
        tags = {T.STATE: state, T.FAILURE_REASON: reason[:5000], T.FAILED_EPOCH: str(epoch)}
        self._end(state, tags, f"{state.capitalize()} in epoch {epoch}: {reason}")

    def prune(self, reason: str, epoch: int) -> None:
        """A sweep's pruner stopped the run: closed as KILLED with ``nnlab.state=pruned``."""
        tags = {T.STATE: T.PRUNED, T.FAILURE_REASON: reason, T.FAILED_EPOCH: str(epoch)}
        self._end(T.PRUNED, tags, f"Pruned at epoch {epoch}: {reason}")

    @uninterrupted
    def kill(self, network: nn.Network, epoch: int, reason: str = "interrupted (Ctrl-C)") -> None:
        """Ctrl-C or SIGTERM: keep what was logged, store the last weights, close the run as KILLED."""
        if self.cfg.tracking.checkpoints.policy != "none" and self.is_open() and self.checkpoints is not None:
            self.checkpoints.save(network, "last.npz")
        tags = {T.STATE: T.KILLED, T.FAILURE_REASON: reason, T.FAILED_EPOCH: str(epoch)}
        self._end(T.KILLED, tags, f"Killed in epoch {epoch}: {reason}; its last weights are checkpoints/last.npz.")

    @uninterrupted
    def _end(self, state: str, tags: dict[str, str], outcome_line: str) -> None:
        """Tag and describe the run, if it was opened, and close it with the status of ``state`` whatever
        happens; when the store refuses even that (a full disk), ``unclosed`` says why and the next command
        on the store closes it."""
        self.state = state
        if T.RESULT not in tags:  # a run cut short: where it stopped and its last validation accuracy
            epoch = int(tags.get(T.FAILED_EPOCH, 0))
            tags = tags | {T.RESULT: result_line(state, epoch, epoch, self.last_val_acc)}
        if self.background and state != T.KILLED and self.is_open():
            note = description(self.overrides, self.params, self.dataset, outcome_line, tags[T.RESULT])
            mlflow.end_run(status="RUNNING")  # detached from this thread; the artifact thread closes it
            future = UPLOADER.submit(self._close_when_uploaded, tags | {T.NOTE: note[:20000]}, T.MLFLOW_STATUS[state])
            with CLOSING_LOCK:
                CLOSING.append(future)
            return
        try:
            if self.is_open():
                note = description(self.overrides, self.params, self.dataset, outcome_line, tags[T.RESULT])
                mlflow.set_tags(tags | {T.NOTE: note[:20000]})
        except Exception:  # closing the run matters more than its tags
            log.debug("could not tag the run before closing it", exc_info=True)
        finally:
            try:
                self._close(T.MLFLOW_STATUS[state])
            except Exception as err:
                self.unclosed = first_line(root_cause(err))

    def _close_when_uploaded(self, tags: dict[str, str], status: str) -> None:
        """On the artifact thread, after this run's files: its end's tags, then its status."""
        for future in self._pending:  # done by now (one thread, in order); a failed one is said, not raised
            if future.done() and future.exception() is not None:
                self._warn_upload(future.exception())
        self._pending.clear()
        try:
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception:  # closing the run matters more than its tags
            log.debug("could not tag the run before closing it", exc_info=True)
        finally:
            self._scratch.cleanup()
            self.client.set_terminated(self.run_id, status)

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
            self._scratch.cleanup()
        finally:
            if self.is_open():
                mlflow.end_run(status=status)
