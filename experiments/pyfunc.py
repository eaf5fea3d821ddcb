"""The trained network as an MLflow pyfunc model, loadable and servable without nnlab installed.

The ``nn`` package travels with the model (``code_paths``) and ``DigitClassifier`` is pickled by
value, so ``mlflow models serve`` / ``mlflow.pyfunc.load_model`` need only numpy, pandas and mlflow.
"""

import shutil
import sys
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, DataType, Schema

import nn

REQUIREMENTS = ("numpy", "pandas", "mlflow", "cloudpickle")


class DigitClassifier(mlflow.pyfunc.PythonModel):
    """Predicts the digit and the class probabilities of flattened images (N, D) with an nnlab network."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.network = nn.load(context.artifacts["network"])

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """Classify ``model_input``.

        Parameters
        ----------
        model_input : a DataFrame with D numeric columns (what MLflow passes after enforcing the signature);
            called directly, a numeric array (N, D) or (D,) or a list of rows works too.

        Returns
        -------
        DataFrame (N rows): ``digit`` int64 and ``prob_0`` .. ``prob_{K-1}`` float64.
        """
        x = as_matrix(model_input, self.network.input_dim)
        return prediction_frame(self.network.predict_proba(x))


def as_matrix(model_input: Any, input_dim: int) -> np.ndarray:
    """Convert a DataFrame, array or list of rows to a float array (N, input_dim); ValueError if it does not fit."""
    expected = f"expected {input_dim} numeric columns (one flattened image per row)"
    if isinstance(model_input, pd.DataFrame):
        non_numeric = [c for c in model_input.columns if not pd.api.types.is_numeric_dtype(model_input[c])]
        if non_numeric:
            raise ValueError(f"{expected}; got non-numeric columns {non_numeric[:5]}")
        model_input = model_input.to_numpy()
    try:
        x = np.asarray(model_input, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{expected}; got input that is not numeric ({err})") from err
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise ValueError(f"{expected}; got an array of shape {x.shape}")
    return x


def prediction_frame(probs: np.ndarray) -> pd.DataFrame:
    """(N, K) probabilities -> DataFrame with ``digit`` (int64) and ``prob_0`` .. ``prob_{K-1}`` (float64)."""
    probs = np.asarray(probs, dtype=np.float64)
    frame = pd.DataFrame(probs, columns=[f"prob_{k}" for k in range(probs.shape[1])])
    frame.insert(0, "digit", probs.argmax(axis=1).astype(np.int64))
    return frame


def model_signature(input_dim: int, predictions: pd.DataFrame) -> ModelSignature:
    """Inputs: ``input_dim`` unnamed double columns; outputs: the columns of ``predictions``.

    Unnamed columns are matched by position, so pyfunc accepts float32 and float64 arrays (N, D), lists of
    rows, DataFrames with any column names, and every JSON format (``inputs``, ``instances``,
    ``dataframe_split``). A float32 tensor signature, what ``infer_signature(example)`` gives, would reject
    float64 arrays and lists before they reach ``DigitClassifier.predict``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")  # the digit output
        outputs = infer_signature(None, predictions).outputs
    return ModelSignature(inputs=Schema([ColSpec(DataType.double) for _ in range(input_dim)]), outputs=outputs)


def log_model(network: nn.Network, example: np.ndarray, name: str = "model") -> mlflow.models.model.ModelInfo:
    """Log ``network`` as a pyfunc model in the active MLflow run.

    Parameters
    ----------
    network : the trained network.
    example : (N, D) inputs; their first two rows, as float32, become the input example.
    name : the logged model's name.

    Returns
    -------
    The ``ModelInfo`` of the logged model; load it with ``mlflow.pyfunc.load_model(info.model_uri)``.
    """
    example = as_matrix(example, network.input_dim)[:2].astype(np.float32)
    signature = model_signature(network.input_dim, prediction_frame(network.predict_proba(example)))
    this_module = sys.modules[__name__]
    with tempfile.TemporaryDirectory() as tmp:
        weights = nn.save(network, Path(tmp) / "network.npz")
        no_cache = shutil.ignore_patterns("__pycache__")
        package = shutil.copytree(Path(nn.__file__).parent, Path(tmp) / "nn", ignore=no_cache)
        # By value, so that loading the model needs the copied ``nn`` package but not this project.
        cloudpickle.register_pickle_by_value(this_module)
        try:
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=DigitClassifier(),
                artifacts={"network": str(weights)},
                signature=signature,
                input_example=example,
                pip_requirements=[f"{requirement}=={version(requirement)}" for requirement in REQUIREMENTS],
                code_paths=[str(package)],
            )
        finally:
            cloudpickle.unregister_pickle_by_value(this_module)
