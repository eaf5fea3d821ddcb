"""The MLflow model of a trained nnlab network, logged as code (MLflow's models-from-code).

``experiments.pyfunc.log_model`` logs this file with the network's weights and a copy of the ``nn``
package; MLflow runs it to rebuild the model, so serving it needs numpy, pandas, pillow and mlflow but
not this project, and nothing is pickled. A request holds either pixel rows or images:

- rows of ``D`` numbers in [0, 1] (D = 784 for MNIST), as an array, a list of rows or a DataFrame;
- a DataFrame (``dataframe_split``/``dataframe_records``) or ``inputs`` dict with an ``image`` column of
  base64-encoded image files (PNG, JPEG, ... of any size and polarity), prepared as MNIST was by
  ``nn.data.images.image_features``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

import nn
from nn.data.images import ImageError, image_features

IMAGE_COLUMN = "image"


class ModelInputError(MlflowException, ValueError):
    """A request the model cannot classify; the scoring server answers it with HTTP 400 and this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class DigitClassifier(mlflow.pyfunc.PythonModel):
    """Predicts the digit and the class probabilities of images or flattened pixel rows (N, D)."""

    # No type-hint schema: it would enforce one input form, and this model takes two. Without this flag,
    # MLflow 3.17 warns about missing hints at every load, under a filter that user code cannot override.
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.network = nn.load(context.artifacts["network"])

    def predict(self, context, model_input, params=None):  # untyped: MLflow would build a schema from hints
        """Classify ``model_input`` (see the module docstring).

        Returns
        -------
        DataFrame (N rows): ``digit`` int64 and ``prob_0`` .. ``prob_{K-1}`` float64.
        """
        x = as_matrix(model_input, self.network.input_dim)
        return prediction_frame(self.network.predict_proba(x))


def expected(input_dim: int) -> str:
    return (
        f"expected rows of {input_dim} numbers (one flattened image per row) or a column {IMAGE_COLUMN!r} of "
        "base64-encoded image files"
    )


def as_matrix(model_input: Any, input_dim: int) -> np.ndarray:
    """Pixel rows or base64 images (DataFrame, dict, array, list) as a float array (N, input_dim).

    ``ModelInputError`` (a ValueError), with a message naming the expected input, if it is neither."""
    if isinstance(model_input, dict) and IMAGE_COLUMN in model_input:
        return decode_images(model_input[IMAGE_COLUMN], input_dim)
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN in model_input.columns:
            return decode_images(model_input[IMAGE_COLUMN], input_dim)
        non_numeric = [c for c in model_input.columns if not pd.api.types.is_numeric_dtype(model_input[c])]
        if non_numeric:
            raise ModelInputError(f"{expected(input_dim)}; got non-numeric columns {non_numeric[:5]}")
        model_input = model_input.to_numpy()
    try:
        x = np.asarray(model_input, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelInputError(f"{expected(input_dim)}; got input that is not numeric") from None
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise ModelInputError(f"{expected(input_dim)}; got an array of shape {x.shape}")
    return x


def decode_images(encoded: Any, input_dim: int) -> np.ndarray:
    """Base64 strings (a column, list or array) -> (N, input_dim) rows prepared as MNIST was."""
    rows = []
    for i, text in enumerate(np.asarray(encoded, dtype=object).reshape(-1)):
        try:
            data = base64.b64decode(str(text), validate=True)
            rows.append(image_features(data, input_dim))
        except (binascii.Error, ValueError) as err:  # ImageError too
            detail = err if isinstance(err, ImageError) else "not valid base64"
            raise ModelInputError(f"{IMAGE_COLUMN} {i}: {detail}; {expected(input_dim)}") from None
    return np.stack(rows) if rows else np.zeros((0, input_dim))


def prediction_frame(probs: np.ndarray) -> pd.DataFrame:
    """(N, K) probabilities -> DataFrame with ``digit`` (int64) and ``prob_0`` .. ``prob_{K-1}`` (float64)."""
    probs = np.asarray(probs, dtype=np.float64)
    frame = pd.DataFrame(probs, columns=[f"prob_{k}" for k in range(probs.shape[1])])
    frame.insert(0, "digit", probs.argmax(axis=1).astype(np.int64))
    return frame


mlflow.models.set_model(DigitClassifier())
