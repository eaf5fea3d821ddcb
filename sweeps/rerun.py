"""Run a study's best trial (or its top k) again with more seeds, as one tagged Hydra multirun:
``python -m sweeps.rerun --study lr_momentum_l2 --top 3 --seeds 3``.

Each trial's settings (the overrides it ran with, as the sweep recorded them) become a config
``rerun/trial_<n>.yaml`` in a folder beside the study's journal; the multirun selects them all and the
seeds, ``python experiments/run.py -m hydra.searchpath=[file://<folder>] +rerun=trial_3,trial_7 seed=1,2,3``,
so k trials x N seeds run as one multirun (in ``hydra.launcher``, as any multirun). Every run is tagged
``nnlab.rerun_of=<study>#<trial>``: ``python experiments/compare.py --tags nnlab.rerun_of --group-by nnlab.rerun_of``
gives each trial's mean and spread over the seeds.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.trial import FrozenTrial, TrialState

from experiments.tracking import tags as T
from sweeps.space import to_text
from sweeps.trial import OVERRIDES_ATTR

CONF = Path(__file__).resolve().parents[1] / "conf"
RUN = Path(__file__).resolve().parents[1] / "experiments" / "run.py"
LEFT_OUT = ("sweep", "seed", "hydra", "sweep_trial", "tracking.parent_run_id", "tracking.uri")  # the rerun sets these


def best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` complete trials, best first."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=reverse)[:top]


def trial_overrides(trial: FrozenTrial) -> list[str]:
    """The overrides ``trial`` ran with, but for what the rerun sets itself (``LEFT_OUT``); its params for a trial
    of a sweep that recorded none (before nnlab recorded them: the sweep's fixed values are then missing)."""
    recorded = trial.user_attrs.get(OVERRIDES_ATTR)
    if recorded is None:
        print(f"trial {trial.number} recorded no overrides (an older sweep): only its sampled params are set; add the "
              "sweep's fixed values (model=..., optimizer=...) to the command", file=sys.stderr)  # fmt: skip
        recorded = [f"{key}={to_text(value)}" for key, value in trial.params.items()]
    parsed = OverridesParser.create().parse_overrides(recorded)
    return [line for line, o in zip(recorded, parsed, strict=True) if not o.key_or_group.startswith(LEFT_OUT)]


def trial_config(study_name: str, trial: FrozenTrial, overrides: list[str]) -> str:
    """``overrides`` as a global config: group choices in its defaults list, values as keys, and the rerun tag."""
    defaults, values = [], {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key, value = override.key_or_group.lstrip("+"), override.value()
        if (CONF / key).is_dir():  # a config group (model=wide1024): chosen in the defaults list
            defaults.append({f"override /{key}": value})
            continue
        node = values
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    values.setdefault("tracking", {}).setdefault("tags", {})[T.RERUN_OF] = f"{study_name}#{trial.number}"
    head = f"# @package _global_\n# trial {trial.number} of study {study_name} (value {trial.value:.6g}): "
    head += " ".join(overrides) + "\n"
    return head + yaml.safe_dump(({"defaults": defaults} if defaults else {}) | values, sort_keys=False)


def command(folder: Path, trials: list[FrozenTrial], seeds: list[int], uri: str | None, extra: list[str]) -> list[str]:
    """The multirun over the trials' configs in ``folder`` and the seeds."""
    names = ",".join(f"trial_{t.number}" for t in trials)
    line = [sys.executable, str(RUN), "-m", f"hydra.searchpath=[file://{folder}]", f"+rerun={names}"]
    line += [f"seed={','.join(map(str, seeds))}", *([f"tracking.uri={uri}"] if uri else []), *extra]
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study name (hydra.sweeper.study_name)")
    parser.add_argument("--storage", help="journal file or database URL (default: <tracking-dir>/optuna/<study>.log)")
    parser.add_argument("--tracking-dir", default="mlruns", help="the sweep's tracking.dir (default: mlruns)")
    parser.add_argument("--top", type=int, default=1, help="how many of the best trials (default: the best)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per trial: seed=1..N (the sweep ran seed 0)")
    parser.add_argument("--dry-run", action="store_true", help="write the configs and print the command only")
    parser.add_argument(
        "overrides", nargs="*", help="more overrides for every run (train.epochs=30, hydra/launcher=...)"
    )
    args = parser.parse_args(argv)
    from sweeps.parent import TRACKING_ATTR
    from sweeps.study import open_storage

    journal = Path(args.tracking_dir).resolve() / "optuna" / f"{args.study}.log"
    url = args.storage or str(journal)
    if "://" not in url and not Path(url).exists():
        print(f"no study storage at {url}: pass --storage (the sweep's hydra.sweeper.storage)", file=sys.stderr)
        return 2
    try:
        study = optuna.load_study(study_name=args.study, storage=open_storage(url, heartbeat=None))
    except (UnicodeDecodeError, ValueError, KeyError) as err:
        print(f"cannot read study {args.study!r} from {url} ({type(err).__name__}: {err}): pass the journal file or "
              "database URL the sweep used with --storage.", file=sys.stderr)  # fmt: skip
        return 2
    trials = best_trials(study, args.top)
    if not trials or args.top < 1 or args.seeds < 1:
        print(f"study {args.study} has no complete trial to run again (or --top/--seeds below 1)", file=sys.stderr)
        return 2
    folder = (Path(url).parent if "://" not in url else journal.parent) / "rerun" / args.study
    (folder / "rerun").mkdir(parents=True, exist_ok=True)
    for trial in trials:
        (folder / "rerun" / f"trial_{trial.number}.yaml").write_text(
            trial_config(args.study, trial, trial_overrides(trial))
        )
    uri = (study.user_attrs.get(TRACKING_ATTR) or {}).get("uri")
    line = command(folder, trials, list(range(1, args.seeds + 1)), uri, args.overrides)
    if len(trials) < args.top:
        print(f"study {args.study} has only {len(trials)} complete trial(s) of the {args.top} asked for: "
              "running those", file=sys.stderr)  # fmt: skip
    print(f"{len(trials)} trial(s) x {args.seeds} seeds, tagged {T.RERUN_OF}={args.study}#<trial>:")
    print(shlex.join(line), flush=True)
    compare = [sys.executable, str(RUN.parent / "compare.py"), *(["--tracking-uri", uri] if uri else [])]
    compare += ["--tags", T.RERUN_OF, "--group-by", T.RERUN_OF, "--sort", "test/acc"]
    if args.dry_run:
        return 0
    code = subprocess.run(line).returncode
    if code == 0:
        print(f"each trial's mean ± std over the seeds: {shlex.join(compare)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
