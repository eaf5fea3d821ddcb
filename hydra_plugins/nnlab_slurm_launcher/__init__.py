"""The ``hydra/launcher=slurm`` launcher: trials as SLURM jobs (``conf/hydra/launcher/slurm.yaml``)."""
