"""Several runner replicas behind one bot: health, routing, failover, fan-out swaps, reconciling.

`RUNNER_URL` may list several replicas. `RunnerPool` keeps the client API of one runner
(`complete`, `health`, `wait_until_ready`, `load`, `close`), so the commands, training and
version code do not care how many there are. Versions go in by number (`serve`, `load`); each
completion comes back with the number of the version that wrote it:

- **Routing.** Each completion goes to the healthy replica with the fewest requests in flight
  from this bot, preferring replicas that serve the serving version.
- **Failover.** A completion whose connection fails (or that a replica answers 503) is sent
  once more to another replica: a completion is safe to repeat.
- **Swaps.** `load` swaps the version into every live replica, one at a time, each confirmed
  before the next; if one refuses, the replicas already swapped go back to the previous
  version and the error is raised, so all replicas keep serving the same version.
- **Reconciling.** A background task checks each replica's health every couple of seconds;
  every `reconcile_every` seconds, and as soon as a replica comes back, it swaps the serving
  version into any live replica that serves another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from bot.runners.client import (
    Completion,
    RunnerClient,
    RunnerError,
    RunnerTimeout,
    RunnerUnavailable,
    RunnerUnreachable,
    poll_until_ready,
)
from bot.runners.kinds import EngineKind, Target, engine_kind

log = logging.getLogger(__name__)

HEALTH_EVERY = 2.0  # seconds between health checks of the replicas


@dataclass(eq=False)
class Replica:
    """One runner as this bot sees it."""

    url: str
    client: RunnerClient
    healthy: bool = False
    version: str | None = None
    model_ref: str | None = None
    in_flight: int = 0
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "healthy": self.healthy,
            "version": self.version,
            "in_flight": self.in_flight,
            "error": None if self.healthy else self.error,
        }


class RunnerPool:
    """The bot's runner: one or several replicas of the same engine kind."""

    def __init__(
        self,
        urls: list[str] | str,
        *,
        admin_token: str | None = None,
        kind: str = "jokebot",
        timeout: float = 60.0,
        retries: int | None = None,
        reconcile_every: float = 15.0,
        health_every: float = HEALTH_EVERY,
    ) -> None:
        urls = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else list(urls)
        urls = [u.rstrip("/") for u in urls if u]
        if not urls:
            raise ValueError("a runner pool needs at least one URL")
        # One replica: the client retries a restarting runner itself (as before). Several:
        # fail fast and let the pool send the request to another replica.
        per_replica = (3 if len(urls) == 1 else 0) if retries is None else retries
        self.replicas = [
            Replica(u, RunnerClient(u, admin_token=admin_token, timeout=timeout, retries=n))
            for u, n in ((u, per_replica) for u in urls)
        ]
        self.kind: EngineKind = engine_kind(kind)
        self.target: Target | None = None  # the serving version, once known
        self._numbers: dict[str, int] = {}  # version name -> number, of every version given
        self.reconcile_every = reconcile_every
        self.health_every = health_every
        self._swap_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._turn = 0
        self._health: dict[str, dict[str, Any]] = {}  # the last /health body of each replica

    # ----- the one-runner API -----
    @property
    def base_url(self) -> str:
        return ",".join(r.url for r in self.replicas)

    async def __aenter__(self) -> RunnerPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for replica in self.replicas:
            await replica.client.close()

    def serve(self, path: str, version: int) -> None:
        """Tell the pool which version serves (the database's); the reconciler enforces it."""
        self.target = self._known(Target.of(path, version))
        self.kind.remember(self.target)

    async def complete(self, prompt: str, **sampling: Any) -> Completion:
        """One completion on the best replica; once more on another if the connection fails.

        Its `version` is the number of the version that wrote it: the one the engine names
        (our runner, a vLLM adapter), else the one the replica serves; None if neither is a
        version this pool was given."""
        tried: list[Replica] = []
        error: RunnerError | None = None
        for _ in range(min(2, len(self.replicas))):
            replica = self._pick(exclude=tried)
            if replica is None:
                break
            tried.append(replica)
            replica.in_flight += 1
            try:
                completion = await replica.client.complete(
                    prompt, model=self.kind.request_model(self.target), **sampling
                )
                return replace(completion, version=self._written_by(completion, replica))
            except RunnerTimeout:
                raise  # repeating it elsewhere would double the wait
            except RunnerUnavailable as failed:  # connection failed, or 503 (not ready)
                self._mark_down(replica, str(failed))
                error = failed
                log.info("runner %s failed (%s); trying another replica", replica.url, failed)
            finally:
                replica.in_flight -= 1
        raise error or RunnerUnavailable("no runner replica is up")

    async def health(self) -> dict[str, Any]:
        """The health of a ready replica, with every replica's state under `replicas`."""
        await self.check_health()
        ready = [r for r in self.replicas if r.healthy]
        if not ready:
            reasons = "; ".join(f"{r.url}: {r.error}" for r in self.replicas)
            raise RunnerUnavailable(f"no runner replica is ready ({reasons})")
        body = dict(self._health.get(ready[0].url) or {})
        body["replicas"] = self.describe()
        return body

    async def wait_until_ready(self, timeout: float, is_alive: Any = None) -> dict[str, Any]:
        """Poll until one replica is ready; `is_alive()` returning False stops early."""
        return await poll_until_ready(self.health, timeout, is_alive)

    async def load(self, path: str, version: int) -> dict[str, Any]:
        """Swap `version` into every live replica, all or nothing; the pool then serves it."""
        target = self._known(Target.of(path, version))
        async with self._swap_lock:
            await self.check_health()
            live = [r for r in self.replicas if r.healthy]
            if not live:
                raise RunnerUnavailable("no runner replica is up to load the new version")
            done: list[tuple[Replica, Target | None]] = []
            for replica in live:
                before = self.target or self._current_of(replica)
                try:
                    await self.kind.swap(replica.client, target, before)
                except RunnerUnreachable as gone:  # died meanwhile: the reconciler catches up
                    self._mark_down(replica, str(gone))
                    continue
                except RunnerError as refused:
                    await self._roll_back(done)
                    raise RunnerError(
                        f"{replica.url} refused {target.name}: {refused}"
                        + (" (the other replicas went back)" if done else "")
                    ) from refused
                replica.version, replica.model_ref = target.name, target.path
                done.append((replica, before))
            if not done:
                raise RunnerUnavailable("every runner replica went away during the swap")
            self.serve(path, version)
        log.info("%s serves on %d replica(s)", target.name, len(done))
        return {"version": target.name, "model_ref": target.path, "replicas": self.describe()}

    def describe(self) -> list[dict[str, Any]]:
        """Each replica's URL, health, version and requests in flight (for /status)."""
        return [r.describe() for r in self.replicas]

    # ----- background: health and reconciling -----
    def start(self) -> None:
        """Start watching the replicas (health every few seconds, reconcile periodically)."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="runner-pool")

    async def _watch(self) -> None:
        last_reconcile = time.monotonic()
        while True:
            await asyncio.sleep(self.health_every)
            try:
                returned = await self.check_health()
                due = time.monotonic() - last_reconcile >= self.reconcile_every
                if returned or due:
                    last_reconcile = time.monotonic()
                    await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking the runner replicas failed")

    async def check_health(self) -> bool:
        """Refresh every replica's health; True if one that was down is back."""
        results = await asyncio.gather(*(self._check(r) for r in self.replicas))
        return any(results)

    async def _check(self, replica: Replica) -> bool:
        was = replica.healthy
        try:
            body = await replica.client.health()
            replica.version = await self.kind.serving(replica.client, body)
            replica.model_ref = body.get("model_ref", replica.model_ref)
            self._health[replica.url] = body
            replica.healthy, replica.error = True, None
        except RunnerError as error:
            self._mark_down(replica, str(error))
        if replica.healthy != was:
            log.info("runner %s is %s", replica.url, "up" if replica.healthy else "down")
        return replica.healthy and not was

    async def reconcile(self) -> list[str]:
        """Swap the serving version into each live replica that serves another; their URLs."""
        target = self.target
        if target is None or self._swap_lock.locked():
            return []
        fixed = []
        async with self._swap_lock:
            for replica in self.replicas:
                if not replica.healthy or replica.version == target.name:
                    continue
                log.info(
                    "runner %s serves %s, not %s: swapping %s in",
                    replica.url, replica.version, target.name, target.name,
                )  # fmt: skip
                try:
                    await self.kind.swap(replica.client, target, None)
                except RunnerError as error:
                    log.warning("runner %s refused %s: %s", replica.url, target.name, error)
                    continue
                replica.version, replica.model_ref = target.name, target.path
                fixed.append(replica.url)
        return fixed

    # ----- internals -----
    def _known(self, target: Target) -> Target:
        """Remember `target`'s number under its name (completions are named, not numbered)."""
        if target.number is not None:
            self._numbers[target.name] = target.number
        return target

    def _written_by(self, completion: Completion, replica: Replica) -> int | None:
        for name in (completion.model, replica.version):
            if name in self._numbers:
                return self._numbers[name]
        return None

    def _pick(self, exclude: list[Replica]) -> Replica | None:
        candidates = [r for r in self.replicas if r not in exclude]
        healthy = [r for r in candidates if r.healthy]
        if self.target is not None:
            current = [r for r in healthy if r.version == self.target.name]
            healthy = current or healthy
        pool = healthy or candidates  # none known healthy: try anyway (health may be stale)
        if not pool:
            return None
        self._turn += 1
        fewest = min(r.in_flight for r in pool)
        tied = [r for r in pool if r.in_flight == fewest]
        return tied[self._turn % len(tied)]

    def _mark_down(self, replica: Replica, why: str) -> None:
        if replica.healthy:
            log.warning("runner %s is down: %s", replica.url, why)
        replica.healthy, replica.error = False, why

    def _current_of(self, replica: Replica) -> Target | None:
        if replica.version and replica.model_ref:
            number = self._numbers.get(replica.version)
            return Target(replica.model_ref, replica.version, number)
        return None

    async def _roll_back(self, done: list[tuple[Replica, Target | None]]) -> None:
        for replica, before in reversed(done):
            if before is None:
                log.error("runner %s: no earlier version known to go back to", replica.url)
                continue
            try:
                await self.kind.swap(replica.client, before, None)
                replica.version, replica.model_ref = before.name, before.path
                log.info("runner %s went back to %s", replica.url, before.name)
            except RunnerError as error:
                log.error("runner %s could not go back to %s: %s", replica.url, before.name, error)
