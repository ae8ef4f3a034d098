"""The model side: everything that loads torch, and the contracts the bot shares with it.

- `contracts/`: torch-free records both sides import (jokes, corpus, training job and events).
- The engine, as nano-vllm lays it out: `engine` (queue, worker, continuous batching) over
  `request` (a request and its rows), `sampling_params`, `registry` (the resident models),
  `batch` (the running batch and its KV cache) and `sampler`.
- `runner/`: the HTTP process serving the engine (OpenAI API, health, metrics, swaps), with
  `openai_api` (the schema, torch-free), `hot_swap` and `metrics`.
- The trainer: `train` (the process, as phases), `data`, `evaluate` (the gate's measurements,
  sampled through the engine), `event_writer`, `time_budget`, `cancellation`, `distributed`,
  `lora`.
- Shared: `loading`, `textformat` (the joke's token layout), `devices`, `embedded`.

Nothing here imports `bot` (a test checks it). The bot imports `contracts/`, and inside
functions `embedded` (its paths; the conversion before `jokebot runner`) and `runner`.
"""
