"""Training utilities shared by every recipe (DESIGN §6, §10).

- :mod:`.config` — every recipe config dataclass (defaults live there only); :mod:`.config_io` — YAML and
  dotted ``--set`` overrides;
- :mod:`.run` — ``start_run``: the accelerator, the output folder guard and the resume point;
- :mod:`.loop` — ``train``: the one training step (accumulation, non-finite guard, clipping, EMA, logging,
  sample grids, checkpoints);
- :mod:`.optim` — AdamW groups and LR schedules; :mod:`.ema` — the EMA; :mod:`.checkpoints` — atomic,
  validated ``save_state`` folders with rotation and exact resume.
"""
