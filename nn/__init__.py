"""nn: a fully connected neural-network library in NumPy.

>>> import numpy as np, nn
>>> rng = np.random.default_rng(0)
>>> net = nn.mlp([784, 1024, 10], rng=rng)
>>> history = net.fit(X, y, X_val, y_val, epochs=5, batch_size=128, rng=rng)  # doctest: +SKIP
"""

from nn.activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh, softmax
from nn.augment import Augmenter
from nn.clipping import ClipByNorm, ClipByValue, NoClip, global_norm
from nn.initializers import get_initializer
from nn.layers import Dense, Dropout, Layer
from nn.losses import CrossEntropy, SoftmaxCrossEntropy
from nn.network import Network, mlp
from nn.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from nn.schedules import (
    Constant,
    CosineAnnealing,
    ExponentialDecay,
    MultiStepDecay,
    ReduceOnPlateau,
    Schedule,
    StepDecay,
    Warmup,
)
from nn.serialization import ModelFileError, load, save
from nn.training import Diverged, EpochResult, Loop, Trainer, fit

__all__ = [
    "GELU",
    "LeakyReLU",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "softmax",
    "Augmenter",
    "ClipByNorm",
    "ClipByValue",
    "NoClip",
    "global_norm",
    "get_initializer",
    "Dense",
    "Dropout",
    "Layer",
    "CrossEntropy",
    "SoftmaxCrossEntropy",
    "Network",
    "mlp",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "Constant",
    "CosineAnnealing",
    "ExponentialDecay",
    "MultiStepDecay",
    "ReduceOnPlateau",
    "Schedule",
    "StepDecay",
    "Warmup",
    "ModelFileError",
    "load",
    "save",
    "Diverged",
    "EpochResult",
    "Loop",
    "Trainer",
    "fit",
]
