"""DTYPE and TRAIN_PRECISION (#18): the decision, the runner's choice and its reports, swaps that
keep it, an AVX2-only CPU, training in bf16 autocast, and bf16 quality against float32."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from bot.cli import build_parser
from bot.discord_app.status_text import precision_line
from bot.settings import SettingsError, load_settings
from loopback_discord import ADMINISTRATOR, DEFAULT_MEMBER_PERMISSIONS
from model import precision as precision_module
from model.contracts.corpus import read_snapshot
from model.data import split_jokes
from model.evaluate import copy_rate, one_joke_rate, sample_jokes, validation_nll
from model.event_writer import EventWriter
from model.loading import load_model_and_tokenizer
from model.precision import (
    DTYPE_CHOICES,
    ONLY_FLOAT32,
    ServingPrecision,
    best_times,
    choose_fastest,
    cpu_candidates,
    dtype_name,
    gate_precision,
    measure_training_precision,
)
from model.runner import STATE
from model.train import JobError, TrainJob, run_job
from tests.helpers import free_port, job_dict
from tests.runner_helpers import runner_client, runner_process

SERVED = set(DTYPE_CHOICES) - {"auto"}
needs_bf16 = pytest.mark.skipif(
    torch.bfloat16 not in cpu_candidates(), reason="no bf16 kernels (ATEN_CPU_CAPABILITY=avx2?)"
)
times_dtypes = pytest.mark.skipif(
    len(cpu_candidates()) < 2, reason="only float32 to serve here: nothing is timed"
)
ADMIN = DEFAULT_MEMBER_PERMISSIONS | ADMINISTRATOR


# ----------------------------------------------------------------------------- the decision
@pytest.mark.parametrize(
    ("seconds", "chosen"),
    [
        ({"float32": 1.17, "bfloat16": 0.39, "float16": 0.69}, "bfloat16"),  # AMX-BF16 (#18)
        ({"float32": 0.98, "bfloat16": 1.61}, "float32"),  # AVX2 only: bf16 is slower
        ({"float32": 0.98}, "float32"),  # AVX2 only: bf16 kernels refused (failed, absent)
        ({"float32": 1.00, "bfloat16": 0.95}, "float32"),  # 5% is not worth the precision
        ({"float32": 1.00, "bfloat16": 0.80, "float16": 0.50}, "float16"),
        ({"float32": 0.004, "bfloat16": 0.001}, "float32"),  # a tiny model: noise
        ({"bfloat16": 0.5}, "bfloat16"),  # float32 itself failed: the fastest that ran
        ({}, "float32"),
    ],
)
def test_the_decision_keeps_float32_unless_another_is_measurably_faster(seconds, chosen):
    choice, reason = choose_fastest(seconds, baseline="float32", min_seconds=0.1)
    assert choice == chosen and reason


def test_the_training_decision_uses_autocast_only_where_it_measured_faster():
    assert choose_fastest({"fp32": 2.09, "bf16": 1.68}, baseline="fp32")[0] == "bf16"  # #18
    assert choose_fastest({"fp32": 2.09, "bf16": 2.6}, baseline="fp32")[0] == "fp32"  # AVX2


def test_timing_rounds_drop_failures_and_keep_each_best():
    calls = {"fast": 0, "slow": 0, "broken": 0}

    def run(name: str, seconds: float):
        def go() -> None:
            calls[name] += 1
            if name == "broken":
                raise RuntimeError("pack_vnni2 is only supported when avx512 is supported")
            time.sleep(seconds)

        return go

    runs = {"slow": run("slow", 0.1), "fast": run("fast", 0.005), "broken": run("broken", 0)}
    seconds, failed = best_times(runs, rounds=3)
    assert set(seconds) == {"slow", "fast"} and failed == {
        "broken": "RuntimeError: pack_vnni2 is only supported when avx512 is supported"
    }
    assert calls["broken"] == 1  # out after its failure
    assert 2 <= calls["slow"] <= 4 and 2 <= calls["fast"] <= 4  # warm-up + timed rounds
    assert seconds["slow"] >= 0.1 and seconds["fast"] < seconds["slow"]
    assert choose_fastest(seconds, baseline="slow")[0] == "fast"


def test_settings_and_cli_options(monkeypatch):
    monkeypatch.delenv("DTYPE", raising=False)
    monkeypatch.delenv("TRAIN_PRECISION", raising=False)
    assert load_settings().dtype == "auto" and load_settings().train_precision == "auto"
    assert load_settings(dtype="bfloat16", train_precision="fp32").dtype == "bfloat16"
    with pytest.raises(SettingsError, match=r"^DTYPE: "):
        load_settings(dtype="bf16")
    with pytest.raises(SettingsError, match=r"^TRAIN_PRECISION: "):
        load_settings(train_precision="float32")
    assert build_parser().parse_args(["runner", "--dtype", "float16"]).dtype == "float16"
    assert build_parser().parse_args(["runner"]).dtype is None  # then DTYPE decides


def test_unknown_dtype_names_are_refused():
    with pytest.raises(ValueError, match="DTYPE must be one of"):
        ServingPrecision("bf16")
    with pytest.raises(JobError, match="precision"):
        TrainJob.from_dict({"snapshot": "s", "base": "b", "output": "o", "precision": "fp8"})


# ----------------------------------------------------------------------------- serving
@times_dtypes
def test_auto_times_the_loaded_model_and_a_later_load_keeps_the_choice(tiny_model, monkeypatch):
    precision = ServingPrecision("auto")
    loaded = load_model_and_tokenizer(tiny_model, "cpu", precision=precision)
    choice = precision.choice
    assert choice.dtype in SERVED and choice.requested == "auto" and choice.reason
    assert loaded.model.dtype == precision.dtype
    names = [dtype_name(d) for d in cpu_candidates()]
    assert set(choice.seconds) | set(choice.failed) == set(names)  # every candidate accounted
    assert choice.seconds["float32"] > 0 and choice.measure_seconds > 0
    assert "float32" in choice.describe() and precision.health_fields()["dtype"] == choice.dtype

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("a later load must not measure again")

    monkeypatch.setattr(precision_module, "measure_serving_dtype", no_second_measurement)
    again = load_model_and_tokenizer(tiny_model, "cpu", precision=precision)
    assert again.model.dtype == loaded.model.dtype and precision.choice is choice


def test_without_avx512_auto_serves_and_trains_in_float32_untimed(tiny_model, monkeypatch):
    def no_timing(*args, **kwargs):
        raise AssertionError("with float32 the only candidate nothing is timed")

    monkeypatch.setattr(precision_module, "wide_vectors", lambda: False)  # an AVX2-only CPU
    monkeypatch.setattr(precision_module, "best_times", no_timing)
    precision = ServingPrecision("auto")
    loaded = load_model_and_tokenizer(tiny_model, "cpu", precision=precision)
    assert loaded.model.dtype == torch.float32
    assert precision.choice.reason == ONLY_FLOAT32 and precision.choice.seconds == {}
    examples = [[50256, 100, 200, 50256]] * 4
    choice = measure_training_precision("auto", torch.device("cpu"), loaded.model, examples, 0)
    assert choice.dtype == "fp32" and choice.reason == ONLY_FLOAT32
    with pytest.raises(ValueError, match="DTYPE=bfloat16, but this CPU has no bfloat16 kernels"):
        load_model_and_tokenizer(tiny_model, "cpu", precision=ServingPrecision("bfloat16"))
    with pytest.raises(ValueError, match="TRAIN_PRECISION=bf16, but this cpu device has no bf16"):
        measure_training_precision("bf16", torch.device("cpu"), loaded.model, examples, 0)
    # the runner (another machine) serves bf16: this CPU's gate chooses for itself instead
    assert gate_precision("bfloat16", torch.device("cpu")).requested == "auto"
    assert gate_precision("float32", torch.device("cpu")).requested == "float32"


@needs_bf16
def test_an_explicit_dtype_is_used_without_timing(tiny_model, monkeypatch):
    def no_timing(*args, **kwargs):
        raise AssertionError("an explicit DTYPE is not timed")

    monkeypatch.setattr(precision_module, "best_times", no_timing)
    precision = ServingPrecision("bfloat16")
    loaded = load_model_and_tokenizer(tiny_model, "cpu", precision=precision)
    assert loaded.model.dtype == torch.bfloat16
    assert precision.choice.as_dict() == {
        "dtype": "bfloat16", "requested": "bfloat16", "reason": "set by DTYPE", "device": "cpu",
        "probe": "", "seconds": {}, "failed": {}, "measure_seconds": 0.0,
    }  # fmt: skip


@needs_bf16
async def test_runner_reports_its_dtype_and_a_swap_keeps_it(tiny_a, tiny_b, monkeypatch):
    headers = {"Authorization": "Bearer t"}
    async with runner_client(tiny_a, dtype="bfloat16", admin_token="t") as client:
        health = await (await client.get("/health")).json()
        assert health["dtype"] == "bfloat16" and health["precision"]["requested"] == "bfloat16"
        metrics = await (await client.get("/metrics")).text()
        assert 'jokebot_runner_dtype_info{device="cpu",dtype="bfloat16"' in metrics
        answer = await client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})
        assert answer.status == 200  # it really serves in bf16
        swapped = await client.post("/admin/load", json={"path": str(tiny_b)}, headers=headers)
        assert swapped.status == 200, await swapped.text()
        health = await (await client.get("/health")).json()
        assert health["version"] == "tiny-gpt2-b" and health["dtype"] == "bfloat16"
        served = client.server.app[STATE].engine.current
        assert served.loaded.model.dtype == torch.bfloat16

    async with runner_client(tiny_a, admin_token="t") as client:  # DTYPE=auto
        state = client.server.app[STATE]
        choice = state.swap.precision.choice
        health = await (await client.get("/health")).json()
        assert health["dtype"] == choice.dtype in SERVED
        assert health["precision"]["requested"] == "auto"
        assert health["precision"]["seconds"]["float32"] > 0  # this test needs bf16: timed
        metrics = await (await client.get("/metrics")).text()
        assert 'jokebot_runner_dtype_probe_seconds{dtype="float32"}' in metrics
        assert f'dtype="{choice.dtype}",reason=' in metrics

        def no_second_measurement(*args, **kwargs):
            raise AssertionError("a swap must keep the choice, not measure again")

        monkeypatch.setattr(precision_module, "measure_serving_dtype", no_second_measurement)
        swapped = await client.post("/admin/load", json={"path": str(tiny_b)}, headers=headers)
        assert swapped.status == 200, await swapped.text()
        assert state.swap.precision.choice is choice
        assert state.engine.current.loaded.model.dtype == getattr(torch, choice.dtype)


def test_an_avx2_only_runner_process_makes_and_reports_a_valid_choice(tiny_model):
    """ATEN_CPU_CAPABILITY=avx2 simulates a CPU without bf16 units (SDPA refuses bf16 there):
    the runner serves float32, as before #18, and says why."""
    port = free_port()
    env = {"ATEN_CPU_CAPABILITY": "avx2", "DTYPE": "auto"}
    with runner_process(tiny_model, port=port, token="t", **env):
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
            health = json.loads(resp.read())
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        body = json.dumps({"prompt": "Hello", "max_tokens": 4}).encode()
        request = urllib.request.Request(
            f"{url}/v1/completions", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 200
    precision = health["precision"]
    assert health["dtype"] == "float32" and precision["requested"] == "auto"
    assert precision["reason"]  # on x86: ONLY_FLOAT32; elsewhere the tiny model is too small
    assert 'dtype="float32"' in metrics


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def bf16_version(tmp_path_factory, tiny_model) -> tuple[dict, Path]:
    """A version trained in bf16 autocast and gated in bfloat16 (done event, folder)."""
    folder = tmp_path_factory.mktemp("bf16-job")
    job = job_dict(folder, tiny_model, precision="bf16", eval_dtype="bfloat16")
    return run_job(TrainJob.from_dict(job), EventWriter()), folder


@needs_bf16
def test_bf16_training_and_a_gate_in_one_dtype(bf16_version):
    done, folder = bf16_version
    manifest = json.loads((folder / "models" / "v1" / "manifest.json").read_text("utf-8"))
    training = manifest["training"]
    assert training["precision"] == "bf16" and training["steps"] > 0
    assert training["precision_choice"]["requested"] == "bf16"
    assert manifest["hyperparameters"]["precision"] == "bf16"
    candidate, serving = done["metrics"]["candidate"], done["metrics"]["serving"]
    assert candidate["dtype"] == serving["dtype"] == "bfloat16"  # sampled like with like
    assert candidate["nll_dtype"] == serving["nll_dtype"] == "float32"  # NLL as before #18
    assert candidate["nll"] < 0.5 * serving["nll"]  # it learnt in bf16 autocast


@needs_bf16
def test_auto_training_precision_times_a_real_batch(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    examples = [[50256, 100 + i, 200 + i, 300, 50256] for i in range(12)]
    choice = measure_training_precision("auto", torch.device("cpu"), model, examples, 50256)
    assert choice.dtype in ("fp32", "bf16") and choice.requested == "auto" and choice.reason
    assert choice.seconds["fp32"] > 0 and "8x5 training tokens" in choice.probe
    assert all(p.grad is None for p in model.parameters())  # the probe leaves no gradients
    fixed = measure_training_precision("fp32", torch.device("cpu"), model, examples, 50256)
    assert fixed.dtype == "fp32" and fixed.seconds == {}


# ----------------------------------------------------------------------------- quality
SAMPLES = 48


@needs_bf16
def test_bf16_serves_the_same_quality_as_float32(bf16_version):
    """Held-out NLL within 1%; one-joke and copy rates within their sampling noise (top-p off:
    transformers sorts the whole vocabulary per row and step for it, seconds on 2 cores)."""
    _, folder = bf16_version
    jokes = read_snapshot(folder / "snapshot.jsonl")
    train, held_out = split_jokes(jokes, 0.1)
    keys = {j.key for j in train}
    figures = {}
    for dtype in (torch.float32, torch.bfloat16):
        loaded = load_model_and_tokenizer(folder / "models" / "v1", "cpu", dtype=dtype)
        nll, _ = validation_nll(loaded.model, loaded.tokenizer, [j.text for j in held_out])
        samples = sample_jokes(loaded, SAMPLES, max_new_tokens=24, seed=3, top_p=1.0)
        figures[dtype] = (nll, one_joke_rate(samples), copy_rate(samples, keys))
    (nll32, one32, copy32), (nll16, one16, copy16) = figures[torch.float32], figures[torch.bfloat16]
    assert abs(nll16 - nll32) <= 0.01 * nll32, figures
    for a, b in ((one32, one16), (copy32, copy16)):
        p = (a + b) / 2
        noise = 3 * math.sqrt(max(p * (1 - p), 0.02) * 2 / SAMPLES)  # 3 sigma of a difference
        assert abs(a - b) <= noise, figures
    assert one32 > 0.2  # the rates compare something: the version does write jokes


# ----------------------------------------------------------------------------- /status
def test_status_line_for_admins():
    health = {
        "dtype": "bfloat16",
        "precision": {
            "requested": "auto", "reason": "bfloat16 measured 3.00x faster than float32",
            "probe": "prefill 16x64 tokens + 4 decode steps", "seconds": {"float32": 1.17,
            "bfloat16": 0.39}, "failed": {"float16": "RuntimeError: no"},
        },
    }  # fmt: skip
    line = precision_line(health)
    assert line.startswith("Runner dtype: bfloat16 (DTYPE=auto: bfloat16 measured 3.00x")
    assert "float32 1.170 s, bfloat16 0.390 s" in line and "could not run: float16" in line
    assert precision_line({"dtype": None}) is None and precision_line(None) is None


async def test_admins_see_the_runner_dtype_in_status(app):
    admin = await (await app.standin.invoke("status", permissions=ADMIN)).wait_for_reply()
    (line,) = [x for x in admin.content.splitlines() if x.startswith("Runner dtype: ")]
    assert "(DTYPE=auto" in line and "float32" in line, line
    member = await (await app.standin.invoke("status")).wait_for_reply()
    assert "Runner dtype" not in member.content


async def test_the_gate_measures_in_the_dtype_the_runner_serves_in(app, monkeypatch):
    health = await app.services.runner.health()
    assert await app.services.training._gate_dtype() == health["dtype"] == "float32"  # tiny
    monkeypatch.setattr(app.services.training.settings, "dtype", "bfloat16")  # DTYPE set
    assert await app.services.training._gate_dtype() == "bfloat16"
