"""The ``nnlab_optuna`` sweeper: ``python experiments/run.py -m hydra/sweeper=nnlab_optuna +sweep=lr_momentum_l2``.

It owns the study as ``python -m sweeps.run`` does (same space, storage, budget, pruner, MLflow parent
run) but launches each trial as a Hydra job through the configured launcher. Jobs learn which trial
they are from ``sweep_trial.{study,storage,number}``: the launcher runs ``sweeps.trial.run_job`` in
place of the app's task, so that ``train`` reports to the trial's pruner through a callback, in-process
or not; the sweeper tells the outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("nnlab.sweeps")


def is_sweep_setting(argument: str) -> bool:
    """``+sweep=<name>`` and ``sweep.<key>=...`` set the sweep; they are not passed on to the jobs."""
    key = OverridesParser.create().parse_override(argument).get_key_element().lstrip("+~")
    return key == "sweep" or key.startswith("sweep.")


class NnlabOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = {k: v for k, v in settings.items() if v is not None}
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from sweeps.trial import run_job  # each job trains as its trial, reporting to the trial's pruner

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=run_job
        )

    def batch_size(self) -> int:
        """Trials launched together: the launcher's ``n_jobs`` (joblib), else one."""
        n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=1)
        return len(os.sched_getaffinity(0)) if n_jobs is None or n_jobs < 1 else int(n_jobs)

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        from experiments.tracking import flatten
        from sweeps.config import default_storage, direction, settings
        from sweeps.optuna_private import storage_of, trial_id
        from sweeps.parent import Parent
        from sweeps.space import parse, to_text
        from sweeps.study import Heartbeat, ask, budget, budget_lock, open_storage, open_study, retry, running
        from sweeps.trial import PRUNER_ATTR, conclude

        cfg = self.config
        node = OmegaConf.to_container(cfg.sweep, resolve=True) if cfg.get("sweep") else {}
        conf = settings(OmegaConf.merge(node, self.settings))
        training = [a for a in arguments if not is_sweep_setting(a)]
        space, rest = parse(flatten(conf.params), training)
        url = default_storage(conf, cfg.tracking.dir)
        n_trials = budget(conf, space)
        study = open_study(conf, open_storage(url, conf.heartbeat), space, direction(conf, cfg.train.objective))
        study.set_user_attr(PRUNER_ATTR, conf.pruner)
        with budget_lock(storage_of(study), conf.study_name):  # one parent run, however many sweepers start at once
            parent = Parent(cfg.tracking, conf.study_name) if cfg.tracking.enabled else None
        if parent is not None:
            parent.describe(conf, space, url, rest)
        batch = self.batch_size()
        if batch > 1:  # joblib's worker processes start after this: divide the BLAS threads between them
            threads = str(max(1, len(os.sched_getaffinity(0)) // batch))
            os.environ.update({v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        log.info("Optuna study %s in %s: %d trials, %d at a time", conf.study_name, url, n_trials, batch)
        returns: list[JobReturn] = []
        finished = False
        try:
            while True:
                trials = ask(study, n_trials, conf.heartbeat, parent and parent.fail_child, count=batch)
                if not trials:
                    if not running(study):
                        break
                    time.sleep(conf.heartbeat.interval)
                    continue
                jobs = []
                for trial in trials:
                    params = space.suggest(trial)
                    spec = {"study": conf.study_name, "storage": url, "number": trial.number}
                    job = rest + space.overrides(params) + [f"sweep_trial.{k}={to_text(v)}" for k, v in spec.items()]
                    jobs.append(job + ([f"tracking.parent_run_id={parent.run_id}"] if parent else []))
                with contextlib.ExitStack() as beats:
                    for trial in trials:
                        beats.enter_context(Heartbeat(storage_of(study), trial_id(trial)))
                    try:
                        results = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
                    except KeyboardInterrupt:
                        for trial in trials:  # failed and queued again: a rerun resumes with them
                            conclude(study, trial, error=KeyboardInterrupt("interrupted; queued again"))
                            retry(study, storage_of(study).get_trial(trial_id(trial)), max_retry=sys.maxsize)
                        raise
                self.job_idx += len(jobs)
                for trial, result in zip(trials, results):
                    try:
                        value = result.return_value  # Hydra's public accessor re-raises a failed job's exception
                    except BaseException as err:  # every failed job is concluded, as before
                        conclude(study, trial, error=err)
                    else:
                        conclude(study, trial, value)
                returns.extend(results)
            finished = True
        finally:
            if parent is not None:
                parent.summarize(study, cfg.train.objective)
                parent.close(finished)
        if any(t.value is not None for t in study.get_trials(deepcopy=False)):
            log.info("best: trial %d, value %.4f, %s", study.best_trial.number, study.best_value, study.best_params)
        return returns
