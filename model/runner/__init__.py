"""The model runner: an aiohttp server speaking the OpenAI completions API over the engine.

Started by `jokebot runner` (`bot/cli.py`), the one entry point, with `run_runner(RunnerConfig)`.

- `app`: the aiohttp app, `/health`, `/health/live`, `/metrics`, and the process's life (start,
  initial load, serve until a signal, clean stop);
- `openai_routes`: `POST /v1/completions` (whole or streamed) and `GET /v1/models`;
- `admin_routes`: what changes the serving model, behind the admin token (`/admin/load`, vLLM's
  adapter calls, SGLang's weight update);
- `state`: the configuration and what one app owns; `responses`: the answers routes share.

It imports the engine and the rest of `model/` (never `bot/`); nothing in `model/` imports it.
Request shapes live in `model.openai_api`, swapping in `model.hot_swap`, generation in the
engine's worker thread (`model.engine`), so the event loop always answers.
"""

from model.runner.app import build_app, run_runner, serve
from model.runner.state import STATE, RunnerConfig

__all__ = ["STATE", "RunnerConfig", "build_app", "run_runner", "serve"]
