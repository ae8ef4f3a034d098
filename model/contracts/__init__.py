"""The contracts between jokebot's processes, in one torch-free place both sides import.

- `jokes`: what counts as a valid joke and when two jokes are the same (the duplicate key);
  `/addjoke` and `jokebot import` check with it, the trainer recognises verbatim copies with it.
- `corpus`: the corpus record (`CorpusJoke`) and the snapshot file the bot writes and the
  trainer reads.
- `manifest`: a version's folder: its name (`v3`), its `manifest.json` (`VersionManifest`,
  written once by the trainer, read by the bot) and its adapter folder.
- `training_job`: the job file the bot writes and the trainer reads (`TrainJob`, pydantic).
- `training_events`: the JSON lines the trainer writes on stdout and the bot reads.

Nothing here imports torch, transformers or anything of `bot/` (a test checks it), so the bot
loads these without torch.
"""
