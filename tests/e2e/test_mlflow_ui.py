"""The MLflow UI as a person sees it: headless Chromium, driven by Playwright, over a real ``mlflow ui``.

The store holds a small sweep (``python experiments/run.py -m sweep=...``: a parent run and two 3-epoch
trials on digits).
The server is started with the README's command on a free port; the browser opens the experiment, sees the
short run names, each run's result line and the numeric width and parameter-count columns, a run's and the
sweep parent's description (the result line, the best trial) on the first screen, compares the trials'
curves (the screenshots in docs/: mlflow-compare.png, mlflow-runs.png), follows the run link a training run
prints into the model-training view, sees a trial's per-epoch charts, its per-class and confusion tables and
its weights, and its logged model. Assertions are on visible text; screenshots are kept as test artifacts.
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

pytestmark = pytest.mark.slow  # a server or a browser

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
if sync_playwright is not None:
    expect.set_options(timeout=20_000)  # each expect() retries this long (Playwright's default is 5 s)


def ui_command(store_uri: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The README's lean ``mlflow ui`` command (``experiments.store.ui_command``) on ``port``: the command
    line (the venv's console script) and its environment."""
    from experiments.store import UI_PORT
    from experiments.store import ui_command as readme_command

    variable, *words = readme_command(store_uri).replace(f"--port {UI_PORT}", f"--port {port}").split()
    mlflow = Path(sys.executable).with_name("mlflow")
    head = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    name, value = variable.split("=")
    return [*head, *words[1:]], {name: value}


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
    command, env = ui_command(empty_store.uri, port)
    assert env == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = start_server("mlflow-ui", command, port, env=env)
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
    page.get_by_text("Model training", exact=True).click()  # the home page opens on GenAI; the choice is kept
    page.get_by_role("link", name="nnlab", exact=True).first.click()
    close_assistant(page)
    expect(page.get_by_text(parent.info.run_name, exact=True)).to_be_visible()
    expect(page.get_by_text("3 matching runs")).to_be_visible()
    # The trials are nested under the sweep's parent run: expand it.
    page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
    for trial in trials:  # short names, what differs first: "#0 lr=0.0581 momentum=0.556 weight_decay=0.00633"
        assert re.fullmatch(r"#\d+ lr=\S+ momentum=\S+ weight_decay=\S+", trial.info.run_name), trial.info.run_name
        expect(page.get_by_text(trial.info.run_name, exact=True)).to_be_visible()
    # Metrics, params and tags are columns a user picks: the result line, val/acc, test/acc, the numeric width
    # and size.
    page.get_by_role("button", name="Columns").click()
    tree = page.get_by_test_id("column-selector-tree")
    columns = ("nnlab.result", "val/acc", "test/acc", "model.width", "model.n_params")
    for column in columns:
        page.get_by_placeholder("Search columns").fill(column)
        tree.locator(".du-bois-light-tree-title").filter(has_text=re.compile(f"^{re.escape(column)}$")).click()
    page.keyboard.press("Escape")
    for column in columns:
        expect(page.get_by_role("columnheader", name=column, exact=True).first).to_be_visible()
    for trial in trials:
        for metric in ("val/acc", "test/acc"):
            value = str(trial.data.metrics[metric])  # the UI shows the full double, like Python's repr
            expect(page.get_by_role("gridcell", name=value, exact=True).first).to_be_visible()
    assert (trials[0].data.params["model.width"], trials[0].data.params["model.n_params"]) == ("128", "9610")
    for value in ("128", "9610"):  # 64-128-10: 64 * 128 + 128 + 128 * 10 + 10 parameters
        expect(page.get_by_role("gridcell", name=value, exact=True).first).to_be_visible()
    for trial in trials:  # which run is best, at a glance: "0.9611 test acc · 0.9444 val acc · epoch 3 of 3 · ..."
        result = trial.data.tags["nnlab.result"]
        assert re.fullmatch(r"0\.\d{4} test acc · 0\.\d{4} val acc · epoch 3 of 3 · finished", result), result
        expect(page.get_by_role("gridcell", name=result, exact=True).first).to_be_in_viewport()
    shot("runs")
    # Open one trial from the table.
    page.get_by_role("link", name=trials[0].info.run_name, exact=True).click()
    expect(page.get_by_text(trials[0].info.run_id, exact=True)).to_be_visible()
    expect(page.get_by_text("Finished", exact=True).first).to_be_visible()
    expect(page.get_by_text("Metrics (", exact=False).first).to_be_visible()
    # the description opens with the result line, on the first screen
    expect(page.get_by_text(trials[0].data.tags["nnlab.result"], exact=True).first).to_be_in_viewport()
    shot("run")


def test_the_sweep_parent_opens_on_its_best_trial(ui, page, shot):
    """The parent run's description: the best trial with a link to its run, then the top trials, on the first
    screen of its Overview."""
    base, _, experiment_id, parent, trials = ui
    best = max(trials, key=lambda run: run.data.metrics["val/acc"])
    number = best.info.run_name.split(" ")[0]  # "#1"
    page.goto(run_url(base, experiment_id, parent.info.run_id) + "?workflowType=machine_learning")
    close_assistant(page)
    expect(page.get_by_text(re.compile(f"^Best trial {number}")).first).to_be_in_viewport()
    link = page.get_by_role("link", name=number, exact=True).first
    expect(link).to_be_in_viewport()
    assert link.get_attribute("href").endswith(f"/runs/{best.info.run_id}")
    for trial in trials:  # the top-k table: a row per trial, linked
        expect(page.get_by_role("link", name=trial.info.run_name.split(" ")[0], exact=True).first).to_be_visible()
    shot("sweep-parent")


def open_chart(page, dialog, legend: str) -> None:
    """Open the chart whose legend shows ``legend`` full screen. A search for "val/acc" also finds
    "best/val/acc", the order of the charts it finds is not fixed (CI's UI once listed best/val/acc last),
    and under load the cards appear one by one: so the cards are counted again on each of three passes."""
    buttons = page.locator('button[data-component-id="fullscreen_button_chartcard"]')
    expect(buttons.first).to_be_visible()
    for _ in range(3):
        for index in range(buttons.count()):
            buttons.nth(index).click()
            try:
                dialog.get_by_text(legend, exact=True).wait_for(timeout=10_000)
                return
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
        page.wait_for_timeout(2_000)
    raise AssertionError(f"no chart of the search shows {legend!r}")


def test_trials_compared_on_one_chart_per_metric(ui, page, shot):
    """The experiment's chart view: each trial's val/acc over the epochs on one chart (the README's screenshot)."""
    base, _, experiment_id, parent, trials = ui
    page.goto(f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    close_assistant(page)
    expect(page.get_by_text(parent.info.run_name, exact=True)).to_be_visible()
    if not page.get_by_text(trials[0].info.run_name, exact=True).is_visible():  # the UI remembers expanded rows
        page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
    page.locator("label:has(input[value=CHART])").click()
    page.get_by_placeholder("Search metric charts").fill("val/acc")
    dialog = page.get_by_role("dialog")
    open_chart(page, dialog, f"{trials[0].info.run_name} (val/acc)")  # the val/acc chart, large
    for trial in trials:  # one curve each, in a legend of short names
        expect(dialog.get_by_text(f"{trial.info.run_name} (val/acc)", exact=True)).to_be_visible()
    expect(dialog.get_by_text("Step", exact=True)).to_be_visible()
    shot("compare")  # the README's screenshot (docs/mlflow-compare.png)
    page.keyboard.press("Escape")


def test_the_run_link_opens_the_model_training_view(ui, page, shot):
    """What a run prints when it ends (``experiments.store.run_page``) opens its page in the model-training
    view, not the GenAI one the UI starts in."""
    from experiments.store import run_page

    base, store, experiment_id, _, trials = ui
    port = int(base.rsplit(":", 1)[1].rstrip("/"))
    link = run_page(store.uri, experiment_id, trials[0].info.run_id, ports=[port])
    assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/") and " " not in link  # found serving the run
    page.goto(link)
    close_assistant(page)
    expect(page.get_by_role("heading", name=trials[0].info.run_name)).to_be_visible()
    expect(page.get_by_role("link", name="Models", exact=True)).to_be_visible()  # the model-training sidebar
    expect(page.get_by_text("Judges", exact=True)).to_have_count(0)  # the GenAI sidebar's
    expect(page.get_by_text("Model metrics", exact=True).first).to_be_visible()
    expect(page.get_by_text("System metrics", exact=True).first).to_be_visible()


def test_run_has_per_epoch_charts(ui, page, shot):
    base, _, experiment_id, _, trials = ui
    trial = trials[0]
    page.goto(run_url(base, experiment_id, trial.info.run_id))
    close_assistant(page)
    page.get_by_role("tab", name="Model metrics").click()
    # No wall of single-value charts: one row of them (test/acc, test/loss; MLflow 3.17 orders sections by
    # name, so "test" comes before "train" and "val"), then the curves, the first of them on the first screen.
    expect(page.get_by_text(f"{trial.info.run_name} (train/acc)", exact=True)).to_be_in_viewport()
    shot("charts-opened")
    search = page.get_by_placeholder("Search metric charts")
    for metric in ("val/acc", "train/loss"):
        search.fill(metric)
        # A per-epoch metric is a line chart over steps (single values are bar charts, with no Step axis).
        expect(page.get_by_text(f"{trial.info.run_name} ({metric})", exact=True)).to_be_visible()
        expect(page.get_by_text("Step", exact=True).first).to_be_visible()
        if metric == "val/acc":
            shot("charts")


def test_run_has_confusion_and_weight_artifacts(ui, page, shot):
    base, _, experiment_id, _, trials = ui
    page.goto(run_url(base, experiment_id, trials[0].info.run_id, "artifacts"))
    close_assistant(page)
    page.get_by_text("confusion", exact=True).click()
    expect(page.get_by_text("val_epoch_003.json", exact=True)).to_be_visible()  # the last epoch (every 5 and last)
    expect(page.get_by_text("test.json", exact=True)).to_be_visible()
    page.get_by_text("val_epoch_003.json", exact=True).click()
    expect(page.get_by_text("View as table", exact=True)).to_be_visible()  # a logged table, shown as one
    headers = page.locator("[role=columnheader]")  # the table's header cells (their accessible name is empty)
    expect(headers.first).to_have_text("true / predicted")
    assert headers.all_inner_texts() == ["true / predicted", *map(str, range(10))]
    shot("confusion")
    page.get_by_text("per_class", exact=True).click()
    expect(page.get_by_text("test.json", exact=True)).to_have_count(2)  # the folder opened beside confusion/
    page.get_by_text("test.json", exact=True).last.click()
    expect(page.get_by_text("per_class/test.json", exact=True).first).to_be_visible()
    expect(headers.first).to_have_text("class")
    assert headers.all_inner_texts() == ["class", "precision", "recall", "f1", "support"]
    shot("per-class")
    page.get_by_text("checkpoints", exact=True).click()
    for name in ("best.npz", "last.npz"):
        expect(page.get_by_text(name, exact=True)).to_be_visible()
    page.get_by_text("last.npz", exact=True).click()
    expect(page.get_by_text("checkpoints/last.npz", exact=True)).to_be_visible()
    page.get_by_text("figures", exact=True).click()
    # curves.png: a sweep's trial draws no test_confusion.png at its end any more (issue 25: sweeps.rerun does)
    page.get_by_text("curves.png", exact=True).click()
    figure = page.get_by_alt_text("figures/curves.png").first
    expect(figure).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figure.element_handle())
    shot("figure")


def test_run_has_its_logged_model(ui, page, shot):
    base, _, experiment_id, _, trials = ui
    page.goto(run_url(base, experiment_id, trials[0].info.run_id))
    close_assistant(page)
    expect(page.get_by_text(re.compile(r"^Logged models \([12]\)$"))).to_be_visible()  # last, and best if earlier
    link = page.locator('a[href*="/models/m-"]').first
    href = link.get_attribute("href")
    page.goto(f"{base}/{href}")  # the link opens a new tab; follow it here
    expect(page.get_by_role("heading", name=re.compile(r"^mlp-64-128-10(-best)?\b"))).to_be_visible()  # its layers
    expect(page.get_by_text("digits-test", exact=False).first).to_be_visible()  # the data its metrics are on
    page.get_by_role("link", name="Artifacts", exact=True).click()
    page.get_by_text("MLmodel", exact=True).click()
    expect(page.get_by_text("python_function").first).to_be_visible()  # the MLmodel file, previewed
    expect(page.get_by_text("loader_module: mlflow.pyfunc.loaders.code_model").first).to_be_visible()  # from code
    shot("model")
    page.get_by_text("artifacts", exact=True).first.click()  # the folder holding the weights
    page.get_by_text("network.npz", exact=True).click()
    expect(page.get_by_text("artifacts/network.npz", exact=True).first).to_be_visible()
