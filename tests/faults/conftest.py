"""The fault tests use the experiment tests' fixtures: composed configs and one shared MLflow store."""

from tests.experiments.conftest import compose, experiment_name, mlflow_store  # noqa: F401
