"""The trainer's processes as the bot sees them: the command, its process group, its events.

TRAIN_PROCESSES=1 runs `python -m model.train --job FILE`; N > 1 runs the same module in N
data-parallel processes through `torchrun` (`python -m torch.distributed.run --standalone
--nproc-per-node N -m model.train --job FILE`), whose rank 0 alone writes the events and the
version. The launcher starts in a session (process group) of its own and the whole group is
signalled: SIGTERM cancels (torchrun passes it on to every rank), SIGKILL ends it all. torchrun
puts each rank in a session of its own, so the ranks also ask the kernel to kill them when
their launcher dies (`model.distributed.die_with_launcher`): no signal to any one process
leaves an orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from model.contracts.training_events import TrainerEvent, parse_event

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 45.0  # after SIGTERM; torchrun itself waits 30 s for its ranks


def visible_gpu_count(environ: Mapping[str, str] | None = None) -> int:
    """CUDA GPUs this host shows the trainer, without loading torch in the bot.

    CUDA_VISIBLE_DEVICES wins when set (its list ends at the first invalid entry, as CUDA
    reads it); otherwise `nvidia-smi -L` counts them; no nvidia-smi means no GPU.
    """
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = 0
        for entry in visible.split(","):
            entry = entry.strip()
            if not entry or entry.startswith("-"):
                break
            count += 1
        return count
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def resolve_train_processes(setting: int | str, device: str, gpus: int | None = None) -> int:
    """TRAIN_PROCESSES as a number: `auto` is one per visible GPU, 1 when training on a CPU."""
    if setting != "auto":
        return int(setting)
    if device in ("cpu", "mps"):
        return 1
    return max(1, visible_gpu_count() if gpus is None else gpus)


def trainer_command(job_file: Path, processes: int, python: str = sys.executable) -> list[str]:
    """The command line that trains `job_file` in `processes` processes on this machine."""
    train = ["-m", "model.train", "--job", str(job_file)]
    if processes <= 1:
        return [python, *train]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    return [python, *launcher, "--nproc-per-node", str(processes), "--max-restarts", "0", *train]


class TrainerProcess:
    """One run of the trainer: started in its own process group, always ended as a group."""

    def __init__(self, command: list[str], log_file: Path, env: Mapping[str, str]) -> None:
        self.command = command
        self.log_file = log_file
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def __aenter__(self) -> TrainerProcess:
        with self.log_file.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=self.env,
                start_new_session=True,  # its own process group, signalled as one
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.running:
            await asyncio.shield(self.stop())
        self.signal_group(signal.SIGKILL)  # whatever the launcher left in its group

    async def events(self) -> AsyncIterator[TrainerEvent]:
        """The trainer's events until its stdout closes; stray lines are logged and skipped."""
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            event = parse_event(raw)
            if event is None:
                log.debug("trainer: %s", raw.decode(errors="replace").rstrip())
                continue
            yield event

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    def kill(self) -> None:
        """SIGKILL the launcher alone, as the kernel's OOM killer would (its ranks follow it)."""
        if self.running:
            assert self.process is not None
            self.process.kill()

    def signal_group(self, signum: int) -> None:
        """Send `signum` to the launcher's whole process group (gone already: nothing to do)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM the group (the trainer removes its folder), SIGKILL it after `grace`."""
        assert self.process is not None
        self.signal_group(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            log.warning("the trainer ignored SIGTERM for %.0f s; killing it", grace)
            self.signal_group(signal.SIGKILL)
            return await self.process.wait()


_ROOT_CAUSE = re.compile(
    r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)(?:.*?traceback\s*:\s*([^\n]*))?",
    re.S,
)


@dataclass(frozen=True)
class RankFailure:
    """torchrun's account of the first rank that failed."""

    rank: int
    exit_code: int  # negative: killed by that signal
    detail: str = ""

    def describe(self) -> str:
        if self.exit_code < 0:
            try:
                how = f"was killed by {signal.Signals(-self.exit_code).name}"
            except ValueError:
                how = f"was killed by signal {-self.exit_code}"
        else:
            how = f"exited with code {self.exit_code}"
        if self.detail and not self.detail.startswith(("Signal", "To enable traceback")):
            how += f" ({self.detail})"
        return f"training process rank {self.rank} {how}"


def launcher_failure(log_text: str) -> RankFailure | None:
    """The "Root Cause" torchrun writes to stderr when a rank fails, if it wrote one."""
    match = _ROOT_CAUSE.search(log_text)
    if match is None:
        return None
    return RankFailure(int(match.group(1)), int(match.group(2)), (match.group(3) or "").strip())
