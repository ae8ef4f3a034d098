"""The contracts between jokebot's processes, in one torch-free place both sides import.

`training_job` is the job file the bot writes and the trainer reads; `training_events` are the
JSON lines the trainer writes on stdout and the bot reads. Nothing here imports torch,
transformers or anything of `bot/` (a test checks it), so the bot loads these without torch.
"""
