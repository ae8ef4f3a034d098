"""jokebot's bot side: the process that talks to Discord. It never imports torch.

Rooms, top to bottom (a room may import the rooms below it, never those above; checked by
`tests/test_layers.py`):

- `discord_app/` the Discord face: client, cogs, replies, checks, shards;
- `services` what the commands need, built once by the composition root (`app`);
- `training/` a training run as the bot sees it: trainer process, gate, versions, schedule;
- `runners/` asking the model: runner client, pool of replicas, engine kinds, the joke teller;
- `community/` the community's rules: moderation, near-duplicates, content policy, limits;
- `store/` the database and its migrations;
- `settings` every setting, readable from any room.

Entry points (`cli`, `app`, `sandbox`) sit on top. Below everything is `model/contracts`, which
the bot shares with the model side.
"""
