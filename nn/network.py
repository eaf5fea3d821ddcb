"""``Network``: an ordered stack of layers with named parameters, and the ``mlp`` builder."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from nn.activations import ACTIVATIONS, ReLU
from nn.checks import check, in_range, is_integer
from nn.initializers import INITIALIZERS
from nn.layers import Dense, Dropout, Layer
from nn.losses import softmax_cross_entropy


class Network:
    """A sequential network ending in logits.

    Layers are named by type and index among their kind (``dense0``, ``relu0``, ``dense1`` ...);
    parameters are exposed as ``params["dense0.W"]`` and their gradients under the same keys.
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        if not layers:
            raise ValueError("a Network needs at least one layer")
        self.layers = list(layers)
        counts: Counter[str] = Counter()
        self.names = []
        for layer in self.layers:
            kind = type(layer).__name__.lower()
            self.names.append(f"{kind}{counts[kind]}")
            counts[kind] += 1
        first = self.layers[0]
        if isinstance(first, Dense):
            first.needs_input_grad = False

    # -- parameters ---------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        """name -> parameter array (the layer's own array: updating it updates the network)."""
        return {f"{n}.{k}": v for n, layer in zip(self.names, self.layers) for k, v in layer.params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """name -> gradient of the last backward pass, same keys as ``params``."""
        return {f"{n}.{k}": v for n, layer in zip(self.names, self.layers) for k, v in layer.grads.items()}

    def set_params(self, values: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters; keys and shapes must match exactly."""
        own = self.params
        if set(values) != set(own):
            raise ValueError(f"parameter names differ: expected {sorted(own)}, got {sorted(values)}")
        for name, value in values.items():
            if value.shape != own[name].shape:
                raise ValueError(f"{name}: expected shape {own[name].shape}, got {value.shape}")
            own[name][...] = value

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.params.values())).dtype

    def astype(self, dtype) -> Network:
        """Cast every parameter to ``dtype`` (float64 for gradient checks); returns self."""
        for layer in self.layers:
            layer.astype(dtype)
        return self

    @property
    def input_dim(self) -> int:
        return next(layer.in_features for layer in self.layers if isinstance(layer, Dense))

    @property
    def num_classes(self) -> int:
        return [layer.out_features for layer in self.layers if isinstance(layer, Dense)][-1]

    # -- passes -------------------------------------------------------------------------------
    @property
    def stages(self) -> list[tuple[Layer, ReLU | None]]:
        """The layers in order, each Dense layer paired with the ReLU right after it, which it runs."""
        stages: list[tuple[Layer, ReLU | None]] = []
        for layer in self.layers:
            previous, paired = stages[-1] if stages else (None, None)
            if type(layer) is ReLU and type(previous) is Dense and paired is None:  # not subclasses: own forwards
                stages[-1] = (previous, layer)
            else:
                stages.append((layer, None))
        return stages

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x: (B, input_dim) -> logits (B, num_classes). A Dense layer followed by ReLU runs it (see ``stages``)."""
        for layer, relu in self.stages:
            x = layer.forward(x, training) if relu is None else layer.forward(x, training, relu)
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        """grad: (B, num_classes) gradient of the loss wrt the logits; fills ``grads``.

        Returns the gradient wrt the input, or None when the first layer was told not to compute it.
        """
        for layer, relu in reversed(self.stages):
            grad = layer.backward(grad) if relu is None else layer.backward(grad, relu)
        return grad

    def predict_proba(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """x: (N, input_dim) -> class probabilities (N, num_classes)."""
        from nn.activations import softmax

        x = np.asarray(x, dtype=self.dtype)
        return np.concatenate([softmax(self.forward(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])

    def predict(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """x: (N, input_dim) -> predicted labels (N,) int64."""
        x = np.asarray(x, dtype=self.dtype)
        parts = [self.forward(x[i : i + batch_size]).argmax(axis=1) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts).astype(np.int64)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 4096, probabilities: bool = False) -> tuple:
        """Mean cross-entropy loss and accuracy of (N, input_dim) inputs against (N,) labels; with
        ``probabilities``, also the class probabilities (N, num_classes) they were measured from."""
        x = np.asarray(x, dtype=self.dtype)
        logits = np.concatenate([self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        loss, probs = softmax_cross_entropy(logits, y)
        accuracy = float(np.mean(probs.argmax(axis=1) == y))
        return (loss, accuracy, probs) if probabilities else (loss, accuracy)

    def fit(self, X, y, X_val=None, y_val=None, epochs: int = 10, batch_size: int = 128, **kwargs):
        """Train in place and return the per-epoch history; see ``nn.training.fit`` for the options."""
        from nn.training import fit

        return fit(self, X, y, X_val, y_val, epochs=epochs, batch_size=batch_size, **kwargs)

    def save(self, path) -> None:
        """Write architecture and weights to one ``.npz`` (see ``nn.serialization``)."""
        from nn.serialization import save

        save(self, path)

    def __repr__(self) -> str:
        inner = ",\n  ".join(f"{n}: {layer!r}" for n, layer in zip(self.names, self.layers))
        return f"Network(\n  {inner}\n)"


def parameter_count(sizes: Sequence[int]) -> int:
    """Weights and biases of an MLP with layer sizes ``sizes`` (e.g. ``[784, 1024, 10]``)."""
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))


def check_mlp(hidden: Sequence[int], activation: str, init: str, dropout: float, input_dropout: float) -> None:
    """The checks of ``mlp``'s arguments, callable before the input size is known; raises ``ArgumentError``."""
    check(
        isinstance(hidden, Sequence) and all(is_integer(n) and n >= 1 for n in hidden),
        "hidden",
        hidden,
        "a list of positive integer widths, e.g. [1024] ([] is softmax regression)",
    )
    check(activation in ACTIVATIONS, "activation", activation, f"one of {', '.join(ACTIVATIONS)}")
    check(init in INITIALIZERS, "init", init, f"one of {', '.join(INITIALIZERS)}")
    check(in_range(dropout, 0, 1, high_open=True), "dropout", dropout, "in [0, 1)")
    check(in_range(input_dropout, 0, 1, high_open=True), "input_dropout", input_dropout, "in [0, 1)")


def mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    init: str = "he_normal",
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    rng: np.random.Generator | None = None,
    dtype=np.float32,
) -> Network:
    """A fully connected network ``sizes[0] -> ... -> sizes[-1]`` ending in logits.

    Parameters
    ----------
    sizes : e.g. ``[784, 1024, 10]``; hidden layers are followed by ``activation`` and, when
        ``dropout > 0``, a ``Dropout(dropout)``; ``input_dropout`` drops input pixels.
    init : weight initializer for every Dense layer.
    rng : draws the initial weights and, later, the dropout masks.
    """
    sizes = list(sizes)
    check(
        len(sizes) >= 2 and all(is_integer(n) and n >= 1 for n in sizes),
        "sizes",
        sizes,
        "an input size, the hidden widths and an output size, all positive integers",
    )
    check_mlp(sizes[1:-1], activation, init, dropout, input_dropout)
    rng = rng if rng is not None else np.random.default_rng()
    layers: list[Layer] = []
    if input_dropout > 0:
        layers.append(Dropout(input_dropout, rng))
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(Dense(fan_in, fan_out, init=init, rng=rng, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(Dropout(dropout, rng))
    return Network(layers)
