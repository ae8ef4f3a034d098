"""A training run as the bot sees it: the coordinator (snapshot, job, trainer processes, then
promotion), the trainer's process group and its events, the gate, model versions (promote a
candidate: gate, load, record once, prune; activate, roll back), the retrain schedule, live
progress and how results are worded.

Imports `runners`, `community`, `store`, `settings` and `model/contracts`, never torch: the
trainer is its own process. Used by `services`, the Discord face and the CLI.
"""
