"""Compare tracked runs side by side, like the iteration table of a research notebook.

    python experiments/compare.py                                # the 50 latest runs of experiment "nnlab"
    python -m experiments.compare --filter "params.model.hidden = '1024'" --metrics val/acc test/acc
    python experiments/compare.py --runs 3f2a... 9c1b...          # explicit runs, from any experiment

The table lists each run's name, status and start time, the parameters whose values differ between
the runs shown (parameters equal in all of them, and the bookkeeping ``tracking.*`` ones, are left
out) and the requested metrics (their last value). Only training runs are shown: sweeps' parent runs
are left out unless ``--parents``, learning-rate range tests (``lr_find.py``, tag ``nnlab.kind=lr_find``)
unless ``--lr-find``; ``--max-runs`` counts the runs shown. ``--sort METRIC`` puts the best first;
``--group-by PARAM`` adds one row per value of PARAM with each metric's mean ± std over its runs (seeds),
as ``groups.md``/``groups.csv``; ``--tags KEY`` adds the runs' tag KEY as a column (a preset's ``claim``,
an ``iteration``), which ``--group-by`` also takes. It is printed as Markdown and saved as
``comparison.md``, ``comparison.csv`` and a plot ``comparison.png`` in ``--out``.

    python experiments/compare.py --filter "params.model.hidden = '[1024]'" --group-by optimizer.lr --sort test/acc
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
    return comparison_table(runs_frame(runs), metrics, tags)


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
    frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, tags: Sequence[str] = ()
) -> pd.DataFrame:
    """Keep the run columns, the params that differ between the rows of ``frame`` (``params.`` dropped),
    ``tags`` and ``metrics``."""
    frame = frame.sort_values("start_time", kind="stable").reset_index(drop=True)
    param_columns = sorted(c for c in frame.columns if c.startswith("params.") and not is_bookkeeping(c))
    differing = [c for c in param_columns if frame[c].nunique(dropna=False) > 1]
    table = frame[list(RUN_COLUMNS)].copy()
    for column in differing:
        short = column.removeprefix("params.")
        table[short if short not in table.columns else column] = frame[column]
    for tag in tags:
        table[tag if tag not in table.columns else f"tags.{tag}"] = frame.get(
            f"tags.{tag}", pd.Series("", index=frame.index)
        ).fillna("")
    for metric in metrics:
        table[metric] = frame.get(f"metrics.{metric}", pd.Series(np.nan, index=frame.index)).astype(float)
    return table


def is_bookkeeping(column: str) -> bool:
    """Params that say where and how a run was tracked, not what it trained."""
    return column.removeprefix("params.").startswith(("tracking.", "sweep_trial."))


def sort_table(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Best first: by ``metric`` descending, or ascending for a loss; runs without it last."""
    ascending = metric.endswith("loss")
    return table.sort_values(metric, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def group_table(table: pd.DataFrame, key: str, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per value of param ``key`` in a comparison table: how many runs, and each metric's mean and
    standard deviation (pandas' sample std, ddof 1; NaN for one run) over the runs sharing that value (seeds)."""
    if key not in table.columns:
        differing = [c for c in table.columns if c not in (*RUN_COLUMNS, *metrics)]
        raise CompareError(
            f"--group-by {key}: the runs do not differ in that param. Params that differ: {', '.join(differing)}."
        )
    grouped = table.assign(**{key: table[key].astype(str)}).groupby(key, sort=True)
    result = grouped.size().rename("runs").reset_index()
    for metric in metrics:
        result[f"{metric} mean"] = grouped[metric].mean().to_numpy()
        result[f"{metric} std"] = grouped[metric].std().to_numpy()
    return result


def mean_std_markdown(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The grouped table with each metric as one ``mean ± std`` column, for reading."""
    shown = table.drop(columns=[c for m in metrics for c in (f"{m} mean", f"{m} std")])
    for metric in metrics:
        mean, std = table[f"{metric} mean"], table[f"{metric} std"]
        shown[metric] = [
            "" if np.isnan(m) else f"{m:.4f}" if np.isnan(s) else f"{m:.4f} ± {s:.4f}" for m, s in zip(mean, std)
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
    """A bar chart per metric and, when some run logged more than one step, the ``val/acc`` curves; runs are
    labelled by the params that differ between them (``lr=0.1 seed=2``), the legend beside the curves.

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
        bars = ax.bar(range(len(values)), np.nan_to_num(values), color="tab:blue")
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.4g}" for v in values], fontsize=7)
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
    """Each run's differing params as ``key=value`` with the key's last part (``lr=0.1 seed=2``), else its
    name; a short run id is appended to labels that would repeat."""
    params = [c for c in table.columns if c not in (*RUN_COLUMNS, *metrics)]
    if params:
        names = pd.Series(
            [" ".join(f"{c.rsplit('.', 1)[-1]}={row[c]}" for c in params) for _, row in table.iterrows()],
            index=table.index,
        )
    else:
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
        )
        if args.sort:
            table = sort_table(table, args.sort)
        histories = metric_histories(uri, table["run_id"])
        if args.group_by:
            grouped = group_table(table, args.group_by, args.metrics)
            print(to_markdown(mean_std_markdown(grouped, args.metrics)))
            args.out.mkdir(parents=True, exist_ok=True)
            grouped.to_csv(args.out / "groups.csv", index=False)
            (args.out / "groups.md").write_text(to_markdown(mean_std_markdown(grouped, args.metrics)))
    except CompareError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 1
    print(to_markdown(table))
    paths = write_report(table, args.out, comparison_figure(table, args.metrics, histories))
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
