"""``elementwise_kernels``: run a test once with NumPy's element-wise passes (updates, ReLU, dropout) and once
with nn.kernels' compiled ones."""

import pytest

from nn import kernels


@pytest.fixture(params=["numpy", "numba"])
def elementwise_kernels(request, monkeypatch):
    """The element-wise implementation in force for the test; the numba run is skipped without numba."""
    if request.param == "numba" and kernels.numba is None:
        pytest.skip("numba is not installed (pip install -e '.[fast]'): only NumPy's updates are tested")
    monkeypatch.setattr(kernels, "ENABLED", request.param == "numba")
    return request.param
