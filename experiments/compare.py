"""Compare tracked runs side by side, like the iteration table of a research notebook.

    python experiments/compare.py                                # the 50 latest runs of experiment "nnlab"
    python -m experiments.compare --filter "params.model.hidden = '[1024]'" --metrics val/acc test/acc
    python experiments/compare.py --runs 3f2a... 9c1b...          # explicit runs, from any experiment

The table lists each run's name, status and start time, the parameters whose values differ between
the runs shown (parameters equal in all of them, and the bookkeeping ``tracking.*`` ones, are left
out) and the requested metrics (their last value). Only training runs are shown: sweeps' parent runs
are left out unless ``--parents``, learning-rate range tests (``lr_find.py``, tag ``nnlab.kind=lr_find``)
unless ``--lr-find``; ``--max-runs`` counts the runs shown. ``--sort METRIC`` puts the best first;
``--group-by PARAM`` adds one row per value of PARAM (floats to 3 significant digits) with each metric's
mean ± std over its runs (seeds), best first with ``--sort``, as ``groups.md``, ``groups.csv`` and a plot
``groups.png``. A group holds only runs that differ in the seed and PARAM: runs that did not finish, and runs
whose other params differ from the most common setup's (another data set, length, subset or model), are left
out with a line saying how many and why; a metric's ``n`` is shown where fewer runs logged it. The two best
groups are compared with Welch's t-test on the ``--sort`` metric (the first of ``--metrics`` otherwise).
``--tags KEY`` adds the runs' tag KEY as a column (a preset's ``claim``, an ``iteration``), which
``--group-by`` also takes. It is printed as Markdown and saved as ``comparison.md``, ``comparison.csv`` and
a plot ``comparison.png`` in ``--out``.

    python experiments/compare.py --filter "params.dataset = 'digits'" --group-by optimizer.lr --sort test/acc
    python experiments/compare.py --filter "tags.preset = 'r1_history'" --tags iteration claim   # R1's history
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath
from matplotlib.ticker import MaxNLocator
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from experiments.store import StoreError, open_store, tracking_uri
from experiments.tracking import tags as T

DEFAULT_METRICS = ("test/acc", "test/loss", "val/acc", "train/acc")
HISTORY_METRIC = "val/acc"
RUN_COLUMNS = ("run_id", "run", "status", "start_time")


class CompareError(RuntimeError):
    """The runs cannot be compared: unreachable store, unknown experiment, nothing matched."""


def compare_runs(
    tracking_uri: str,
    experiments: Sequence[str] = ("nnlab",),
    run_ids: Sequence[str] | None = None,
    filter_string: str = "",
    metrics: Sequence[str] = DEFAULT_METRICS,
    max_runs: int = 50,
    parents: bool = False,
    tags: Sequence[str] = (),
    lr_find: bool = False,
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per run, oldest first: ``run_id``, ``run`` (name), ``status``, ``start_time``, the differing
    params (short names such as ``optimizer.lr``), ``tags`` (blank where a run has no such tag) and
    ``metrics`` (NaN where a run did not log one).

    Parameters
    ----------
    experiments : experiment names to search; ignored when ``run_ids`` is given (their experiments are used).
    run_ids : restrict to these runs.
    filter_string : an MLflow search filter, e.g. ``"metrics.`val/acc` > 0.9 and params.seed = '0'"``.
    max_runs : keep at most this many runs, the most recently started (of those kept by ``parents`` and
        ``lr_find``).
    parents : keep sweeps' parent runs too (left out by default: they train nothing).
    lr_find : keep learning-rate range tests too (left out by default: they train nothing to compare, and
        their ``lr_find.*`` params would be columns).
    keep : params shown even where all runs agree on them (``--group-by``'s).

    Raises
    ------
    CompareError
        The tracking store is unreachable, an experiment or run does not exist, or no run matched.
    """
    try:
        open_store(tracking_uri, create=False)  # in seconds: a missing database, a server that does not answer
    except StoreError as err:
        raise CompareError(str(err)) from err
    client = MlflowClient(tracking_uri)
    try:
        experiment_ids = _experiment_ids(client, experiments, run_ids)
        filters = [filter_string.strip()] if filter_string.strip() else []
        if run_ids:
            filters.append("attributes.run_id IN ({})".format(", ".join(f"'{run_id}'" for run_id in run_ids)))
        runs, token = [], None
        while len(runs) < max_runs:  # page on: the runs left out do not count
            page = client.search_runs(
                experiment_ids,
                " and ".join(filters),
                max_results=max_runs,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            runs += [run for run in page if shown(run, parents, lr_find)]
            token = page.token
            if not token:
                break
    except MlflowException as err:
        raise CompareError(f"Could not read runs from {tracking_uri}: {err.message}") from err
    runs = runs[:max_runs]
    if not runs:
        where = f"runs {', '.join(run_ids)}" if run_ids else f"experiment(s) {', '.join(experiments)}"
        with_filter = f" with filter {filter_string!r}" if filter_string else ""
        raise CompareError(
            f"No runs matched in {where}{with_filter} at {tracking_uri}. "
            "Check the filter syntax (e.g. \"params.optimizer.lr = '0.1'\", metric names with a slash in "
            'backticks: "metrics.`val/acc` > 0.9") or train a run first with `python experiments/run.py` '
            "(sweeps' parent runs and learning-rate range tests count only with --parents and --lr-find)."
        )
    return comparison_table(runs_frame(runs), metrics, tags, keep)


def shown(run: Run, parents: bool = False, lr_find: bool = False) -> bool:
    """Whether a run is compared: a training run, a sweep's parent run with ``parents``, a learning-rate
    range test with ``lr_find``."""
    if T.SWEEP in run.data.tags:
        return parents
    if run.data.tags.get(T.KIND) == "lr_find":
        return lr_find
    return True


def _experiment_ids(client: MlflowClient, experiments: Sequence[str], run_ids: Sequence[str] | None) -> list[str]:
    if run_ids:
        ids = []
        for run_id in run_ids:
            try:
                ids.append(client.get_run(run_id).info.experiment_id)
            except MlflowException as err:
                raise CompareError(f"Run {run_id!r} does not exist in {client.tracking_uri}.") from err
        return sorted(set(ids))
    ids = []
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            existing = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise CompareError(
                f"Unknown experiment {name!r} in {client.tracking_uri}. Existing experiments: {existing}. "
                "Pass one of them with --experiment NAME (repeatable)."
            )
        ids.append(experiment.experiment_id)
    return ids


def runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """Runs as a DataFrame shaped like ``mlflow.search_runs``' (``params.*``, ``metrics.*``, ``tags.*`` columns)."""
    rows = [
        {
            "run_id": run.info.run_id,
            "run": run.info.run_name or run.info.run_id[:8],
            "status": run.info.status,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
            "end_time": pd.Timestamp(run.info.end_time, unit="ms", tz="UTC") if run.info.end_time else pd.NaT,
            **{f"params.{key}": value for key, value in run.data.params.items()},
            **{f"metrics.{key}": value for key, value in run.data.metrics.items()},
            **{f"tags.{key}": value for key, value in run.data.tags.items()},
        }
        for run in runs
    ]
    return pd.DataFrame(rows)


def comparison_table(
    frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, tags: Sequence[str] = (), keep: Sequence[str] = ()
) -> pd.DataFrame:
    """Keep the run columns, the params that differ between the rows of ``frame`` (``params.`` dropped) and
    those in ``keep``, ``tags`` and ``metrics``; ``attrs["params"]`` names the param columns."""
    frame = frame.sort_values("start_time", kind="stable").reset_index(drop=True)
    param_columns = sorted(c for c in frame.columns if c.startswith("params.") and not is_bookkeeping(c))
    differing = [c for c in param_columns if frame[c].nunique(dropna=False) > 1 or c.removeprefix("params.") in keep]
    table = frame[list(RUN_COLUMNS)].copy()
    params = []
    for column in differing:
        short = column.removeprefix("params.")
        params.append(short if short not in table.columns else column)
        table[params[-1]] = frame[column]
    for tag in tags:
        table[tag if tag not in table.columns else f"tags.{tag}"] = frame.get(
            f"tags.{tag}", pd.Series("", index=frame.index)
        ).fillna("")
    for metric in metrics:
        table[metric] = frame.get(f"metrics.{metric}", pd.Series(np.nan, index=frame.index)).astype(float)
    table.attrs["params"] = params
    return table


def is_bookkeeping(column: str) -> bool:
    """Params that say where and how a run was tracked, not what it trained."""
    return column.removeprefix("params.").startswith(("tracking.", "sweep_trial."))


def sort_table(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Best first: by ``metric`` descending, or ascending for a loss; runs without it last."""
    ascending = metric.endswith("loss")
    return table.sort_values(metric, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


SEED = "seed"  # a param named so, or ending in ".seed": varied on purpose, the noise that groups average over
DERIVED = ("model.n_params", "model.depth", "model.width")  # follow from model.hidden and the data set
SIGNIFICANCE = 0.05  # Welch's t-test: a p-value below this is more than the seeds' noise


def param_columns(table: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """The comparison table's param columns (``comparison_table`` records them; else its text columns but the
    run's own)."""
    known = table.attrs.get("params")
    if known is not None:
        return [c for c in known if c in table.columns]
    return [c for c in table.columns if c not in (*RUN_COLUMNS, *metrics) and table[c].dtype == object]


def is_seed(column: str) -> bool:
    return column == SEED or column.endswith(f".{SEED}")


def group_key(value) -> str:
    """A param value as a group's key: a float to 3 significant digits (``0.0581``), anything else as logged."""
    text = str(value)
    if any(c in text for c in ".eE") and not text.startswith(("[", "{")):
        try:
            return f"{float(text):.3g}"
        except ValueError:
            pass
    return text


def comparable(table: pd.DataFrame, key: str, metrics: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The runs of ``table`` that may be grouped by ``key``: finished, and of one setup (their params other than
    ``key``, the seed and what follows from the model agree: the setup most runs share); and one line per
    reason a run was left out, saying how many. Grouped by a tag (a preset, which names a whole setup), each
    group keeps its own most common setup."""
    finished = table[table["status"] == "FINISHED"]
    left_out = []
    unfinished = table["status"][table["status"] != "FINISHED"]
    if len(unfinished):
        counts = ", ".join(f"{status} {n}" for status, n in unfinished.value_counts().sort_index().items())
        left_out.append(
            f"left out {len(unfinished)} run(s) that did not finish ({counts}): their metrics are those of the "
            "epoch they stopped at"
        )
    unnamed = finished[key].isna() | (finished[key].astype(str).isin(["", "nan", "None"]))
    if unnamed.any():  # a run without the tag grouped by (a sweep's own trial beside its reruns)
        left_out.append(f"left out {int(unnamed.sum())} finished run(s) without {key}")
        finished = finished[~unnamed]
    params = param_columns(table, metrics)
    setup = [c for c in params if c != key and not is_seed(c) and c not in DERIVED]
    if not setup or finished.empty:
        return finished, left_out
    settings = finished[setup].astype(str)
    if key in params:  # one setup for every group
        reference = settings.value_counts(sort=True).index[0]  # the setup most runs share
        same = (settings == pd.Series(reference, index=setup)).all(axis=1)
        reasons = [differing(setup, row, reference) for row in settings[~same].to_numpy()]
    else:  # a tag (a preset) names a setup: each group its own
        same, reasons = pd.Series(False, index=settings.index), []
        for value, part in settings.groupby(finished[key].astype(str)):
            reference = part.value_counts(sort=True).index[0]
            same[part.index] = (part == pd.Series(reference, index=setup)).all(axis=1)
            reasons += [
                f"{key}={value}: {differing(setup, row, reference)}" for row in part[~same[part.index]].to_numpy()
            ]
    if reasons:
        counted = pd.Series(reasons).value_counts()
        listed = "; ".join(f"{reason}: {n}" for reason, n in counted.head(4).items())
        left_out.append(
            f"left out {len(reasons)} finished run(s) whose setup differs from the {int(same.sum())} grouped: "
            f"{listed}{'; ...' if len(counted) > 4 else ''}"
        )
    return finished[same], left_out


def differing(setup: Sequence[str], values: Sequence[str], reference: Sequence[str], most: int = 3) -> str:
    """``dataset=digits (grouped: mnist), train.epochs=8 (grouped: 3)``: the first ``most`` params that differ."""
    pairs = [f"{c}={v} (grouped: {r})" for c, v, r in zip(setup, values, reference) if v != r]
    return ", ".join(pairs[:most]) + (f" and {len(pairs) - most} more" if len(pairs) > most else "")


def group_table(table: pd.DataFrame, key: str, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per value of param ``key`` (``group_key``) over the ``comparable`` runs of a comparison table: how
    many runs, and each metric's mean, standard deviation (pandas' sample std, ddof 1; NaN for one run) and
    ``n`` (the runs that logged it). ``attrs["left_out"]``: why the other runs are not in a group."""
    if key not in table.columns:
        differing = param_columns(table, metrics)
        raise CompareError(
            f"--group-by {key}: the runs do not differ in that param. Params that differ: {', '.join(differing)}."
        )
    runs, left_out = grouped_runs(table, key, metrics)
    grouped = runs.groupby(key, sort=True)
    result = grouped.size().rename("runs").reset_index()
    for metric in metrics:
        result[f"{metric} mean"] = grouped[metric].mean().to_numpy()
        result[f"{metric} std"] = grouped[metric].std().to_numpy()
        result[f"{metric} n"] = grouped[metric].count().to_numpy()
    result.attrs["left_out"] = left_out
    return result


def grouped_runs(table: pd.DataFrame, key: str, metrics: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The ``comparable`` runs with ``key`` as grouped (``group_key``), and the lines on those left out."""
    runs, left_out = comparable(table, key, metrics)
    if runs.empty:
        raise CompareError(f"--group-by {key}: no finished run to group. " + "; ".join(left_out))
    return runs.assign(**{key: runs[key].map(group_key)}), left_out


def sort_groups(grouped: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Best group first: by the mean of ``metric``, descending, or ascending for a loss."""
    attrs = dict(grouped.attrs)
    ordered = grouped.sort_values(
        f"{metric} mean", ascending=metric.endswith("loss"), na_position="last", kind="stable"
    ).reset_index(drop=True)
    ordered.attrs |= attrs
    return ordered


def welch_test(table: pd.DataFrame, grouped: pd.DataFrame, key: str, metric: str) -> str:
    """Whether the first two groups of ``grouped`` (``group_table`` of ``table``) differ in ``metric`` by more
    than the seeds' noise: Welch's t-test (unequal variances, ``scipy.stats.ttest_ind(equal_var=False)``) over
    their runs, with each group's n."""
    from scipy.stats import ttest_ind

    runs = grouped_runs(table, key, [metric])[0]
    first, second = grouped[key].iloc[0], grouped[key].iloc[1]
    a = runs.loc[runs[key] == first, metric].dropna().to_numpy(dtype=float)
    b = runs.loc[runs[key] == second, metric].dropna().to_numpy(dtype=float)
    head = f"{metric}: {key}={first} (n={len(a)}) vs {key}={second} (n={len(b)})"
    if len(a) < 2 or len(b) < 2:
        return f"{head}: cannot be told from noise, a group has fewer than 2 runs (seeds) with {metric}"
    test = ttest_ind(a, b, equal_var=False)
    verdict = (
        f"more than the seeds' noise (p < {SIGNIFICANCE:g})"
        if test.pvalue < SIGNIFICANCE
        else f"within the seeds' noise (p >= {SIGNIFICANCE:g})"
    )
    return (
        f"{head}: difference {a.mean() - b.mean():+.4g}, Welch's t = {test.statistic:.3g}, "
        f"p = {test.pvalue:.3g}: {verdict}"
    )


def mean_std_markdown(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The grouped table with each metric as one ``mean ± std`` column, for reading; ``(n=2)`` after it where
    fewer of the group's runs logged the metric."""
    dropped = [c for m in metrics for c in (f"{m} mean", f"{m} std", f"{m} n") if c in table.columns]
    shown = table.drop(columns=dropped)
    for metric in metrics:
        mean, std = table[f"{metric} mean"], table[f"{metric} std"]
        count = table.get(f"{metric} n", table["runs"])
        shown[metric] = [
            ("" if np.isnan(m) else f"{m:.4f}" if np.isnan(s) else f"{m:.4f} ± {s:.4f}")
            + (f" (n={n})" if n != runs and not np.isnan(m) else "")
            for m, s, n, runs in zip(mean, std, count, table["runs"])
        ]
    return shown


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; floats to 4 significant digits, missing values blank."""
    header = [str(c) for c in table.columns]
    rows = [[_markdown_cell(value) for value in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _markdown_cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def metric_histories(
    tracking_uri: str, run_ids: Sequence[str], key: str = HISTORY_METRIC
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """run id -> (steps (T,), values (T,)) of ``key``, for runs that logged it."""
    client = MlflowClient(tracking_uri)
    histories = {}
    for run_id in run_ids:
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        if points:
            steps, values = zip(*points, strict=True)
            histories[run_id] = (np.asarray(steps), np.asarray(values))
    return histories


def comparison_figure(
    table: pd.DataFrame, metrics: Sequence[str], histories: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> Figure:
    """Each run's value of each metric as a point (the axis spans the values) and, when some run logged more
    than one step, the ``val/acc`` curves; runs are labelled by their names, the legend beside the curves.

    The figure grows with the runs and their labels (bars, slanted tick labels, legend rows and columns) so
    that constrained layout has room for them: at a fixed size it gives up ("axes sizes collapsed to zero")."""
    labels = short_labels(table, metrics)
    with_curves = any(len(steps) > 1 for steps, _ in (histories or {}).values())
    size = _FigureSize(len(labels), text_inches(labels, TICK_FONT), text_inches(labels, LEGEND_FONT))
    widths = [size.bars_width] * len(metrics) + ([CURVES_WIDTH] if with_curves else [])
    fig = Figure(figsize=(size.width(len(metrics), with_curves), size.height), layout="constrained")
    axes = fig.subplots(1, len(widths), squeeze=False, width_ratios=widths).ravel()
    for ax, metric in zip(axes, metrics):
        values = table[metric].to_numpy(dtype=float)
        ax.plot(range(len(values)), values, "o", color="tab:blue")  # points: the axis spans the values, not from 0
        for x, value in enumerate(values):
            if np.isfinite(value):
                ax.annotate(f"{value:.4g}", (x, value), textcoords="offset points", xytext=(0, 4), ha="center",
                            fontsize=7)  # fmt: skip
        ax.margins(x=0.5 / max(len(values), 1), y=0.15)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=TICK_FONT)
        ax.set_title(metric if np.isfinite(values).any() else f"no run logged {metric}")
    if with_curves:
        ax = axes[-1]
        for run_id, label in zip(table["run_id"], labels, strict=True):
            if run_id in histories:
                steps, curve = histories[run_id]
                ax.plot(steps, curve, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{HISTORY_METRIC} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=LEGEND_FONT, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, ncols=size.legend_columns
        )
    return fig


TICK_FONT, LEGEND_FONT = 8, 7  # points: the runs' labels under the bars, in the legend
CURVES_WIDTH = 4.0  # inches: the curves' axes
_TEXT = TextToPath()


def text_inches(texts: Sequence[str], fontsize: float) -> float:
    """The width of the widest of ``texts`` at ``fontsize`` points in matplotlib's default font, in inches."""
    font = FontProperties(size=fontsize)
    return max((_TEXT.get_text_width_height_descent(t, font, ismath=False)[0] for t in texts), default=0.0) / 72


class _FigureSize:
    """Inches for ``runs`` bars whose labels, slanted 45 degrees, are ``tick_label`` wide, and for a legend of
    ``runs`` entries ``legend_label`` wide, in as many columns as its height needs."""

    ENTRY = 1.6 * LEGEND_FONT / 72  # a legend row: the text and the spacing between rows

    def __init__(self, runs: int, tick_label: float, legend_label: float) -> None:
        slant = tick_label * np.sqrt(0.5) + 0.15  # a label's drop below the axis, and its reach left of its bar
        self.bars_width = max(3.2, 0.18 * runs)  # each bar wider than its slanted label is tall
        self.bars_margin = max(0.8, slant) + 0.2  # the y tick labels, or the first label's reach; the right side
        self.height = max(4.5, 3.3 + slant + 0.7)  # the axes, the label below them, the title above
        rows = max(1, int((self.height - 0.4) / self.ENTRY))
        self.legend_columns = max(1, -(-runs // rows))
        self.legend_width = self.legend_columns * (legend_label + 0.55) + 0.25  # the line, the gaps, the frame

    def width(self, bars: int, curves: bool) -> float:
        panels = bars * (self.bars_width + self.bars_margin)
        return panels + (CURVES_WIDTH + 1.0 + self.legend_width if curves else 0.0)


def short_labels(table: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """Each run's name (``run.py`` names a run by what its command line changed: ``lr=0.1 seed=2``); a short run
    id is appended to names that would repeat."""
    names = table["run"].astype(str)
    repeated = names.duplicated(keep=False)
    return [f"{n} ({i[:8]})" if r else n for n, i, r in zip(names, table["run_id"], repeated, strict=True)]


def write_report(table: pd.DataFrame, out: Path, figure: Figure) -> list[Path]:
    """Save ``comparison.md``, ``comparison.csv`` and ``comparison.png`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "comparison.md", out / "comparison.csv", out / "comparison.png"]
    paths[0].write_text(to_markdown(table))
    table.to_csv(paths[1], index=False)
    figure.savefig(paths[2], dpi=100)
    return paths


def write_groups(table: pd.DataFrame, key: str, metrics: Sequence[str], sort: str, out: Path) -> list[Path]:
    """Print the groups (best first by ``sort``), why runs were left out and the two best groups' Welch test;
    save ``groups.md``, ``groups.csv`` and ``groups.png`` into ``out``; returns their paths."""
    grouped = sort_groups(group_table(table, key, metrics), sort)
    for line in grouped.attrs["left_out"]:
        print(line, file=sys.stderr)
    text = to_markdown(mean_std_markdown(grouped, metrics))
    if len(grouped) >= 2:
        text += f"\n{welch_test(table, grouped, key, sort)}\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    grouped.to_csv(out / "groups.csv", index=False)
    (out / "groups.md").write_text(text + "".join(f"\n{line}\n" for line in grouped.attrs["left_out"]))
    groups_figure(grouped_runs(table, key, metrics)[0], grouped, key, metrics).savefig(out / "groups.png", dpi=100)
    return [out / "groups.md", out / "groups.csv", out / "groups.png"]


def groups_figure(runs: pd.DataFrame, grouped: pd.DataFrame, key: str, metrics: Sequence[str]) -> Figure:
    """One panel per metric: each group's mean ± std (sample std) as a point with error bars, its runs as dots
    beside it, in ``grouped``'s order; the axis spans the values, not from 0, so that differences show."""
    fig = Figure(figsize=(max(4.0, 1.2 + 0.5 * len(grouped)) * len(metrics), 4.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    labels = [str(value) for value in grouped[key]]
    for ax, metric in zip(axes, metrics):
        x = np.arange(len(grouped))
        ax.errorbar(x, grouped[f"{metric} mean"], yerr=grouped[f"{metric} std"].fillna(0), fmt="o", color="tab:blue",
                    capsize=4, label="mean ± std")  # fmt: skip
        for i, value in enumerate(grouped[key]):
            values = runs.loc[runs[key] == value, metric].dropna()
            ax.plot(np.full(len(values), i + 0.15), values, ".", color="tab:gray", label="runs" if i == 0 else None)
        ax.set_xticks(x, [f"{label}\n(n={n})" for label, n in zip(labels, grouped[f"{metric} n"])], fontsize=8)
        ax.set_xlim(-0.5, len(grouped) - 0.5)
        ax.set_xlabel(key)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
        if not np.isfinite(grouped[f"{metric} mean"].to_numpy(dtype=float)).any():
            ax.set_title(f"no run logged {metric}")
    axes[0].legend(fontsize=7, loc="best")
    return fig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db"
    )
    parser.add_argument(
        "--experiment", action="append", dest="experiments", metavar="NAME", help='default: "nnlab"; repeatable'
    )
    parser.add_argument("--runs", nargs="+", metavar="ID", help="compare exactly these run ids")
    parser.add_argument("--filter", default="", help="MLflow search filter, e.g. \"params.seed = '0'\"")
    parser.add_argument(
        "--metrics", nargs="+", default=list(DEFAULT_METRICS), help=f"default: {' '.join(DEFAULT_METRICS)}"
    )
    parser.add_argument("--max-runs", type=int, default=50, help="default: %(default)s")
    parser.add_argument("--sort", metavar="METRIC", help="best first by this metric (ascending for a loss)")
    parser.add_argument(
        "--group-by",
        metavar="PARAM",
        help="one row per value of PARAM (or a --tags KEY): metrics as mean ± std over its runs (seeds)",
    )
    parser.add_argument("--tags", nargs="+", default=[], metavar="KEY", help="show these run tags as columns")
    parser.add_argument("--parents", action="store_true", help="keep sweeps' parent runs (left out by default)")
    parser.add_argument(
        "--lr-find", action="store_true", help="keep learning-rate range tests (lr_find.py; left out by default)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/compare"), help="default: %(default)s")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sort and args.sort not in args.metrics:
        args.metrics.append(args.sort)
    uri = tracking_uri(args.tracking_uri)
    try:
        table = compare_runs(
            uri,
            args.experiments or ["nnlab"],
            args.runs,
            args.filter,
            args.metrics,
            args.max_runs,
            args.parents,
            args.tags,
            args.lr_find,
            [args.group_by] if args.group_by else [],
        )
        if args.sort:
            table = sort_table(table, args.sort)
        histories, groups = metric_histories(uri, table["run_id"]), []
        if args.group_by:
            groups = write_groups(table, args.group_by, args.metrics, args.sort or args.metrics[0], args.out)
    except CompareError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 1
    print(to_markdown(table))
    paths = write_report(table, args.out, comparison_figure(table, args.metrics, histories))
    print(f"wrote {', '.join(str(p) for p in [*groups, *paths])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
