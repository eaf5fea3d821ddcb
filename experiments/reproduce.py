"""Re-run a logged run from its MLflow run id and compare the results.

    python experiments/reproduce.py RUN_ID [--tracking-uri sqlite:///mlruns/mlflow.db]

The new run uses the logged config (same seed), is tagged ``nnlab.reproduces=RUN_ID``, and its final
metrics are compared with the original's. A different git commit, a dirty tree or different data is
reported first, since then equal metrics are not expected. Exits 0 when the metrics are identical, 1 when
they differ, 2 on an error.
"""

from __future__ import annotations

import logging
import math

from mlflow.tracking import MlflowClient

from experiments.exits import ERRORS, FAILED, report, run_command
from experiments.runs import get_run, logged_config, parse_run_arguments, tracking_uri_or_default
from experiments.tracking import tags as T
from experiments.tracking.provenance import environment_tags
from experiments.train import train

log = logging.getLogger("nnlab")
COMPARED = ("test/acc", "test/loss", "val/best_acc", "val/acc", "val/loss", "train/loss")


def differences(original_tags: dict, now: dict) -> list[str]:
    """Why equal metrics may not be expected: code or data that differ from the original run's."""
    notes = []
    commit, current = original_tags.get("mlflow.source.git.commit"), now.get("mlflow.source.git.commit")
    if commit != current:
        notes.append(f"the code differs: the run was made at git commit {commit}, the checkout is at {current}")
    if original_tags.get("git.dirty") == "true":
        notes.append("the run was made from a dirty tree (uncommitted changes), which git cannot restore")
    if now.get("git.dirty") == "true":
        notes.append("the checkout has uncommitted changes")
    return notes


def reproduce(run_id: str, tracking_uri: str | None = None) -> tuple[str, dict[str, tuple[float, float]]]:
    """Re-run ``run_id``; returns the new run id and {metric: (original, reproduced)}."""
    uri = tracking_uri_or_default(tracking_uri)
    client = MlflowClient(uri)
    original = get_run(client, run_id)
    for note in differences(original.data.tags, environment_tags()):
        log.warning("%s", note)
    cfg = logged_config(client, run_id, uri)
    cfg.tracking.run_name = f"reproduce {original.info.run_name}"
    cfg.tracking.tags = dict(cfg.tracking.tags) | {T.REPRODUCES: run_id}
    new = client.get_run(train(cfg).run_id)
    if new.data.tags.get("dataset.checksum") != original.data.tags.get("dataset.checksum"):
        log.warning("the data differs: dataset checksum %s now, %s in the original run",
                    new.data.tags.get("dataset.checksum"), original.data.tags.get("dataset.checksum"))  # fmt: skip
    metrics = {
        name: (original.data.metrics[name], new.data.metrics.get(name, math.nan))
        for name in COMPARED
        if name in original.data.metrics
    }
    return new.info.run_id, metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_run_arguments(__doc__.splitlines()[0], argv)
    try:
        new_id, metrics = reproduce(args.run_id, args.tracking_uri)
    except ERRORS as err:
        return report(err, "reproduce")
    print(f"\n| metric | original {args.run_id[:8]} | reproduced {new_id[:8]} | same |\n|---|---|---|---|")
    for name, (before, after) in metrics.items():
        print(f"| {name} | {before:.6f} | {after:.6f} | {'yes' if before == after else 'NO'} |")
    same = all(before == after for before, after in metrics.values())
    print("\nidentical metrics" if same else "\nthe metrics differ")
    return 0 if same else FAILED


if __name__ == "__main__":
    run_command(main, "reproduce")
