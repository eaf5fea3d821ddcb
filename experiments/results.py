"""The results tables of ``docs/results.md``, regenerated from the runs the presets logged.

    python -m experiments.results                            # print the tables
    python -m experiments.results --write docs/results.md    # and replace the tables between its markers

Every preset in ``conf/experiment/`` tags its runs ``preset=<name>`` (and the recipe's own figure as
``claim``); this reads the finished runs of each preset from the store, one per seed (the latest run of a
seed counts), and prints mean ± std over the seeds of the test, validation and training accuracy with the
minutes each run took, beside the recipe's claim; then the machine and commits the runs were made on; then
R1's history (the ``r1_history`` multirun), each iteration beside R1's figure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from experiments.compare import CompareError, runs_frame, to_markdown
from experiments.store import StoreError, open_store, tracking_uri
from experiments.tracking import tags as T

PRESETS = ("r0", "r1", "r2", "r3", "r4", "best_single_hidden", "best_mlp", "best_mlp_swept", "best_mlp_augmented")
HISTORY = "r1_history"
ACCURACIES = ("test/acc", "val/acc", "train/acc")
BEGIN, END = "<!-- results: begin (python -m experiments.results --write docs/results.md) -->", "<!-- results: end -->"


def preset_runs(tracking_uri: str, experiment: str = "nnlab") -> pd.DataFrame:
    """The finished runs tagged with a preset, as ``compare.runs_frame`` rows plus ``minutes`` (wall time of
    the run); of a preset's runs only those with the params of its latest run (a preset changed since some
    seeds ran never mixes two setups in one mean; ``attrs["older_setup"]`` counts the runs left out), and of
    those the latest per seed. Sweep trials (tag ``nnlab.trial``) inherit a preset's tag but are not its runs."""
    try:
        open_store(tracking_uri, create=False)
        client = MlflowClient(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise CompareError(
                f"No experiment {experiment!r} in {tracking_uri}: run the presets first (docs/results.md)."
            )
        runs = client.search_runs(
            [found.experiment_id],
            "attributes.status = 'FINISHED'",
            max_results=5000,
            order_by=["attributes.start_time ASC"],
        )
    except (StoreError, MlflowException) as err:
        raise CompareError(f"Could not read runs from {tracking_uri}: {err}") from err
    frame = runs_frame([run for run in runs if "preset" in run.data.tags and T.TRIAL not in run.data.tags])
    if frame.empty:
        raise CompareError(f"No finished run of a preset in experiment {experiment!r} at {tracking_uri}.")
    frame["minutes"] = (frame["end_time"] - frame["start_time"]).dt.total_seconds() / 60
    iteration = frame.get("tags.iteration", pd.Series("", index=frame.index)).fillna("")  # R1's history: per iteration
    frame = frame.assign(iteration=iteration)
    setup = frame[[c for c in frame.columns if c.startswith("params.") and c != "params.seed"]].fillna("").astype(str)
    signature = setup.agg("|".join, axis=1)
    latest = signature.groupby([frame["tags.preset"], frame["iteration"]]).transform("last")
    older = frame.loc[signature != latest, "tags.preset"].value_counts().to_dict()
    frame = frame[signature == latest].drop_duplicates(["tags.preset", "params.seed", "iteration"], keep="last")
    frame.attrs["older_setup"] = older
    return frame


def describe(row: pd.Series) -> str:
    """A run's setup from its params: ``hidden 800-800, SGD lr 0.05 Nesterov, CosineAnnealing, ..., 150 epochs``."""
    hidden = "-".join(str(h) for h in json.loads(row["params.model.hidden"]))
    parts = [f"hidden {hidden}", f"{row['params.optimizer']} lr {row['params.optimizer.lr']}"]
    if float(row.get("params.optimizer.momentum", 0) or 0) > 0:
        parts[-1] += f" momentum {row['params.optimizer.momentum']}"
    if row.get("params.optimizer.nesterov") == "True":
        parts[-1] += " Nesterov"
    parts.append(row["params.schedule"])
    dropout = [row.get(f"params.model.{k}", "0.0") for k in ("input_dropout", "dropout")]
    if any(float(d) > 0 for d in dropout):
        parts.append(f"dropout {dropout[0]} in / {dropout[1]} hidden")
    if float(row.get("params.optimizer.weight_decay", 0) or 0) > 0:
        parts.append(f"L2 {row['params.optimizer.weight_decay']}")
    if row.get("params.clipping") == "ClipByValue":
        parts.append(f"clipping to ±{row['params.clipping.value']}")
    elif row.get("params.clipping") == "ClipByNorm":
        parts.append(f"clipping the norm to {row['params.clipping.max_norm']}")
    if row.get("params.augment", "none") != "none":
        elastic = float(row.get("params.augment.elastic_alpha", 0) or 0) > 0
        parts.append("affine + elastic augmentation" if elastic else "affine augmentation")
    if isinstance(row.get("params.dataset.split"), str):
        parts.append(f"{row['params.dataset.split']} split of the training set")
    if isinstance(row.get("params.dataset.subset"), str):
        parts.append(f"{row['params.dataset.subset']} training images")
    batch = row["params.train.batch_size"]
    parts.append(f"{'full batch' if batch == 'None' else f'batch {batch}'}, {row['params.train.epochs']} epochs")
    return ", ".join(parts)


def mean_std(values: pd.Series) -> str:
    """``98.53% ± 0.05`` (sample std in points) over seeds; ``98.53%`` for one."""
    values = values.dropna() * 100
    if values.empty:
        return ""
    return f"{values.mean():.2f}%" + (f" ± {values.std():.2f}" if len(values) > 1 else "")


def preset_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per preset: its setup, the recipe's claim, seeds, accuracies as mean ± std, mean test loss, minutes
    per run."""
    rows = []
    for preset in [p for p in PRESETS if p in set(frame["tags.preset"])]:
        runs = frame[frame["tags.preset"] == preset]
        rows.append(
            {
                "preset": f"`{preset}`",
                "setup": describe(runs.iloc[-1]),
                "recipe's claim": runs["tags.claim"].iloc[-1] if "tags.claim" in runs else "",
                "seeds": ", ".join(sorted(runs["params.seed"], key=int)),
                **{
                    metric.split("/")[0]: mean_std(runs.get(f"metrics.{metric}", pd.Series(dtype=float)))
                    for metric in ACCURACIES
                },
                "test loss": f"{runs['metrics.test/loss'].mean():.3f}",
                "minutes per run": f"{runs['minutes'].mean():.1f}",
            }
        )
    return pd.DataFrame(rows)


def history_table(frame: pd.DataFrame) -> pd.DataFrame:
    """R1's history: one row per iteration, R1's claim beside our figures."""
    runs = frame[frame["tags.preset"] == HISTORY].sort_values("tags.iteration", key=lambda s: s.str[0])
    return pd.DataFrame(
        {
            "iteration": runs["tags.iteration"],
            "run": runs["run"],
            "R1's claim": runs["tags.claim"],
            **{
                metric.split("/")[0]: [mean_std(pd.Series([v])) for v in runs.get(f"metrics.{metric}", np.nan)]
                for metric in ACCURACIES
            },
            "minutes": [f"{m:.1f}" for m in runs["minutes"]],
        }
    )


def provenance(frame: pd.DataFrame) -> str:
    """Which machine and commit the runs come from, and whether the working tree was clean."""
    machines = ", ".join(sorted(set(frame.get("tags.machine", pd.Series(dtype=str)).dropna()))) or "not recorded"
    commits = sorted(set(frame.get("tags.mlflow.source.git.commit", pd.Series(dtype=str)).dropna().str[:7]))
    dirty = (frame.get("tags.git.dirty", pd.Series(dtype=str)) == "true").sum()
    tree = f", {dirty} of them from a working tree with uncommitted changes" if dirty else ""
    older = frame.attrs.get("older_setup", {})
    left_out = ", ".join(f"{n} of `{preset}`" for preset, n in sorted(older.items()))
    return (
        f"{len(frame)} finished runs on {machines}; commit {', '.join(commits) or 'not recorded'}{tree}; "
        f"runs from {frame['start_time'].min():%Y-%m-%d} to {frame['end_time'].max():%Y-%m-%d}."
        + (f" Left out, as runs of a preset's earlier setup: {left_out}." if older else "")
    )


def render(frame: pd.DataFrame) -> str:
    """The results section's generated part, in Markdown."""
    text = [to_markdown(preset_table(frame)), f"\n{provenance(frame)}\n"]
    if (frame["tags.preset"] == HISTORY).any():
        text += ["\nR1's history (`python experiments/run.py -m experiment=r1 '+r1_history=glob(*)'`):\n\n"]
        text.append(to_markdown(history_table(frame)))
    return "".join(text)


def replace_section(page: str, generated: str) -> str:
    """``page`` (``docs/results.md``) with the text between the results markers replaced by ``generated``."""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(page):
        raise CompareError(f"The page has no results markers: add the lines\n{BEGIN}\n{END}\nwhere the tables go.")
    return pattern.sub(lambda _: f"{BEGIN}\n{generated}{END}", page)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db")
    parser.add_argument("--experiment", default="nnlab", help="default: %(default)s")
    parser.add_argument(
        "--write",
        type=Path,
        metavar="PAGE",
        help="replace the section between the results markers of PAGE (docs/results.md)",
    )
    args = parser.parse_args(argv)
    try:
        generated = render(preset_runs(tracking_uri(args.tracking_uri), args.experiment))
        if args.write:
            args.write.write_text(replace_section(args.write.read_text(), generated))
    except CompareError as err:
        print(f"results: {err}", file=sys.stderr)
        return 1
    print(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
