"""What a run is called and what it records about itself: its name (from the command line Hydra parsed), its
params and its description."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nn.network import parameter_count


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
    return {key: json.dumps(value) if isinstance(value, list) else short(value) for key, value in params.items()}


def short(value: Any) -> str:
    """A param as the runs table shows it: a float to 3 significant digits where its ``repr`` is longer
    (``1.92e-06``, not ``1.9237305012e-06``; ``0.05`` stays), anything else as ``str`` (the exact values are
    in the run's ``config.yaml``)."""
    if isinstance(value, float) and len(repr(value)) > 7:
        return f"{value:.3g}"
    return str(value)


NAMED_BY_OPTION = ("model", "optimizer", "schedule", "dataset", "experiment")  # wide1024, adam, cosine, digits, r1
CONTEXT = ("dataset", "experiment", "train.epochs")  # what runs compared side by side mostly share: named last
NAME_LIMIT = 60


def short_setting(key: str, value: Any) -> str:
    """``optimizer.lr=0.0581`` for a key's last part and a 3-digit float; a group's option alone: ``wide1024``."""
    if key in NAMED_BY_OPTION:
        return str(value)
    if isinstance(value, float):
        value = f"{value:.3g}"
    return f"{key.rsplit('.', 1)[-1]}={value}"


def run_name(overrides: list[str], swept: Collection[str] = ()) -> str:
    """A short name from the command-line overrides, what tells runs apart first: ``lr=0.05 wide1024 digits``.

    The keys a multirun sweeps (``swept``) come first; groups appear as their option, other keys by their
    last part; the data set, preset and epoch count come last; tracking, Hydra and progress-bar settings
    are left out; cut to ``NAME_LIMIT`` characters."""
    settings = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith(("tracking.", "hydra.", "train.progress")):
            continue
        try:
            value = float(value) if "." in value or "e" in value.lower() else value
        except ValueError:
            pass
        settings.append(((key not in swept, key in CONTEXT), short_setting(key, value)))
    name = " ".join(text for _, text in sorted(settings, key=lambda pair: pair[0])) or "defaults"
    return name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 1] + "…"


def description(overrides: list[str], params: dict[str, str], dataset, outcome: str, result: str = "") -> str:
    """A run's MLflow description: its ``result_line`` (bold, what the UI shows first), how it ended (in
    full), the command, the network and data."""
    sizes = "-".join(map(str, [dataset.train.X.shape[1], *json.loads(params["model.hidden"]), dataset.num_classes]))
    command = " ".join(["python experiments/run.py", *overrides])
    return (
        (f"**{result}**\n\n" if result else "")
        + f"{outcome}\n\n`{command}`\n\n{sizes} network ({int(params['model.n_params']):,} parameters), "
        f"{params['optimizer']} lr {params['optimizer.lr']}, {params['schedule']}, on {dataset.name} "
        f"({len(dataset.train.y)} training examples)."
    )


def result_line(state: str, epoch: int, epochs: int, val_acc: float | None, final: Mapping | None = None) -> str:
    """A run's result in one line (tag ``nnlab.result``, the description's first line): ``0.9712 test acc · 0.9740
    val acc · epoch 3 of 8 · finished``, the figures first (a narrow runs-table column shows them); the epoch is
    the one whose weights the run ends with (early stopping's kept epoch), or where a run cut short stopped
    (``0.8123 val acc · pruned at epoch 2``)."""
    parts = [f"{final['test/acc']:.4f} test acc"] if final and "test/acc" in final else []
    if val_acc is not None:
        parts.append(f"{val_acc:.4f} val acc")
    if final is not None:
        parts += [f"epoch {epoch} of {epochs}", state]
    else:
        parts.append(f"{state} at epoch {epoch}")
    return " · ".join(parts)


def logged_model_name(architecture: str, epoch: int) -> str:
    """A logged model's name: its architecture and epoch, ``mlp-64-128-10-e3`` (the UI's model list shows the run
    it was logged from beside it; ``runs:/<run id>/<name>`` takes it as it is)."""
    return f"{architecture}-e{epoch}"


def hydra_context() -> tuple[list[str], Path | None, set[str]]:
    """Command-line overrides and the ``.hydra`` folder of this job, when running under Hydra, and the keys
    its multirun sweeps (``optimizer.lr=0.01,0.1``), read from the sweep's ``multirun.yaml``."""
    if not HydraConfig.initialized():
        return [], None, set()
    hydra = HydraConfig.get()
    swept = set()
    if hydra.mode == RunMode.MULTIRUN:
        sweep = Path(hydra.runtime.cwd) / hydra.sweep.dir / "multirun.yaml"
        with contextlib.suppress(OSError, OmegaConfBaseException, HydraException):
            parsed = OverridesParser.create().parse_overrides(list(OmegaConf.load(sweep).hydra.overrides.task))
            swept = {override.get_key_element().lstrip("+~") for override in parsed if override.is_sweep_override()}
    return list(hydra.overrides.task), Path(hydra.runtime.output_dir) / hydra.output_subdir, swept
