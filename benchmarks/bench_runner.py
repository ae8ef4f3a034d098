"""Benchmark the model runner as a real process on the embedded default model (SmolLM2-135M).

First, plain transformers `generate` at batch 16 (32 sampled new tokens) in each dtype this
device supports, and the dtype the runner's `DTYPE=auto` chose with its timings (#18); the
server is then compared with the best of them. Then one table: sequential, 4, 16 and 32
concurrent clients (tokens/s, p50, p95, errors) at 32-token completions, a hot swap under 16
clients, and a "hardware" row: raw batched forward throughput of the same model at batch 16, in
the served dtype, without the server, with the server/raw ratio.
A second table: streaming (time to first token), and the bot's runner pool
(`bot.runners.pool`) at 16 clients in front of one replica and of two replicas on this host
(on a small CPU host two replicas share the same cores: what it shows is the cost of the
client's routing, not a speed-up), with a swap across both replicas under load.

    python benchmarks/bench_runner.py [--data-dir DIR] [--model FOLDER] [--compare-cb]
                                      [--dtype auto|float32|bfloat16|float16] [--quick]

Loopback only; every client loop is bounded. `--compare-cb` adds an in-process comparison of
this engine with transformers' continuous batching (`generate_batch`) on the same workload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = [
    "Why did the chicken cross the road?",
    "What do you call a fish with no eyes?",
    "I told my wife she was drawing her eyebrows too high.",
    "Why don't scientists trust atoms?",
    "A man walks into a bar",
    "My doctor said",
    "",
    "Knock knock.",
]
TOKEN = "bench-token"
console = Console(width=150)


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    codes: dict[int, int] = field(default_factory=dict)
    wall: float = 0.0
    versions: set[str] = field(default_factory=set)

    def p(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, round(q * (len(data) - 1)))]

    @property
    def tps(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


async def stream_test(url: str, clients: int, per_client: int, tokens: int) -> Outcome:
    """Streamed completions; `latencies` holds the time to the first text chunk (TTFT)."""
    out = Outcome()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": tokens, "seed": i,
                    "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}  # fmt: skip
            start = time.perf_counter()
            first = None
            try:
                async with session.post(f"{url}/v1/completions", json=body) as resp:
                    out.codes[resp.status] = out.codes.get(resp.status, 0) + 1
                    async for line in resp.content:
                        if not line.startswith(b"data: {"):
                            continue
                        chunk = json.loads(line[6:])
                        if chunk["choices"] and chunk["choices"][0]["text"] and first is None:
                            first = time.perf_counter() - start
                        if chunk.get("usage"):
                            out.tokens += chunk["usage"]["completion_tokens"]
            except Exception:
                out.errors += 1
                return
            if first is None:
                out.errors += 1
                return
            out.latencies.append(first)

        async def client(c: int) -> None:
            for k in range(per_client):
                await one(c * 1000 + k)

        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        out.wall = time.perf_counter() - start
    return out


async def pool_test(
    urls: list[str], clients: int, per_client: int, tokens: int, swap_to: Path | None = None
) -> tuple[Outcome, dict]:
    """Clients through the bot's RunnerPool (routing, failover); optionally a swap mid-way."""
    from bot.runners.pool import RunnerPool

    out = Outcome()
    info: dict = {}
    pool = RunnerPool(urls, admin_token=TOKEN, timeout=300)
    try:
        await pool.wait_until_ready(30)
        pool.serve("v0", 0)

        swapped = asyncio.Event()

        async def client(c: int) -> None:
            # with a swap: bounded, until one request that started after the swap is done
            for k in range(40 if swap_to is not None else per_client):
                after = swapped.is_set()
                i = c * 1000 + k
                start = time.perf_counter()
                try:
                    answer = await pool.complete(
                        PROMPTS[i % len(PROMPTS)], max_tokens=tokens, temperature=0.9,
                        top_p=0.95, seed=i,
                    )  # fmt: skip
                except Exception:
                    out.errors += 1
                    continue
                out.latencies.append(time.perf_counter() - start)
                out.tokens += answer.completion_tokens
                out.versions.add(answer.model)
                if after and swap_to is not None:
                    return

        start = time.perf_counter()
        tasks = [asyncio.create_task(client(c)) for c in range(clients)]
        if swap_to is not None:
            await asyncio.sleep(3.0)
            began = time.perf_counter()
            try:
                info = await pool.load(str(swap_to), 1)
                info["status"] = 200
            except Exception as exc:
                info = {"status": f"{type(exc).__name__}: {exc}"}
            info["swap_seconds"] = time.perf_counter() - began
            swapped.set()
        await asyncio.gather(*tasks)
        out.wall = time.perf_counter() - start
    finally:
        await pool.close()
    return out, info


async def direct_test(url: str, clients: int, per_client: int, tokens: int) -> Outcome:
    """The same requests as `pool_test`, posted straight to one runner (no pool)."""
    out = Outcome()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(c: int) -> None:
            for k in range(per_client):
                i = c * 1000 + k
                body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": tokens,
                        "temperature": 0.9, "top_p": 0.95, "seed": i}  # fmt: skip
                start = time.perf_counter()
                async with session.post(f"{url}/v1/completions", json=body) as resp:
                    data = await resp.json()
                if resp.status != 200:
                    out.errors += 1
                    continue
                out.latencies.append(time.perf_counter() - start)
                out.tokens += data["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        out.wall = time.perf_counter() - start
    return out


def start_runner(
    folder: Path, port: int, max_batch: int, log: Path, dtype: str = "auto"
) -> subprocess.Popen:
    """`jokebot runner` as a host starts it (settings from the environment)."""
    cmd = [sys.executable, "-m", "bot.cli", "runner", "--model", str(folder), "--version", "v0",
           "--port", str(port)]  # fmt: skip
    env = {**os.environ, "RUNNER_TOKEN": TOKEN, "MODEL_BASE": str(folder),
           "RUNNER_MAX_BATCH": str(max_batch), "RUNNER_MAX_QUEUE": "64",
           "DTYPE": dtype}  # fmt: skip
    with log.open("w") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def stop_runner(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def swap_test_reset(url: str, folder: Path) -> None:
    """Serve v0 again after the swap test, so every later scenario starts from the same model."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/admin/load",
            json={"path": str(folder), "version": "v0"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp,
    ):
        await resp.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(session, url: str, i: int, tokens: int, out: Outcome) -> None:
    body = {
        "prompt": PROMPTS[i % len(PROMPTS)],
        "max_tokens": tokens,
        "ignore_eos": True,  # exactly `tokens` tokens per completion
        "seed": i,
    }
    start = time.perf_counter()
    try:
        async with session.post(f"{url}/v1/completions", json=body) as resp:
            data = await resp.json()
            out.codes[resp.status] = out.codes.get(resp.status, 0) + 1
            if resp.status != 200:
                out.errors += 1
                return
            out.tokens += data["usage"]["completion_tokens"]
            out.versions.add(data["model"])
    except Exception:
        out.errors += 1
        return
    out.latencies.append(time.perf_counter() - start)


async def load_test(url: str, clients: int, per_client: int, tokens: int) -> Outcome:
    out = Outcome()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(c: int) -> None:
            for k in range(per_client):
                await one_request(session, url, c * 1000 + k, tokens, out)

        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        out.wall = time.perf_counter() - start
    return out


async def swap_test(url: str, clients: int, tokens: int, candidate: Path) -> tuple[Outcome, dict]:
    out = Outcome()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        swapped = asyncio.Event()

        async def client(c: int) -> None:
            for k in range(20):  # bounded: runs until one request started after the swap
                after = swapped.is_set()
                await one_request(session, url, c * 1000 + k, tokens, out)
                if after:
                    return

        start = time.perf_counter()
        tasks = [asyncio.create_task(client(c)) for c in range(clients)]
        await asyncio.sleep(3.0)  # the batch is full and running
        async with session.post(
            f"{url}/admin/load",
            json={"path": str(candidate), "version": "v1"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            info = await resp.json()
            info["status"] = resp.status
        swapped.set()
        await asyncio.gather(*tasks)
        out.wall = time.perf_counter() - start
    return out, info


_RAW_MODELS: dict = {}


def plain_generate(folder: Path, batch: int, tokens: int, rounds: int = 2) -> dict[str, object]:
    """Tokens/s of transformers' own `generate` at batch `batch`, `tokens` sampled new tokens
    (temperature 0.9, top-p 0.95, eos ignored), in each dtype the device supports; best of
    `rounds` after a warm-up, and with transformers' default top-k 50. A dtype that cannot run
    gets its error instead."""
    from model.devices import configure_cpu_threads, resolve_device
    from model.evaluate import release
    from model.loading import load_model_and_tokenizer
    from model.precision import DTYPES, cpu_candidates, dtype_name

    configure_cpu_threads()
    device = resolve_device("auto")
    names = [dtype_name(d) for d in cpu_candidates()] if device.type == "cpu" else list(DTYPES)
    figures: dict[str, object] = {}
    for name in names:
        loaded = None
        try:
            loaded = load_model_and_tokenizer(str(folder), device=device, dtype=DTYPES[name])
            generate_speed(loaded, batch, 2)  # warm-up
            figures[name] = max(generate_speed(loaded, batch, tokens) for _ in range(rounds))
            # transformers' default sampler (top-k 50 before top-p) is cheaper than the
            # server's nucleus over the whole vocabulary: the harder baseline to meet
            figures[f"{name}, top-k 50"] = max(
                generate_speed(loaded, batch, tokens, top_k=50) for _ in range(rounds)
            )
        except Exception as exc:  # report, do not hide
            figures[name] = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
        finally:
            if loaded is not None:
                release(loaded)
    return figures


def generate_speed(loaded, batch: int, tokens: int, top_k: int = 0) -> float:
    """Tokens/s of one `generate` call: `batch` left-padded prompts, exactly `tokens` new
    (`top_k` 0: top-p over the whole vocabulary, as the server samples)."""
    import torch
    from transformers import GenerationConfig

    from model.textformat import prompt_ids

    tok, model = loaded.tokenizer, loaded.model
    rows = [prompt_ids(tok, PROMPTS[i % len(PROMPTS)]) for i in range(batch)]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    config = GenerationConfig(
        do_sample=True, temperature=0.9, top_p=0.95, top_k=top_k, max_new_tokens=tokens,
        min_new_tokens=tokens, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device),
            generation_config=config,
        )  # fmt: skip
    return (out.shape[1] - width) * batch / (time.perf_counter() - start)


def runner_precision(url: str) -> dict:
    """The runner's `/health`: the dtype it serves in and how `DTYPE` chose it."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
        health = json.loads(resp.read())
    return {"dtype": health.get("dtype"), **(health.get("precision") or {})}


def raw_batched_throughput(folder: Path, batch: int, tokens: int, dtype: str = "float32") -> float:
    """Tokens/s of the bare model: batched prefill + decode steps with a KV cache, no server."""
    import torch
    from transformers import DynamicCache

    from model.devices import configure_cpu_threads
    from model.loading import load_model_and_tokenizer
    from model.textformat import prompt_ids

    configure_cpu_threads()
    key = f"{folder}:{dtype}"
    if key not in _RAW_MODELS:
        _RAW_MODELS[key] = load_model_and_tokenizer(
            str(folder), device="auto", dtype=getattr(torch, dtype)
        )
    lm = _RAW_MODELS[key]
    tok, model = lm.tokenizer, lm.model
    rows = [prompt_ids(tok, PROMPTS[i % len(PROMPTS)]) for i in range(batch)]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])

    def run() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            m = mask.to(lm.device)
            pos = (m.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids.to(lm.device), attention_mask=m, position_ids=pos,
                        cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            last = pos[:, -1:]
            for _ in range(tokens - 1):
                m = torch.cat([m, m.new_ones((batch, 1))], dim=1)
                last = last + 1
                out = model(input_ids=nxt, attention_mask=m, position_ids=last, cache=cache,
                            use_cache=True, logits_to_keep=1)  # fmt: skip
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        return batch * tokens / (time.perf_counter() - start)

    run()  # warm-up
    return max(run() for _ in range(2))


def compare_continuous_batching(folder: Path, requests: int, tokens: int) -> list[tuple]:
    """Same workload in-process: this engine vs transformers' generate_batch (sampling)."""
    import logging

    import torch
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from model.devices import configure_cpu_threads
    from model.engine import Engine
    from model.hot_swap import load_candidate
    from model.loading import load_model_and_tokenizer
    from model.sampling_params import SamplingParams
    from model.textformat import prompt_ids

    logging.getLogger("transformers").setLevel(logging.ERROR)
    configure_cpu_threads()
    rows = []
    served = load_candidate(str(folder), "bench", device="auto")
    engine = Engine(max_batch=16, max_queue=requests)
    engine.install(served)
    engine.start()
    params = SamplingParams(max_tokens=tokens, temperature=0.9, top_p=0.95, ignore_eos=True)
    engine.submit("warm-up", params).future.result()
    start = time.perf_counter()
    reqs = [engine.submit(PROMPTS[i % len(PROMPTS)], params) for i in range(requests)]
    done = sum(r.future.result().completion_tokens for r in reqs)
    rows.append(("jokebot engine (max_batch 16)", done / (time.perf_counter() - start), "yes"))
    engine.stop()

    lm = load_model_and_tokenizer(str(folder), device="auto")
    model, tok = lm.model, lm.tokenizer
    inputs = [prompt_ids(tok, PROMPTS[i % len(PROMPTS)]) for i in range(requests)]
    config = GenerationConfig(
        max_new_tokens=tokens, do_sample=True, temperature=0.9, top_p=0.95,
        eos_token_id=-1, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    # tuned for a CPU (the defaults measured ~3x slower here): small pages, synchronous loop
    cb_config = ContinuousBatchingConfig(
        max_batch_tokens=256, num_blocks=64, use_async_batching=False, use_cuda_graph=False
    )
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            model.generate_batch(  # start-up and warm-up
                inputs=inputs[:2], generation_config=config, continuous_batching_config=cb_config
            )
            setup = time.perf_counter() - start
            start = time.perf_counter()
            out = model.generate_batch(
                inputs=inputs, generation_config=config, continuous_batching_config=cb_config,
                warmup=False,
            )  # fmt: skip
            wall = time.perf_counter() - start
        made = sum(len(o.generated_tokens) for o in out.values())
        rows.append((f"transformers generate_batch (start-up {setup:.1f} s)", made / wall, "no"))
    except Exception as exc:  # report, do not hide
        rows.append((f"transformers generate_batch failed: {type(exc).__name__}: {exc}", 0.0, "-"))
    return rows


def pool_scenarios(url: str, folder: Path, candidate: Path, tmp: Path, args) -> tuple:
    """16 clients straight to one replica, through the pool over it, over two replicas, and a
    swap across both under load: (direct, one_pool, two_pool, pool_swap, pool_info)."""
    console.print("16 clients straight to one replica, then through the runner pool...")
    # interleaved twice, best of each: the CPU may be shared with other work
    directs, pools = [], []
    for _ in range(2):
        directs.append(asyncio.run(direct_test(url, 16, 3, args.tokens)))
        pools.append(asyncio.run(pool_test([url], 16, 3, args.tokens))[0])
    direct = max(directs, key=lambda r: r.tps)
    one_pool = max(pools, key=lambda r: r.tps)
    port2 = free_port()
    url2 = f"http://127.0.0.1:{port2}"
    proc2 = start_runner(folder, port2, args.max_batch, tmp / "runner2.log", args.dtype)
    try:
        wait_ready(url2, proc2, tmp / "runner2.log")
        asyncio.run(load_test(url2, 2, 1, 8))  # warm-up
        console.print("16 clients through the pool over two replicas...")
        two_pool = max(
            (asyncio.run(pool_test([url, url2], 16, 3, args.tokens))[0] for _ in range(2)),
            key=lambda r: r.tps,
        )
        console.print("swap across both replicas under 16 clients...")
        pool_swap, pool_info = asyncio.run(
            pool_test([url, url2], 16, 4, args.tokens, swap_to=candidate)
        )
    finally:
        stop_runner(proc2)
    return direct, one_pool, two_pool, pool_swap, pool_info


def pool_rows(pooled: tuple | None) -> list[tuple]:
    """The pool scenarios' rows of the second table (none with --quick)."""
    if pooled is None:
        return []
    direct, one_pool, two_pool, pool_swap, pool_info = pooled
    overhead = 1 - one_pool.tps / direct.tps if direct.tps else float("nan")
    two = 1 - two_pool.tps / one_pool.tps if one_pool.tps else float("nan")
    return [
        ("direct, 1 replica", direct, "aiohttp straight to the runner"),
        ("pool, 1 replica", one_pool, f"routing overhead vs direct: {overhead:.1%}"),
        ("pool, 2 replicas", two_pool, f"overhead vs pool over 1 replica: {two:.1%}"),
        ("pool swap, 2 replicas", pool_swap,
         f"swap {pool_info.get('swap_seconds', float('nan')):.2f} s "
         f"({pool_info.get('status')}), versions seen {sorted(pool_swap.versions)}"),
    ]  # fmt: skip


def dtype_table(plain: dict[str, object], chosen: dict, sixteen: float, args) -> Table:
    """Plain `generate` per dtype, the runner's DTYPE choice with its probe timings, and the
    server at 16 clients against the best plain `generate` in any dtype (#18's target: 85%)."""
    table = Table(title=f"plain transformers generate, batch 16, {args.tokens} sampled tokens, "
                  f"vs the runner (DTYPE={args.dtype})")  # fmt: skip
    for col in ("what", "tokens/s", "note"):
        table.add_column(col, justify="right" if col == "tokens/s" else "left")
    probe = chosen.get("seconds") or {}
    for name, value in plain.items():
        timed = f"runner probe {probe[name]:.3f} s" if name in probe else ""
        timed = "transformers' default sampler" if name.endswith("top-k 50") else timed
        if isinstance(value, float):
            table.add_row(f"generate, {name}", f"{value:.1f}", timed)
        else:
            table.add_row(f"generate, {name}", "-", f"{value} {timed}".strip())
    speeds = [v for v in plain.values() if isinstance(v, float)]
    best = max(speeds, default=float("nan"))
    table.add_row(
        f"runner serves {chosen.get('dtype')}", "-",
        f"{chosen.get('requested')}: {chosen.get('reason')} (chosen in "
        f"{chosen.get('measure_seconds', 0):.1f} s)",
    )  # fmt: skip
    table.add_row(
        "server, 16 clients", f"{sixteen:.1f}", f"{sixteen / best:.0%} of the best plain generate"
    )
    return table


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"runner exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"runner not ready after {timeout} s:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="where the embedded model is converted (default: temp)")
    parser.add_argument("--model", help="an already converted model folder (skips conversion)")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--compare-cb", action="store_true", help="also compare with HF CB")
    parser.add_argument("--dtype", default="auto", help="the runner's DTYPE (default auto)")
    parser.add_argument(
        "--quick", action="store_true",
        help="a check that it works: one round per scenario, no pool or second replica",
    )  # fmt: skip
    args = parser.parse_args()
    scale = 0 if args.quick else 1  # --quick: one request per client (or a few sequential)

    tmp = Path(tempfile.mkdtemp(prefix="jokebot-bench-"))
    try:
        if args.model:
            folder = Path(args.model)
        else:
            from model.embedded import ensure_embedded_model

            data_dir = Path(args.data_dir or os.environ.get("JOKEBOT_DATA_DIR") or tmp / "data")
            console.print(f"embedded model in {data_dir} (converted once, ~30 s)")
            folder = ensure_embedded_model(data_dir)
        candidate = tmp / "candidate-v1"  # a second version to swap to (links to the same files)
        candidate.mkdir()
        for f in folder.iterdir():
            (candidate / f.name).symlink_to(f.resolve())

        raws: list[float] = []
        load_before = os.getloadavg()[0]
        console.print("plain transformers generate, batch 16, in each dtype (no server)...")
        plain = plain_generate(folder, 16, args.tokens, rounds=1 if args.quick else 2)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp / "runner.log"
        proc = start_runner(folder, port, args.max_batch, log, args.dtype)
        try:
            wait_ready(url, proc, log)
            chosen = runner_precision(url)
            served = chosen.get("dtype") or "float32"
            asyncio.run(load_test(url, 2, 1, 8))  # warm-up
            results = []
            for label, clients, per_client in (
                ("sequential", 1, 2 + 6 * scale), ("4 clients", 4, 1 + 3 * scale),
                ("16 clients", 16, 1 + 2 * scale), ("32 clients", 32, 1 + scale),
            ):  # fmt: skip
                if clients == 16:  # the raw baseline right before and after (the CPU may be shared)
                    console.print(
                        "raw batched forward (batch 16, no server; the runner is idle)..."
                    )
                    raws.append(raw_batched_throughput(folder, 16, args.tokens, served))
                console.print(f"{label}...")
                results.append(
                    (label, clients, asyncio.run(load_test(url, clients, per_client, args.tokens)))
                )
                if clients == 16:
                    raws.append(raw_batched_throughput(folder, 16, args.tokens, served))
            console.print("swap under 16 clients...")
            swap, info = asyncio.run(swap_test(url, 16, args.tokens, candidate))
            # the second table: streaming, then the bot's pool over one and two replicas
            asyncio.run(swap_test_reset(url, folder))
            console.print("streaming...")
            streams = [
                (
                    "stream, sequential",
                    asyncio.run(stream_test(url, 1, 2 + 4 * scale, args.tokens)),
                ),
                ("stream, 16 clients", asyncio.run(stream_test(url, 16, 1 + scale, args.tokens))),
            ]
            pooled = None if args.quick else pool_scenarios(url, folder, candidate, tmp, args)
        finally:
            stop_runner(proc)

        raw = sum(raws) / len(raws)
        load_after = os.getloadavg()[0]
        seq = results[0][2].tps
        sixteen = results[2][2].tps
        table = Table(title=f"jokebot runner, SmolLM2-135M, {args.tokens}-token completions, "
                      f"max_batch {args.max_batch}, {os.cpu_count()} CPU cores")  # fmt: skip
        for col in ("scenario", "requests", "errors", "tokens/s", "x sequential", "p50 s",
                    "p95 s", "worst s", "note"):  # fmt: skip
            table.add_column(col, justify="left" if col in ("scenario", "note") else "right")
        for label, _clients, r in results:
            table.add_row(
                label, str(len(r.latencies) + r.errors), str(r.errors), f"{r.tps:.1f}",
                f"{r.tps / seq:.1f}x", f"{r.p(0.5):.2f}", f"{r.p(0.95):.2f}",
                f"{max(r.latencies, default=float('nan')):.2f}", "",
            )  # fmt: skip
        swap_note = (
            f"swap {info.get('swap_seconds', float('nan')):.2f} s (HTTP {info['status']}), "
            f"versions seen {sorted(swap.versions)}"
        )
        table.add_row(
            "swap under 16 clients", str(len(swap.latencies) + swap.errors), str(swap.errors),
            f"{swap.tps:.1f}", f"{swap.tps / seq:.1f}x", f"{swap.p(0.5):.2f}",
            f"{swap.p(0.95):.2f}", f"{max(swap.latencies, default=float('nan')):.2f}", swap_note,
        )  # fmt: skip
        table.add_row(
            "hardware: raw batch 16", "-", "-", f"{raw:.1f}", f"{raw / seq:.1f}x", "-", "-", "-",
            f"server 16 clients / raw = {sixteen / raw:.0%} (raw before/after: "
            f"{raws[0]:.0f}/{raws[1]:.0f})",
        )  # fmt: skip
        console.print(table)
        console.print(dtype_table(plain, chosen, sixteen, args))
        console.print(f"load average (1 min) before {load_before:.1f}, after {load_after:.1f}")
        if any(r.errors for _, _, r in results) or swap.errors:
            console.print(f"error codes: {[r.codes for _, _, r in results]} swap {swap.codes}")

        more = Table(title="streaming and the bot's runner pool (16 clients, same host)")
        for col in ("scenario", "requests", "errors", "tokens/s", "p50 s", "p95 s", "note"):
            more.add_column(col, justify="left" if col in ("scenario", "note") else "right")
        for label, r in streams:
            more.add_row(
                label, str(len(r.latencies) + r.errors), str(r.errors), f"{r.tps:.1f}",
                f"{r.p(0.5):.2f}", f"{r.p(0.95):.2f}", "p50/p95 = time to first token",
            )  # fmt: skip
        for label, r, note in pool_rows(pooled):
            more.add_row(
                label, str(len(r.latencies) + r.errors), str(r.errors), f"{r.tps:.1f}",
                f"{r.p(0.5):.2f}", f"{r.p(0.95):.2f}", note,
            )  # fmt: skip
        console.print(more)

        if args.compare_cb:
            console.print("in-process comparison with transformers continuous batching...")
            cb = Table(title=f"32 requests x {args.tokens} tokens, sampling, in-process")
            for col in ("engine", "tokens/s", "per-request seed"):
                cb.add_column(col)
            for name, tps, seeded in compare_continuous_batching(folder, 32, args.tokens):
                cb.add_row(name, f"{tps:.1f}", seeded)
            console.print(cb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
