"""Log a trained network as an MLflow model built from code (``experiments/digit_model.py``).

The model carries the weights, a copy of the ``nn`` package and the code file, so ``mlflow models serve``
and ``mlflow.pyfunc.load_model`` need only numpy, pandas, pillow and mlflow. It takes pixel rows or
base64-encoded images (see ``experiments/digit_model.py``); its signature gives the outputs only, since
an MLflow input schema cannot say "rows of D numbers, or an image column".
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

import nn

MODEL_CODE = Path(__file__).with_name("digit_model.py")
REQUIREMENTS = ("numpy", "pandas", "pillow", "mlflow")


def model_name(network: nn.Network) -> str:
    """The logged model's name, its layer sizes: ``mlp-784-1024-10``."""
    dense = [layer for layer in network.layers if isinstance(layer, nn.Dense)]
    return "mlp-" + "-".join(str(size) for size in [network.input_dim, *(layer.out_features for layer in dense)])


def output_signature(num_classes: int) -> ModelSignature:
    """Outputs ``digit`` (long) and ``prob_0`` .. ``prob_{K-1}`` (double); inputs unchecked by MLflow."""
    columns = [ColSpec(DataType.long, "digit")] + [ColSpec(DataType.double, f"prob_{k}") for k in range(num_classes)]
    return ModelSignature(inputs=None, outputs=Schema(columns))


def log_model(
    network: nn.Network,
    example: np.ndarray,
    name: str | None = None,
    *,
    step: int = 0,
    tags: dict[str, str] | None = None,
    registered_model_name: str | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log ``network`` as a pyfunc model in the active MLflow run.

    Parameters
    ----------
    network : the trained network.
    example : (N, D) inputs; the first row, as float64, is the model's input example.
    name : the logged model's name; default :func:`model_name`.
    step : the epoch its weights are from (MLflow shows it with the model).
    tags : tags of the logged model.
    registered_model_name : also register it under this name (a new version if it exists).

    Returns
    -------
    The ``ModelInfo``; load it with ``mlflow.pyfunc.load_model(info.model_uri)``.
    """
    example = np.asarray(example, dtype=np.float64)[:1]
    with tempfile.TemporaryDirectory() as tmp:
        weights = nn.save(network, Path(tmp) / "network.npz")
        package = shutil.copytree(
            Path(nn.__file__).parent, Path(tmp) / "nn", ignore=shutil.ignore_patterns("__pycache__")
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*signature.*")  # inputs deliberately unchecked
            return mlflow.pyfunc.log_model(
                name=name or model_name(network),
                python_model=str(MODEL_CODE),
                artifacts={"network": str(weights)},
                signature=output_signature(network.num_classes),
                input_example=example,
                pip_requirements=[f"{requirement}=={version(requirement)}" for requirement in REQUIREMENTS],
                code_paths=[str(package)],
                step=step,
                tags=tags,
                registered_model_name=registered_model_name,
            )
