"""A training run as the bot sees it: the coordinator (snapshot, trainer processes, gate,
promotion), the trainer's process group and its events, the gate, model versions (activate,
promote, roll back, prune), the retrain schedule, live progress and how results are worded.

Imports `runners`, `community`, `store`, `settings` and `model/contracts`, never torch: the
trainer is its own process. Used by `services`, the Discord face and the CLI.
"""
