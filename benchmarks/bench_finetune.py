"""Fine-tuning benchmark: the 2019 tutorial's recipe against jokebot's, at equal training tokens.

    python benchmarks/bench_finetune.py [--csv PATH] [--tokens 24000] [--samples 48]
    python benchmarks/bench_finetune.py --precisions [--steps 8]

Both recipes start from the same base model (default: the embedded SmolLM2-135M, converted
into --data-dir once) and see the same training jokes; both are measured on the same held-out
jokes (the stable hash split of model.data) with the gate's own measurements (model.evaluate):

- tutorial (2019): training jokes joined by newlines, cut into fixed 512-token blocks with no
  end-of-text token, batch 2, AdamW at 5e-5 with linear decay (the run_lm_finetuning defaults
  of the time), for --tokens training tokens.
- jokebot: one example per joke (start token, joke, eos), batches of similar length padded to
  their longest, no loss on padding, the defaults of model.train.TrainJob, with the number of
  epochs (and so the learning-rate schedule) planned for --tokens tokens, and training
  stopped once it has seen them (padding not counted).

Printed per recipe: validation NLL per token of complete jokes (joke + eos), one-joke rate and
verbatim-copy rate of unprompted samples, training tokens/s and wall time; for jokebot also the
time until its first evaluation whose validation loss beats the base model's by --margin.

`--precisions` prints instead, for each training precision this device can run (fp32, bf16
autocast), optimizer steps/s of jokebot's Trainer (job defaults, AdamW) after a warm-up step,
and what `TRAIN_PRECISION=auto` chooses here with the timings it chose on; then the base
model's gate measurements (held-out NLL, as served few-shot, one-joke and copy rates) in each
dtype it can be served in, against float32 (#18: bf16 must stay within 1% of the NLL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_data_dir_argument  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"
TUTORIAL_BLOCK = 512
TUTORIAL_BATCH = 2
TUTORIAL_LR = 5e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="jokes CSV (column Joke)")
    add_data_dir_argument(parser)
    parser.add_argument("--base", help="base model folder or hub id (default: embedded)")
    parser.add_argument("--tokens", type=int, default=24000, help="training tokens per recipe")
    parser.add_argument("--samples", type=int, default=48, help="unprompted samples per model")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--margin", type=float, default=0.10, help="promotable: NLL this much lower"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--recipes", default="tutorial,jokebot", help="which recipes to run")
    parser.add_argument(
        "--eval-steps", type=int, default=20, help="jokebot: steps between evaluations"
    )
    parser.add_argument("--learning-rate", type=float, help="jokebot: override the default")
    parser.add_argument("--batch-size", type=int, help="jokebot: override the default")
    parser.add_argument(
        "--precisions", action="store_true", help="only: steps/s per training precision"
    )
    parser.add_argument("--steps", type=int, default=8, help="--precisions: timed steps each")
    return parser.parse_args(argv)


def read_csv_jokes(path: Path):
    """Jokes as `jokebot import` stores them: validated, cleaned, one per duplicate key."""
    import csv

    from model.contracts.corpus import CorpusJoke
    from model.contracts.jokes import check_joke

    jokes, seen = [], set()
    with path.open(encoding="utf-8", newline="") as rows:
        for number, row in enumerate(csv.DictReader(rows), 1):
            check = check_joke(row.get("Joke") or row.get("joke") or "")
            if check.ok and check.key not in seen:
                seen.add(check.key)
                jokes.append(CorpusJoke(id=number, text=check.text, key=check.key))
    return jokes


def make_token_cap(tokens: int):
    """A callback that ends training (evaluated and saved) once `tokens` real tokens were seen."""
    from transformers import TrainerCallback

    class TokenCap(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.num_input_tokens_seen >= tokens and not control.should_training_stop:
                control.should_training_stop = True
                control.should_evaluate = control.should_save = True
            return control

    return TokenCap()


def make_timeline():
    """A callback recording (seconds since training began, step, eval_loss) at each evaluation."""
    from transformers import TrainerCallback

    class Timeline(TrainerCallback):
        """Times exclude the evaluations themselves (their `eval_runtime`)."""

        def __init__(self):
            self.began = time.monotonic()
            self.eval_seconds = 0.0
            self.points: list[tuple[float, int, float]] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.began = time.monotonic()
            self.eval_seconds = 0.0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            metrics = metrics or {}
            if state.global_step == 0 or "eval_loss" not in metrics:
                return  # the base model's evaluation before training
            self.eval_seconds += float(metrics.get("eval_runtime", 0.0))
            elapsed = time.monotonic() - self.began - self.eval_seconds
            self.points.append((elapsed, state.global_step, float(metrics["eval_loss"])))

    return Timeline()


def train_recipe(name, job, model, tokenizer, train_set, eval_set, device, max_steps, cap):
    """Train with build_trainer (checkpoints in a temporary folder); return measurements."""
    from model.train import build_trainer

    timeline = make_timeline()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
        trainer, _ = build_trainer(
            job,
            model=model,
            tokenizer=tokenizer,
            train_set=train_set,
            eval_set=eval_set,
            output_dir=Path(folder),
            device=device,
            callbacks=[timeline, make_token_cap(cap)],
            max_steps=max_steps,
        )
        base_eval = trainer.evaluate()["eval_loss"] if name == "jokebot" else None
        began = time.monotonic()
        trainer.train()
        wall = time.monotonic() - began
        seconds = wall - timeline.eval_seconds  # training alone
        steps = trainer.state.global_step
        tokens = trainer.state.num_input_tokens_seen  # padding not counted
        model = trainer.model
        del trainer
    return model, {
        "train_tokens": tokens,
        "train_wall_seconds": wall,
        "train_seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "steps": steps,
        "timeline": timeline.points,
        "base_eval_loss": base_eval,
    }


def tutorial_blocks(tokenizer, texts: list[str], block: int) -> list[list[int]]:
    """The 2019 layout: all jokes joined by newlines, cut into 512-token blocks, no eos."""
    ids = tokenizer("\n".join(texts), add_special_tokens=False).input_ids
    return [ids[i : i + block] for i in range(0, len(ids) - block + 1, block)]


def make_step_timer():
    """A callback recording the wall time of every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.began = 0.0
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.began)

    return StepTimer()


def precision_table(options, base: str, tokenizer, train_set, eval_set, device) -> None:
    """Steps/s of the Trainer per precision, and TRAIN_PRECISION=auto's choice."""
    from transformers import set_seed

    from model.precision import bf16_trainable, measure_training_precision
    from model.train import TrainJob, build_trainer, load_training_model

    job = TrainJob(snapshot="-", base=base, output="-", seed=options.seed, max_minutes=10**6)
    job.eval_steps = 10**9  # no evaluation: steps only
    job.batch_size = options.batch_size or job.batch_size
    precisions = ["fp32", "bf16"] if bf16_trainable(device) else ["fp32"]
    rows = []
    for precision in precisions:
        set_seed(options.seed)
        timer = make_step_timer()
        with tempfile.TemporaryDirectory(prefix=f"bench-{precision}-") as folder:
            trainer, _ = build_trainer(
                job, model=load_training_model(job), tokenizer=tokenizer, train_set=train_set,
                eval_set=eval_set, output_dir=Path(folder), device=device, callbacks=[timer],
                max_steps=options.steps + 1, precision=precision,
            )  # fmt: skip
            try:
                trainer.train()
            except Exception as exc:  # report, do not hide
                rows.append((precision, f"failed: {type(exc).__name__}: {str(exc)[:80]}"))
                continue
            finally:
                del trainer
        timed = timer.seconds[1:]  # the first step pays one-off costs
        rows.append((precision, len(timed) / sum(timed), min(timed)))
    set_seed(options.seed)
    model = load_training_model(job)
    choice = measure_training_precision(
        "auto", device, model, train_set.examples, tokenizer.pad_token_id, seed=options.seed
    )
    print()
    print(f"{'precision':<10} {'steps/s':>8} {'best step':>10}   (batch {job.batch_size}, AdamW)")
    for row in rows:
        if len(row) == 2:
            print(f"{row[0]:<10} {row[1]}")
        else:
            print(f"{row[0]:<10} {row[1]:>8.3f} {row[2]:>9.2f}s")
    print(f"TRAIN_PRECISION=auto chooses {choice.dtype}: {choice.describe()}")


def dtype_quality(options, base: str, validation_texts, train_texts, train_keys, device) -> None:
    """The gate's measurements of the base model served in each dtype, against float32."""
    from model.evaluate import measure, release
    from model.loading import load_model_and_tokenizer
    from model.precision import DTYPES, cpu_candidates, dtype_name

    names = [dtype_name(d) for d in cpu_candidates()] if device.type == "cpu" else list(DTYPES)
    rows = {}
    for name in names:
        loaded = load_model_and_tokenizer(base, device=device, dtype=DTYPES[name])
        try:
            rows[name] = measure(
                loaded, validation_texts, train_keys, samples=options.samples,
                max_new_tokens=options.max_new_tokens, seed=options.seed, layout="few-shot",
                examples_pool=train_texts,
            ).metrics  # fmt: skip
        except Exception as exc:  # report, do not hide
            rows[name] = {"error": f"{type(exc).__name__}: {str(exc)[:80]}"}
        finally:
            release(loaded)
    base_nll = rows["float32"].get("nll", float("nan"))
    print()
    print(
        f"{'dtype':<10} {'val NLL':>8} {'vs fp32':>8} {'served':>8} {'one-joke':>9} "
        f"{'copies':>7} {'seconds':>8}   (base model, few-shot as v0 serves)"
    )
    for name, m in rows.items():
        if "error" in m:
            print(f"{name:<10} failed: {m['error']}")
            continue
        print(
            f"{name:<10} {m['nll']:>8.4f} {(m['nll'] - base_nll) / base_nll:>+8.2%} "
            f"{m.get('nll_served', float('nan')):>8.4f} {m['one_joke_rate']:>9.0%} "
            f"{m['copy_rate']:>7.0%} {m['nll_seconds'] + m['sample_seconds']:>8.1f}"
        )
    print(f"one-joke / copies: {options.samples} samples each; their noise is about +-"
          f"{0.5 / max(1, options.samples) ** 0.5:.0%} (one sigma at 50%)")  # fmt: skip


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class LoadSampler:
    """Samples the 1-minute load average every few seconds: were the cores shared?"""

    def __init__(self, every: float = 5.0):
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> str:
        self._stop.set()
        if not self.samples:
            return "-"
        return f"mean {sum(self.samples) / len(self.samples):.1f}, max {max(self.samples):.1f}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as model.train does, before torch
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    options = parse_args(argv)
    sys.path.insert(0, str(ROOT))

    import torch
    import transformers
    from transformers import set_seed

    from model.data import JokeDataset, encode_jokes, split_jokes
    from model.devices import configure_cpu_threads, resolve_device
    from model.embedded import ensure_embedded_model
    from model.evaluate import measure, release, show_sample
    from model.loading import LoadedModel, load_model_and_tokenizer, load_tokenizer
    from model.train import TrainJob, load_training_model

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    started = time.monotonic()
    load = LoadSampler()
    device = resolve_device("auto")
    cores = configure_cpu_threads() if device.type == "cpu" else None
    base = options.base or str(ensure_embedded_model(options.data_dir))
    recipes = [r.strip() for r in options.recipes.split(",") if r.strip()]

    jokes = read_csv_jokes(options.csv)
    train, validation = split_jokes(jokes, 0.1)
    train_texts = [j.text for j in train]
    validation_texts = [j.text for j in validation]
    train_keys = {j.key for j in train}
    tokenizer = load_tokenizer(base)
    ours_train = JokeDataset(encode_jokes(tokenizer, train_texts))
    eval_set = JokeDataset(sorted(encode_jokes(tokenizer, validation_texts), key=len))
    print(
        f"{len(jokes)} jokes from {options.csv.name}: {len(train)} training "
        f"({ours_train.tokens} tokens as examples), {len(validation)} held out; base {base}; "
        f"{device.type}, {cores or '-'} threads; {options.tokens} training tokens per recipe",
        flush=True,
    )
    if options.precisions:
        precision_table(options, base, tokenizer, ours_train, eval_set, device)
        dtype_quality(options, base, validation_texts, train_texts, train_keys, device)
        print(f"load average (1 min) {load.summary()} on {os.cpu_count()} cores")
        return 0

    def evaluate(loaded):
        return measure(
            loaded,
            validation_texts,
            train_keys,
            samples=options.samples,
            max_new_tokens=options.max_new_tokens,
            seed=options.seed,
        )

    def finish(name, model, info):
        model.eval()
        model.config.use_cache = True
        results[name] = {**info, "eval": evaluate(LoadedModel(model, tokenizer, device, name))}
        print(f"{name} done ({fmt_seconds(time.monotonic() - started)})", flush=True)

    results: dict[str, dict] = {}
    loaded = load_model_and_tokenizer(base, device=device)
    results["base model"] = {"eval": evaluate(loaded)}
    release(loaded)
    print(f"base model measured ({fmt_seconds(time.monotonic() - started)})", flush=True)

    if "tutorial" in recipes:  # (a) the 2019 recipe
        set_seed(options.seed)
        config = transformers.AutoConfig.from_pretrained(base)
        positions = getattr(config, "max_position_embeddings", None) or config.n_positions
        block = min(TUTORIAL_BLOCK, positions)  # a tiny test model may hold fewer positions
        job = TrainJob(
            snapshot="-",
            base=base,
            output="-",
            learning_rate=TUTORIAL_LR,
            lr_scheduler="linear",
            warmup_ratio=0.0,
            batch_size=TUTORIAL_BATCH,
            eval_steps=10**9,  # no evaluation while training (the tutorial had none)
            seed=options.seed,
        )
        steps = max(1, options.tokens // (block * TUTORIAL_BATCH))
        model = load_training_model(job)
        blocks = JokeDataset(tutorial_blocks(tokenizer, train_texts, block))
        model, info = train_recipe(
            "tutorial", job, model, tokenizer, blocks, eval_set, device, steps, options.tokens
        )
        finish("tutorial 2019", model, info)
        del model

    base_eval_loss = None
    if "jokebot" in recipes:  # (b) ours: the production defaults, planned for the same tokens
        set_seed(options.seed)
        job = TrainJob(snapshot="-", base=base, output="-", seed=options.seed, max_minutes=10**6)
        job.epochs = options.tokens / ours_train.tokens
        job.eval_steps = options.eval_steps
        job.learning_rate = options.learning_rate or job.learning_rate
        job.batch_size = options.batch_size or job.batch_size
        model = load_training_model(job)
        model, info = train_recipe(
            "jokebot", job, model, tokenizer, ours_train, eval_set, device, -1, options.tokens
        )
        base_eval_loss = info["base_eval_loss"]
        threshold = base_eval_loss * (1 - options.margin)
        info["first_promotable"] = next(
            ((t, s) for t, s, loss in info["timeline"] if loss <= threshold), None
        )
        info["settings"] = {"learning_rate": job.learning_rate, "batch_size": job.batch_size}
        finish("jokebot", model, info)
        del model

    base_nll = results["base model"]["eval"].metrics["nll"]
    print()
    print(
        f"{'recipe':<14} {'train tokens':>12} {'tokens/s':>9} {'train time':>10} "
        f"{'val NLL':>8} {'vs base':>8} {'one-joke':>9} {'copies':>7}  first promotable"
    )
    for name, row in results.items():
        metrics = row["eval"].metrics
        gain = (metrics["nll"] - base_nll) / base_nll
        promotable = "-"
        if "first_promotable" in row:
            first = row["first_promotable"]
            promotable = (
                f"after {fmt_seconds(first[0])} (step {first[1]})"
                if first
                else f"not within {row['steps']} steps"
            )
        print(
            f"{name:<14} {row.get('train_tokens', 0):>12,} "
            f"{row.get('tokens_per_second', 0):>9.0f} {fmt_seconds(row.get('train_seconds')):>10} "
            f"{metrics['nll']:>8.3f} {gain:>+8.1%} {metrics['one_joke_rate']:>9.0%} "
            f"{metrics['copy_rate']:>7.0%}  {promotable}"
        )
    print()
    scored = results["base model"]["eval"].metrics["nll_tokens"]
    print(
        f"val NLL: nats per token over {len(validation)} held-out jokes ({scored} tokens, eos "
        f"included); one-joke / copies: {options.samples} unprompted samples per model, at most "
        f"{options.max_new_tokens} new tokens. Train time and tokens/s exclude evaluations."
    )
    if "jokebot" in results:
        row = results["jokebot"]
        print(
            f"jokebot: {row['settings']}, evaluations at steps "
            f"{[s for _, s, _ in row['timeline']]} (eval loss "
            f"{', '.join(f'{loss:.3f}' for _, _, loss in row['timeline'])}); promotable = "
            f"Trainer eval loss {options.margin:.0%} below the base's {base_eval_loss:.3f}"
        )
    for name, row in results.items():
        print(f"sample, {name}: {show_sample(row['eval'].samples)!r}")
    print(
        f"total {fmt_seconds(time.monotonic() - started)}; load average (1 min) {load.summary()} "
        f"on {os.cpu_count()} cores (above {cores or 1}: other processes shared the cores); "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    if options.json:
        out = {
            name: {**{k: v for k, v in row.items() if k != "eval"}, "metrics": row["eval"].metrics}
            for name, row in results.items()
        }
        options.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
