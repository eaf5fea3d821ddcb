"""The MLflow UI as a person sees it: headless Chromium, driven by Playwright, over a real ``mlflow ui``.

The store holds a small sweep (``python experiments/run.py -m sweep=...``: a parent run and two 3-epoch
trials on digits).
The server is started with the README's command on a free port; the browser opens the experiment, sees
the runs with their metrics, opens a trial, its per-epoch charts, its confusion-matrix and weights
artifacts and its logged model. Assertions are on visible text; screenshots are kept as test artifacts.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import free_port, group_alive

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

CHROMIUM = os.environ.get("NNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # the UI is a React app on a shared, busy machine: wait generously for what it renders


def ui_command(store_uri: str, port: int) -> list[str]:
    """The README's ``mlflow ui`` command (the venv's console script), on ``port``."""
    mlflow = Path(sys.executable).with_name("mlflow")
    head = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    return [*head, "ui", "--backend-store-uri", store_uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


@pytest.fixture(scope="module")
def browser_ready():
    if sync_playwright is None:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set NNLAB_CHROMIUM)")


@pytest.fixture(scope="module")
def ui(browser_ready, empty_store, start_server, request):
    """(base URL, store, experiment id, parent run, trial runs): the server starts while the sweep trains."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    # Job execution is for GenAI scorers; without it the server is one uvicorn process.
    server = start_server(
        "mlflow-ui", ui_command(empty_store.uri, port), port, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    )
    store = request.getfixturevalue("sweep_store")
    seconds = server.wait_ready("/health")
    print(f"mlflow ui answered /health after {seconds:.1f} s")
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name("nnlab")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(trials) == 2, [r.info.run_name for r in runs]
    yield server.url, store, experiment.experiment_id, parents[0], trials
    pgid = server.process.pid
    server.stop()
    assert not group_alive(pgid), "processes of the MLflow server's group outlived stop()"


@pytest.fixture(scope="module")
def page(ui):
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="nnlab-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1920, "height": 1080},
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        try:
            yield page
        finally:
            context.close()


@pytest.fixture
def shot(page, artifacts_dir):
    """``shot(name)`` saves a screenshot of the page as ``<artifacts>/mlflow-ui-<name>.png``."""

    def save(name: str, full_page: bool = False) -> Path:
        path = artifacts_dir / f"mlflow-ui-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        print(f"screenshot: {path}")
        return path

    return save


def close_assistant(page) -> None:
    """Hide the "MLflow Assistant" side panel if it opens; it takes a third of the width."""
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    try:
        close.click(timeout=5_000)
    except PlaywrightTimeout:  # no panel: nothing to close
        pass


def run_url(base: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" + (f"/{tab}" if tab else "")


def test_experiment_lists_the_sweep_and_its_runs_with_metrics(ui, page, shot):
    base, _, _, parent, trials = ui
    page.goto(base + "/")
    page.get_by_text("Model training", exact=True).click()  # the home page opens on GenAI
    page.get_by_role("link", name="nnlab", exact=True).first.click()
    close_assistant(page)
    expect(page.get_by_text(parent.info.run_name, exact=True)).to_be_visible()
    expect(page.get_by_text("3 matching runs")).to_be_visible()
    # The trials are nested under the sweep's parent run: expand it.
    page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
    for trial in trials:
        expect(page.get_by_text(trial.info.run_name, exact=True)).to_be_visible()
    # Metrics are columns a user picks: val/acc and test/acc.
    page.get_by_role("button", name="Columns").click()
    tree = page.get_by_test_id("column-selector-tree")
    for metric in ("val/acc", "test/acc"):
        page.get_by_placeholder("Search columns").fill(metric)
        tree.locator(".du-bois-light-tree-title").filter(has_text=re.compile(f"^{re.escape(metric)}$")).click()
    page.keyboard.press("Escape")
    for metric in ("val/acc", "test/acc"):
        expect(page.get_by_role("columnheader", name=metric, exact=True).first).to_be_visible()
    for trial in trials:
        for metric in ("val/acc", "test/acc"):
            value = str(trial.data.metrics[metric])  # the UI shows the full double, like Python's repr
            expect(page.get_by_role("gridcell", name=value, exact=True).first).to_be_visible()
    shot("runs")
    # Open one trial from the table.
    page.get_by_role("link", name=trials[0].info.run_name, exact=True).click()
    expect(page.get_by_text(trials[0].info.run_id, exact=True)).to_be_visible()
    expect(page.get_by_text("Finished", exact=True).first).to_be_visible()
    expect(page.get_by_text("Metrics (", exact=False).first).to_be_visible()
    shot("run")


def test_run_has_per_epoch_charts(ui, page, shot):
    base, _, experiment_id, _, trials = ui
    trial = trials[0]
    page.goto(run_url(base, experiment_id, trial.info.run_id))
    close_assistant(page)
    page.get_by_role("tab", name="Model metrics").click()
    search = page.get_by_placeholder("Search metric charts")
    for metric in ("val/acc", "train/loss"):
        search.fill(metric)
        # A per-epoch metric is a line chart over steps (single values are bar charts, with no Step axis).
        expect(page.get_by_text(f"{trial.info.run_name} ({metric})", exact=True)).to_be_visible()
        expect(page.get_by_text("Step", exact=True).first).to_be_visible()
        if metric == "val/acc":
            shot("charts")
    search.fill("val_confusion")  # the confusion-matrix image, logged with a step slider
    expect(page.get_by_text("val_confusion", exact=True).first).to_be_visible()


def test_run_has_confusion_and_weight_artifacts(ui, page, shot):
    base, _, experiment_id, _, trials = ui
    page.goto(run_url(base, experiment_id, trials[0].info.run_id, "artifacts"))
    close_assistant(page)
    page.get_by_text("confusion", exact=True).click()
    for epoch in (1, 2, 3):
        expect(page.get_by_text(f"val_epoch_{epoch:03d}.json", exact=True)).to_be_visible()
    expect(page.get_by_text("test.json", exact=True)).to_be_visible()
    page.get_by_text("val_epoch_003.json", exact=True).click()
    expect(page.get_by_text('"epoch": 3').first).to_be_visible()  # the file's content, previewed
    expect(page.get_by_text('"counts"').first).to_be_visible()
    shot("confusion")
    page.get_by_text("checkpoints", exact=True).click()
    for name in ("best.npz", "last.npz"):
        expect(page.get_by_text(name, exact=True)).to_be_visible()
    page.get_by_text("last.npz", exact=True).click()
    expect(page.get_by_text("checkpoints/last.npz", exact=True)).to_be_visible()
    page.get_by_text("figures", exact=True).click()
    page.get_by_text("test_confusion.png", exact=True).click()
    figure = page.get_by_alt_text("figures/test_confusion.png").first
    expect(figure).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figure.element_handle())
    shot("figure")


def test_run_has_its_logged_model(ui, page, shot):
    base, _, experiment_id, _, trials = ui
    page.goto(run_url(base, experiment_id, trials[0].info.run_id))
    close_assistant(page)
    expect(page.get_by_text("Logged models (1)")).to_be_visible()
    link = page.locator('a[href*="/models/m-"]').first
    href = link.get_attribute("href")
    page.goto(f"{base}/{href}")  # the link opens a new tab; follow it here
    expect(page.get_by_text("model", exact=True).first).to_be_visible()
    page.get_by_role("link", name="Artifacts", exact=True).click()
    page.get_by_text("MLmodel", exact=True).click()
    expect(page.get_by_text("python_function").first).to_be_visible()  # the MLmodel file, previewed
    expect(page.get_by_text("loader_module: mlflow.pyfunc.model").first).to_be_visible()
    shot("model")
    page.get_by_text("artifacts", exact=True).first.click()  # the folder holding the weights
    page.get_by_text("network.npz", exact=True).click()
    expect(page.get_by_text("artifacts/network.npz", exact=True).first).to_be_visible()
