"""Asking the model: the HTTP client of one runner replica, the pool of replicas (routing,
failover, all-or-nothing swaps), how each engine kind swaps a version in (`RUNNER_KIND`), the
runner child process of `jokebot run`, and the joke teller that turns completions into a joke.

Imports `community`, `store`, `settings` and `model/contracts`, never torch (the runner is
another process). Used by `training` (to swap a promoted version in) and the rooms above.
"""
