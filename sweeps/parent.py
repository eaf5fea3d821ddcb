"""The sweep's MLflow parent run: found by its study name (so a rerun resumes it), summarized at the end.

Each trial's run is a child of it (``tracking.parent_run_id``), tagged ``nnlab.study`` and ``nnlab.trial``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from experiments.store import experiment_id, open_store, resolve_store
from experiments.tracking import tags as T
from experiments.tracking.provenance import clear_ending, close_orphans, environment_tags, process_tags
from sweeps.config import SweeperConf
from sweeps.space import Space

log = logging.getLogger("nnlab.sweeps")

TRACKING_ATTR = "nnlab.tracking"  # study user attribute: {"uri", "experiment"} its trials' runs are in
SUMMARY_TAG = "nnlab.sweep.summary"  # the parent's: a digest of the trials its summary shows (``fingerprint``)


def children(client: MlflowClient, experiment_id: str, study_name: str) -> dict[int, Run]:
    """The trial runs of a study by trial number (the latest run of a number, if several)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{T.STUDY}` = '{study_name}'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )
    return {int(r.data.tags[T.TRIAL]): r for r in runs if T.TRIAL in r.data.tags}


def trial_runs(tracking: DictConfig, study_name: str) -> dict[int, Run]:
    """Read-only: the trial runs of a study in ``tracking``'s store ({} when the experiment does not exist)."""
    uri, _ = resolve_store(tracking)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(tracking.experiment)
    return {} if found is None else children(client, found.experiment_id, study_name)


def fingerprint(trials: list[FrozenTrial], objective: str) -> str:
    """A digest of what a summary shows of these trials: their numbers, states, values, params, reasons."""
    shown = [
        (t.number, t.state.name, t.value, t.params, sorted(t.intermediate_values.items()), sorted(t.user_attrs.items()))
        for t in trials
    ]
    return hashlib.sha256(json.dumps([objective, shown], default=str).encode()).hexdigest()[:16]


class Parent:
    """The parent run of study ``study_name`` in ``tracking.experiment``: created, or found and reopened
    (or, given ``run_id``, just used)."""

    def __init__(self, tracking: DictConfig, study_name: str, run_id: str | None = None) -> None:
        self.uri, artifact_location = resolve_store(tracking)
        open_store(self.uri)
        self.client = MlflowClient(self.uri)
        self.study_name = study_name
        self.experiment_id = experiment_id(self.client, tracking.experiment, artifact_location)
        if run_id is not None:  # a worker: the driver has opened it
            self.run_id, self.resumed = run_id, True
            return
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{T.SWEEP}` = '{study_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        self.resumed = bool(found)
        close_orphans(self.client, self.experiment_id)
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            clear_ending(self.client, self.run_id, found[0].data.tags)
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in process_tags().items()])
        else:
            tags = environment_tags() | process_tags() | {T.SWEEP: study_name}
            self.run_id = self.client.create_run(
                self.experiment_id, run_name=f"sweep {study_name}", tags=tags
            ).info.run_id

    def describe(self, conf: SweeperConf, space: Space, storage_url: str, overrides: list[str]) -> None:
        """Params of the sweep (on creation only: MLflow params cannot change) and tags that may change."""
        if not self.resumed:
            params = {}
            for kind in ("sampler", "pruner"):
                node = dict(getattr(conf, kind))
                params[kind] = node.pop("_target_").rsplit(".", 1)[-1]
                params |= {f"{kind}.{k}": v for k, v in node.items()}
            params |= {f"space.{k}": d for k, d in space.distributions.items()}
            params |= {"fixed": " ".join(space.fixed), "overrides": " ".join(overrides), "study_name": conf.study_name}
            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        tags = {T.SWEEP_TRIALS: str(conf.n_trials), T.SWEEP_STORAGE: storage_url}
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def children(self) -> dict[int, Run]:
        return children(self.client, self.experiment_id, self.study_name)

    def fail_child(self, trial: FrozenTrial) -> None:
        """Close the run of a trial whose worker died (still RUNNING in MLflow) as FAILED, with the reason."""
        run = self.children().get(trial.number)
        if run is not None and run.info.status == "RUNNING":
            self.client.set_tag(run.info.run_id, T.FAILURE_REASON, trial.user_attrs.get("fail_reason", "worker lost"))
            self.client.set_terminated(run.info.run_id, "FAILED")

    def summarize(self, study: optuna.Study, objective: str) -> None:
        """Best value and params, trial counts, Optuna's plots and the trials table as artifacts; nothing when
        they are those of the study as it is (tag ``SUMMARY_TAG``: the plots take seconds to minutes)."""
        from sweeps.report import figures, trials_table

        trials = study.get_trials(deepcopy=False)
        summarized = fingerprint(trials, objective)
        if self.client.get_run(self.run_id).data.tags.get(SUMMARY_TAG) == summarized:
            log.info("the sweep's parent run already sums up these %d trials", len(trials))
            return
        counts = {s: sum(t.state == s for t in trials) for s in TrialState if s != TrialState.WAITING}
        metrics = {f"trials/{s.name.lower()}": float(n) for s, n in counts.items()}
        tags = {}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            metrics[f"best_{objective.replace('/', '_')}"] = float(best.value)  # no "/": no chart section of its own
            tags = {"best.trial": str(best.number)} | {f"best.{k}": str(v) for k, v in best.params.items()}
            run = self.children().get(best.number)
            if run is not None:
                tags["best.run_id"] = run.info.run_id
        stale = [k for k in self.client.get_run(self.run_id).data.tags if k.startswith("best.") and k not in tags]
        for key in stale:  # an earlier best's params that the new best does not have (a key fixed on rerun)
            self.client.delete_tag(self.run_id, key)
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, len(trials)) for k, v in metrics.items()],  # step: trials so far
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        runs = self.children()
        table = trials_table(study, runs)
        tags[T.NOTE] = sweep_description(study, table, objective, self.experiment_id)[:20000]
        self.client.set_tag(self.run_id, T.NOTE, tags[T.NOTE])
        with tempfile.TemporaryDirectory(prefix="nnlab-sweep-") as tmp:
            out = Path(tmp)
            table.to_csv(out / "trials.csv", index=False)
            if complete:
                (out / "best.json").write_text(
                    json.dumps({"trial": best.number, "value": best.value, "params": best.params}, indent=2)
                )
            figures(study, out, runs)
            self.client.log_artifacts(self.run_id, str(out), "optuna")
        self.client.set_tag(self.run_id, SUMMARY_TAG, summarized)  # last: a summary cut short is redone

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


def sweep_description(study: optuna.Study, table, objective: str, experiment: str, top: int = 5) -> str:
    """The parent run's MLflow description: the best trial first (bold, with a link to its run), then the top
    ``top`` complete trials as a table whose trial numbers link to their runs, params to 3 significant digits."""
    from experiments.compare import to_markdown

    counts = table["state"].value_counts().to_dict() if len(table) else {}
    tally = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    complete = table[table["state"] == "COMPLETE"] if len(table) else table
    if not len(complete):
        return f"**No complete trial yet** ({tally}) in study `{study.study_name}`."

    def link(row) -> str:
        number, run_id = row["number"], row["run_id"]
        return f"[#{number}](#/experiments/{experiment}/runs/{run_id})" if run_id else f"#{number}"

    best = study.best_trial
    best_row = complete[complete["number"] == best.number].iloc[0]
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
    ascending = study.direction == optuna.study.StudyDirection.MINIMIZE
    shown = complete.sort_values("value", ascending=ascending).head(top)
    columns = {"trial": [link(row) for _, row in shown.iterrows()], objective: shown["value"].to_numpy()}
    if "test/acc" in shown:
        columns["test/acc"] = shown["test/acc"].to_numpy()
    for column in [c for c in shown.columns if c.startswith("params.")]:
        columns[column.removeprefix("params.")] = [f"{v:.3g}" if isinstance(v, float) else v for v in shown[column]]
    columns["epochs"] = shown["epochs"].to_numpy()
    return (
        f"**Best trial {link(best_row)}: {objective} {best.value:.4f}** ({params})\n\n"
        f"Study `{study.study_name}`: {len(table)} trials ({tally}). Top {len(shown)}:\n\n"
        + to_markdown(pd.DataFrame(columns))
    )
