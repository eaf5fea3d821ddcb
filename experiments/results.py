"""The results tables of ``docs/results.md``, regenerated from the runs the presets logged.

    python -m experiments.results                            # print the tables
    python -m experiments.results --write docs/results.md    # and replace the tables between its markers

Every preset in ``conf/experiment/`` tags its runs ``preset=<name>`` (and the recipe's own figure as
``claim``); this reads the finished runs of each preset from the store, keeps those whose logged params are
the preset's own (its config composed as ``experiment=<name>``, seed aside: a 1-epoch check, a run on
another data set or of an earlier version of the preset is left out, one line each on stderr saying which
params differ), one per seed (the latest run of a seed counts), and prints mean ± std over the seeds of the
test, validation and training accuracy with the minutes each run took, beside the recipe's claim; then the
machine and commits the runs were made on; then R1's history (the ``r1_history`` multirun), each iteration
beside R1's figure. ``--write`` refuses (exit 1, the page untouched) when the new tables would lose a row the
page's tables have.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf.errors import OmegaConfBaseException

import experiments.schema  # noqa: F401  registers the config schemas and resolvers compose needs
from experiments.compare import CompareError, is_bookkeeping, runs_frame, to_markdown
from experiments.schema import ConfigError
from experiments.store import StoreError, open_store, tracking_uri
from experiments.tracking import tags as T
from experiments.tracking.naming import experiment_params

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = ("r0", "r1", "r2", "r3", "r4", "best_single_hidden", "best_mlp", "best_mlp_swept", "best_mlp_augmented")
HISTORY, HISTORY_BASE = "r1_history", "r1"  # R1's history: experiment=r1 +r1_history=<iteration>
ACCURACIES = ("test/acc", "val/acc", "train/acc")
BEGIN, END = "<!-- results: begin (python -m experiments.results --write docs/results.md) -->", "<!-- results: end -->"
# not compared with the preset's: the seed (varied on purpose), and the parameter count (model.hidden and the
# data set, which are compared, fix it)
NOT_COMPARED = ("seed", "model.n_params")
UNSET = "(not set)"


def preset_params(overrides: Sequence[str] = ()) -> dict[tuple[str, str], dict[str, str]]:
    """(preset, R1 history iteration or "") -> the params a run of the preset logs (``experiment_params`` of
    its config composed as ``experiment=<name>``, then ``overrides``), the seed and parameter count aside.
    ``overrides`` are for checks of this command on short runs (``dataset=digits train.epochs=1``)."""
    found = {}
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            for preset in PRESETS:
                cfg = compose("config", [f"experiment={preset}", *overrides])
                found[preset, ""] = setup_params(experiment_params(cfg, 0, 0))
            for option in sorted(path.stem for path in (CONF / HISTORY).glob("*.yaml")):
                cfg = compose("config", [f"experiment={HISTORY_BASE}", f"+{HISTORY}={option}", *overrides])
                found[HISTORY, str(cfg.tracking.tags.iteration)] = setup_params(experiment_params(cfg, 0, 0))
    except (HydraException, OmegaConfBaseException, ConfigError) as err:
        raise CompareError(
            f"Could not compose the presets' configs from {CONF} to check the runs against: {err}"
        ) from err
    return found


def setup_params(params: Mapping[str, str]) -> dict[str, str]:
    """The params that define a run's setup: all but the seed, the parameter count and the bookkeeping ones."""
    return {k: v for k, v in params.items() if k not in NOT_COMPARED and not is_bookkeeping(k)}


def differences(logged: Mapping[str, str], preset: Mapping[str, str]) -> list[str]:
    """``train.epochs=1 (preset: 10)`` for each setup param a run logged other than its preset's config gives."""
    logged = setup_params(logged)
    return [
        f"{key}={logged.get(key, UNSET)} (preset: {preset.get(key, UNSET)})"
        for key in sorted(logged.keys() | preset.keys())
        if logged.get(key) != preset.get(key)
    ]


def left_out_line(run: Run, reason: str) -> str:
    """One line per run left out: ``left out 3f2a9c1b "R2 recipe" (r2, seed 0): dataset=csv (preset: mnist)``."""
    tags, seed = run.data.tags, run.data.params.get("seed", "?")
    which = tags["preset"] + (f" iteration {tags['iteration']}" if "iteration" in tags else "")
    return f'left out {run.info.run_id[:8]} "{run.info.run_name}" ({which}, seed {seed}): {reason}'


def preset_runs(tracking_uri: str, experiment: str = "nnlab", overrides: Sequence[str] = ()) -> pd.DataFrame:
    """The finished runs tagged with a preset whose setup is the preset's (``preset_params``, the seed aside),
    as ``compare.runs_frame`` rows plus ``minutes`` (wall time of the run), the latest run of each seed.

    ``attrs["left_out"]`` holds one line per run left out, naming the params it differs in
    (``left_out_line``); ``attrs["left_out_by_preset"]`` counts them. Sweep trials (tag ``nnlab.trial``)
    inherit a preset's tag but are not its runs, nor are learning-rate range tests (tag ``nnlab.kind``)."""
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
    runs = [r for r in runs if "preset" in r.data.tags and T.TRIAL not in r.data.tags and T.KIND not in r.data.tags]
    expected = preset_params(overrides) if runs else {}
    kept, left_out, counts = [], [], {}
    for run in runs:
        preset = expected.get((run.data.tags["preset"], run.data.tags.get("iteration", "")))
        reason = "no such preset in conf/" if preset is None else ", ".join(differences(run.data.params, preset))
        if reason:
            left_out.append(left_out_line(run, reason))
            counts[run.data.tags["preset"]] = counts.get(run.data.tags["preset"], 0) + 1
        else:
            kept.append(run)
    frame = runs_frame(kept)
    if frame.empty:
        raise CompareError(
            f"No finished run of a preset with the preset's config in experiment {experiment!r} at {tracking_uri}."
            + "".join(f"\n{line}" for line in left_out)
        )
    frame["minutes"] = (frame["end_time"] - frame["start_time"]).dt.total_seconds() / 60
    iteration = frame.get("tags.iteration", pd.Series("", index=frame.index)).fillna("")  # R1's history: per iteration
    frame = frame.assign(iteration=iteration)
    frame = frame.drop_duplicates(["tags.preset", "params.seed", "iteration"], keep="last")  # runs oldest first
    frame.attrs["left_out"], frame.attrs["left_out_by_preset"] = left_out, counts
    frame.attrs["overrides"] = list(overrides)
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
    counts = frame.attrs.get("left_out_by_preset", {})
    left_out = ", ".join(f"{n} of `{preset}`" for preset, n in sorted(counts.items()))
    overrides = " ".join(frame.attrs.get("overrides", []))
    return (
        f"{len(frame)} finished runs on {machines}; commit {', '.join(commits) or 'not recorded'}{tree}; "
        f"runs from {frame['start_time'].min():%Y-%m-%d} to {frame['end_time'].max():%Y-%m-%d}."
        + (f" Presets composed with `{overrides}`." if overrides else "")
        + (f" Left out, as runs whose config differs from their preset's: {left_out}." if counts else "")
    )


def render(frame: pd.DataFrame) -> str:
    """The results section's generated part, in Markdown."""
    text = [to_markdown(preset_table(frame)), f"\n{provenance(frame)}\n"]
    if (frame["tags.preset"] == HISTORY).any():
        text += ["\nR1's history (`python experiments/run.py -m experiment=r1 '+r1_history=glob(*)'`):\n\n"]
        text.append(to_markdown(history_table(frame)))
    return "".join(text)


SECTION = re.compile(re.escape(BEGIN) + "(.*?)" + re.escape(END), re.S)


def replace_section(page: str, generated: str) -> str:
    """``page`` (``docs/results.md``) with the text between the results markers replaced by ``generated``."""
    if not SECTION.search(page):
        raise CompareError(f"The page has no results markers: add the lines\n{BEGIN}\n{END}\nwhere the tables go.")
    return SECTION.sub(lambda _: f"{BEGIN}\n{generated}{END}", page)


def table_rows(text: str) -> list[str]:
    """The rows of the Markdown tables in ``text``, each as its table's first header cell and its own first
    cell: ``preset `r0```, ``iteration 4 and 6``."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        first = re.split(r"(?<!\\)\|", line.strip())[1].strip()
        if header is None:
            header = first
        elif set(line.strip()) - set("|-: "):  # not the |---| line under the header
            rows.append(f"{header} {first}")
    return rows


def lost_rows(page: str, generated: str) -> list[str]:
    """The table rows between the page's results markers that ``generated`` no longer has."""
    match = SECTION.search(page)
    new = set(table_rows(generated))
    return [row for row in table_rows(match.group(1) if match else "") if row not in new]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db")
    parser.add_argument("--experiment", default="nnlab", help="default: %(default)s")
    parser.add_argument(
        "--write",
        type=Path,
        metavar="PAGE",
        help="replace the section between the results markers of PAGE (docs/results.md); refused when the new "
        "tables would lose a row the page's tables have",
    )
    parser.add_argument(
        "--overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra overrides the runs were made with besides the preset (a check of this command on short runs: "
        "dataset=digits train.epochs=1); runs are compared with each preset composed with them",
    )
    args = parser.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    try:
        runs = preset_runs(uri, args.experiment, args.overrides)
        for line in runs.attrs["left_out"]:
            print(line, file=sys.stderr)
        generated = render(runs)
        if args.write:
            page = args.write.read_text()
            new_page = replace_section(page, generated)
            lost = lost_rows(page, generated)
            if lost:
                raise CompareError(
                    f"Not writing {args.write}: its tables have {len(lost)} row(s) that the finished runs in {uri} "
                    f"(experiment {args.experiment!r}) no longer give: {', '.join(lost)}. Runs whose config differs "
                    "from their preset's are left out (listed above), so a store holding only short checks or "
                    "another setup's runs would drop them; run those presets as docs/results.md says, or delete "
                    "the rows from the page by hand if they are meant to go."
                )
            args.write.write_text(new_page)
    except CompareError as err:
        print(f"results: {err}", file=sys.stderr)
        return 1
    print(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
