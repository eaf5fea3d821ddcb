"""A study's report from its storage and MLflow runs: ``python -m sweeps.report --study lr_momentum_l2``.

Writes ``report.md`` (best trial, top-k table, trial counts) and Optuna's plots (optimization
history, parameter importances, parallel coordinates) and ``trials.csv`` to ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pandas as pd
from mlflow.entities import Run
from optuna.trial import FrozenTrial, TrialState

from experiments.compare import to_markdown

log = logging.getLogger("nnlab.sweeps")

PLOTS = {
    "optimization_history": "plot_optimization_history",
    "intermediate_values": "plot_intermediate_values",  # every trial's per-epoch value: where pruning cut
    "slice": "plot_slice",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
}
FEW_TRIALS = 20  # below this many complete trials, parameter importances are mostly noise
# Optuna's warnings that importances from few trials mean little (a regex): report.md says so itself
IMPORTANCE_WARNING = r".*(importances will be equal|importance of the parameter may be inaccurate)"
# Optuna's slice and parallel-coordinate plots set an axis' limits to a param's (or the objective's) range, equal
# while the complete trials share one value (a regex); matplotlib widens them itself
IDENTICAL_LIMITS_WARNING = r"Attempting to set identical low and high [xy]lims"
# Optuna's slice plot draws a categorical param as the repr of each choice: strings like "0.1" for the numbers of
# choice(0.1, 0.01), which matplotlib's category units report (INFO on logger matplotlib.category)
CATEGORY_UNITS_MESSAGE = "Using categorical units to plot a list of strings that are all parsable as floats or dates"


MAX_LEGEND = 12  # a plot's legend of more entries (one per trial) is dropped: it would squeeze the axes to nothing
# how params relate to the value: drawn from this many complete trials on (from one, a single dot per panel)
RELATIONS, MIN_COMPLETE = ("slice", "param_importances", "parallel_coordinate"), 3
COLOURS = "viridis"  # for Optuna's "Blues": its weakest trials are drawn near-white, invisible on white


def figures(study: optuna.Study, out: Path, runs: dict[int, Run] | None = None) -> list[Path]:
    """Optuna's matplotlib plots as PNGs in ``out``; a plot the study cannot have yet (too few trials, fewer than
    ``MIN_COMPLETE`` complete ones for the ``RELATIONS``) is skipped. Trials are coloured by ``COLOURS``, and a
    legend's ``Trial3`` is the trial's run name (``#3 lr=0.0581 ...``) where ``runs`` has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    written = []
    complete = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    if not complete:
        return written
    # One layout engine, constrained, chosen before Optuna makes a figure: its colorbars (``fig.colorbar(ax=...)``)
    # are then made for it, where tight_layout finds them "not compatible" and constrained layout, set afterwards,
    # cannot lay out the gridspec colorbar of a single plot. The rc context also undoes Optuna's
    # ``plt.style.use("ggplot")`` after the report.
    with matplotlib.rc_context({"figure.constrained_layout.use": True}):
        for name, function in PLOTS.items():
            if name in RELATIONS and complete < MIN_COMPLETE:
                log.info("no %s plot: %d complete trial(s), fewer than %d", name, complete, MIN_COMPLETE)
                continue
            try:
                with optuna_plotting():
                    ax = getattr(plots, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:
                log.info("no %s plot: %s", name, err)
                continue
            panels = ax.size if hasattr(ax, "size") else 1  # the slice plot: one per param, side by side
            fig = ax.ravel()[0].figure if hasattr(ax, "ravel") else ax.figure
            for axes in fig.axes:  # a legend of every trial (intermediate values) leaves the axes no room
                legend = axes.get_legend()
                if legend is not None and len(legend.get_texts()) > MAX_LEGEND:
                    legend.remove()
                elif legend is not None:
                    for text in legend.get_texts():
                        text.set_text(trial_label(text.get_text(), runs))
                for mappable in [*axes.collections, *axes.images]:
                    if mappable.get_array() is not None and mappable.get_cmap().name == "Blues":
                        mappable.set_cmap(COLOURS)  # its colour bar follows
            fig.set_size_inches(max(9.0, 2.5 * panels + 1.5), 5)
            fig.set_layout_engine("constrained")  # Optuna asks tight_layout of the plots without a colorbar
            path = out / f"{name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written


def trial_label(text: str, runs: dict[int, Run] | None) -> str:
    """Optuna's legend entry ``Trial3`` as the trial's run name where ``runs`` has it, else ``#3``."""
    if not text.startswith("Trial") or not text[5:].isdigit():
        return text
    run = (runs or {}).get(int(text[5:]))
    return run.info.run_name if run is not None and run.info.run_name else f"#{text[5:]}"


class _Without(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def optuna_plotting() -> Iterator[None]:
    """Around a call of Optuna's matplotlib plots: silence exactly what they say of themselves, not of the study
    or the report (that they are "experimental", that importances from few trials mean little, equal axis limits,
    number-like category names), as warnings and on logger ``matplotlib.category``."""
    category_log = logging.getLogger("matplotlib.category")
    without = _Without(CATEGORY_UNITS_MESSAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=IMPORTANCE_WARNING, category=UserWarning)  # FEW_TRIALS
        warnings.filterwarnings("ignore", message=IDENTICAL_LIMITS_WARNING, category=UserWarning)
        category_log.addFilter(without)
        try:
            yield
        finally:
            category_log.removeFilter(without)


def trials_table(study: optuna.Study, runs: dict[int, Run] | None = None) -> pd.DataFrame:
    """One row per trial: number, state, value, params, epochs reported, duration, reason, and its MLflow run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        run = (runs or {}).get(t.number)
        row = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.value is not None else math.nan,
            **{f"params.{k}": v for k, v in t.params.items()},
            "epochs": epochs_trained(t),
            "seconds": t.duration.total_seconds() if t.duration else math.nan,
            "reason": t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason") or "",
            "retry_of": t.system_attrs.get("failed_trial", ""),
            "run_id": run.info.run_id if run else "",
            "run_status": run.info.status if run else "",
        }
        if run is not None and "test/acc" in run.data.metrics:
            row["test/acc"] = run.data.metrics["test/acc"]
        rows.append(row)
    return pd.DataFrame(rows)


def epochs_trained(trial: FrozenTrial) -> int:
    """Epochs a trial trained: its reports, or the epochs its run recorded (``epochs``): a run stopped as
    diverged after an epoch trained it without reporting it."""
    return max(max(trial.intermediate_values, default=0), int(trial.user_attrs.get("epochs", 0)))


def markdown(study: optuna.Study, table: pd.DataFrame, top: int, images: list[Path]) -> str:
    """The report's text: counts, best trial, top-k table, plots."""
    counts = table["state"].value_counts().to_dict() if len(table) else {}
    lines = [f"# Study `{study.study_name}`", "", f"Direction: {study.direction.name.lower()}; trials: {len(table)} "]
    lines[-1] += "(" + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ")"
    complete = table[table["state"] == "COMPLETE"] if len(table) else table
    if len(complete):
        best = study.best_trial
        lines += ["", f"**Best trial #{best.number}**: value {best.value:.4f}", ""]
        lines += [f"- `{k}` = {v}" for k, v in best.params.items()]
        lines += [f"- **at the edge**: {flag}" for flag in edges(best)]
        ascending = study.direction == optuna.study.StudyDirection.MINIMIZE
        shown = complete.sort_values("value", ascending=ascending).head(top)
        columns = [c for c in shown.columns if c not in ("state", "reason", "retry_of", "run_status")]
        lines += ["", f"## Top {len(shown)}", "", to_markdown(shown[columns]).rstrip("\n")]
    failed = table[table["state"].isin(["FAIL", "PRUNED"])] if len(table) else table
    if len(failed):
        params = [c for c in failed.columns if c.startswith("params.")]
        shown = failed[["number", "state", *params, "epochs", "reason"]]  # which lr diverged?
        lines += ["", "## Pruned and failed", "", to_markdown(shown).rstrip("\n")]
    if any(p.stem == "param_importances" for p in images) and len(complete) < FEW_TRIALS:
        lines += [
            "",
            f"Parameter importances rest on {len(complete)} complete trials: below about {FEW_TRIALS} they are "
            "mostly noise. Read them as a hint, not a ranking.",
        ]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(lines) + "\n"


EDGE = 0.05  # a best value within this share of its range (log-scaled where sampled so) of a bound is at its edge


def edges(trial: FrozenTrial) -> list[str]:
    """A sentence for each numeric param of ``trial`` (the best) that lies at the edge of its range: the optimum
    may lie beyond it, so the range should be widened there."""
    flags = []
    for key, dist in trial.distributions.items():
        if not isinstance(dist, optuna.distributions.FloatDistribution | optuna.distributions.IntDistribution):
            continue
        low, high, value = dist.low, dist.high, trial.params[key]
        scale = math.log if dist.log else float
        if high <= low:
            continue
        share = (scale(value) - scale(low)) / (scale(high) - scale(low))
        side = "top" if share >= 1 - EDGE else "bottom" if share <= EDGE else None
        if side is not None:
            beyond = "above" if side == "top" else "below"
            flags.append(
                f"{key} = {value:.4g} is at the {side} of its range [{low:.4g}, {high:.4g}]: the best may lie "
                f"{beyond} it; widen the range that way and sweep again"
            )
    return flags


def write_report(study: optuna.Study, out: Path, runs: dict[int, Run] | None = None, top: int = 10) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = trials_table(study, runs)
    table.to_csv(out / "trials.csv", index=False)
    images = figures(study, out, runs)
    path = out / "report.md"
    path.write_text(markdown(study, table, top, images))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.report", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study name (hydra.sweeper.study_name)")
    parser.add_argument("--storage", help="journal file or database URL (default: <tracking-dir>/optuna/<study>.log)")
    parser.add_argument(
        "--tracking-dir", help="MLflow store directory (tracking.dir); default: the store the study recorded"
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI; default: the store the study recorded")
    parser.add_argument("--experiment", help="MLflow experiment; default: the one the study recorded")
    parser.add_argument("--top", type=int, default=10, help="rows of the top-k table")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default: reports/<study> beside the SQLite store, else in --tracking-dir)",
    )
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from experiments.store import StoreError, open_store, resolve_store, store_folder
    from sweeps.parent import TRACKING_ATTR, trial_runs
    from sweeps.study import open_storage

    tracking_dir = args.tracking_dir or "mlruns"
    storage_url = args.storage or str(Path(tracking_dir).resolve() / "optuna" / f"{args.study}.log")
    if "://" not in storage_url and not Path(storage_url).exists():
        print(f"no study storage at {storage_url}: pass --storage", file=sys.stderr)
        return 2
    try:
        study = optuna.load_study(study_name=args.study, storage=open_storage(storage_url, heartbeat=None))
    except (UnicodeDecodeError, ValueError, KeyError) as err:  # not a journal, or no such study in it
        print(
            f"cannot read study {args.study!r} from {storage_url} ({type(err).__name__}: {err}): pass the journal file "
            "(optuna/<study>.log beside the sweep's SQLite store) or database URL the sweep used, with --storage.",
            file=sys.stderr,
        )
        return 2
    recorded = study.user_attrs.get(TRACKING_ATTR) or {}
    given = args.tracking_uri or args.tracking_dir
    named = f"sqlite:///{Path(args.tracking_dir).resolve() / 'mlflow.db'}" if args.tracking_dir else None
    uri = args.tracking_uri or named or recorded.get("uri")
    experiment = args.experiment or recorded.get("experiment") or "nnlab"
    tracking = OmegaConf.create({"uri": uri, "dir": tracking_dir, "experiment": experiment})
    runs, store = None, resolve_store(tracking)[0]
    try:
        if not (given or recorded):
            raise StoreError(
                f"study {args.study} recorded no MLflow store (its sweep ran with tracking=none), so runs found by its "
                "name could be another sweep's. Pass --tracking-dir or --tracking-uri to join a store's runs anyway."
            )
        open_store(store, create=False)
    except StoreError as err:  # the study alone still makes a report
        print(f"report without MLflow runs: {err}", file=sys.stderr)
    else:
        runs = trial_runs(tracking, args.study)
        mixed = mismatched(study, runs)
        if mixed:
            where = recorded.get("uri") or "no store: the sweep recorded none (tracking=none)"
            print(
                f"The MLflow runs found for study {args.study} (trials {mixed}) are not the ones its trials ran: "
                f"another sweep of the same name was tracked in this store. The study's runs are in {where}: "
                "leave out --tracking-dir/--tracking-uri to read them, or pass that store.",
                file=sys.stderr,
            )
            return 2
    path = write_report(study, args.out or store_folder(tracking) / "reports" / args.study, runs, args.top)
    print(path.read_text())
    print(f"written to {path}")
    return 0


def mismatched(study: optuna.Study, runs: dict[int, Run]) -> list[int]:
    """Trial numbers whose run found in MLflow is not the run the trial recorded (``mlflow_run_id``; a trial
    stopped in its first epoch may have recorded none)."""
    return [
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.number in runs and t.user_attrs.get("mlflow_run_id") not in (None, runs[t.number].info.run_id)
    ]


if __name__ == "__main__":
    sys.exit(main())
