"""What a fresh install's jokes look like: v0 with and without in-context examples, and v1
after the first retrain on the starter corpus only.

    python benchmarks/bench_quality.py [--samples 48] [--shots 0,2,4,6] [--skip-train]

The corpus is the starter corpus that ships with jokebot (pyjokes, 283 one-liners), split by
the trainer's own stable hash (model.data). Every model is measured with the gate's
measurements (model.evaluate) on the held-out jokes:

- NLL: per token of held-out jokes in the plain layout (what the gate compares), and, for
  the few-shot rows, "as served" (after in-context examples, ending at the end of the line);
- one-joke rate: samples that end by themselves as one line of 10 to 280 characters;
- reads as a joke: samples that also start and end like a sentence and are words, not code
  (`model.contracts.jokes.reads_as_joke`, what /joke prefers);
- copies: samples that repeat a training joke verbatim;
- prompt tokens and seconds per sample (few-shot prompts are longer: batching cost).

v1 is trained by `jokebot train` itself on a fresh data directory (STARTER_CORPUS on, every
other setting at its default), exactly the first retrain of a new host.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import add_data_dir_argument  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--samples", type=int, default=48, help="samples per model")
    parser.add_argument("--shots", default="0,2,4,6", help="in-context examples to compare")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-train", action="store_true", help="only the v0 rows")
    parser.add_argument("--show", type=int, default=3, help="sample jokes shown per model")
    return parser.parse_args(argv)


def starter_split():
    from bot.community.starter import starter_jokes
    from model.contracts.corpus import CorpusJoke
    from model.contracts.jokes import check_joke
    from model.data import split_jokes

    jokes, seen = [], set()
    for number, raw in enumerate(starter_jokes()):
        check = check_joke(raw)
        if check.ok and check.key not in seen:
            seen.add(check.key)
            jokes.append(CorpusJoke(number, check.text, check.key))
    return split_jokes(jokes, 0.1)


def row(name, loaded, validation, train, *, layout, shots, samples, seed):
    from model.contracts.jokes import reads_as_joke
    from model.evaluate import measure
    from model.textformat import generation_prompt_ids

    began = time.monotonic()
    result = measure(
        loaded,
        [j.text for j in validation],
        {j.key for j in train},
        samples=samples,
        max_new_tokens=64,
        seed=seed,
        layout=layout,
        examples_pool=[j.text for j in train if len(j.text) <= 140],
        shots=shots,
    )
    m = result.metrics
    pool = [j.text for j in train][: max(shots, 1)]
    prompt_tokens = len(generation_prompt_ids(loaded.tokenizer, "", pool[:shots], layout))
    finished = [s for s in result.samples if s.finished]
    return {
        "name": name,
        "nll": m["nll"],
        "nll_served": m.get("nll_served"),
        "one_joke": m["one_joke_rate"],
        "reads": sum(reads_as_joke(s.text) for s in finished) / len(result.samples),
        "copies": m["copy_rate"],
        "prompt_tokens": prompt_tokens,
        "seconds_per_sample": m["sample_seconds"] / len(result.samples),
        "samples": [s.text.strip() for s in result.samples],
        "wall": time.monotonic() - began,
    }


def first_retrain(data_dir: Path, base_dir: Path) -> tuple[Path | None, str, float]:
    """`jokebot train` on a fresh data directory holding only the converted base model."""
    fresh = Path(tempfile.mkdtemp(prefix="jokebot-quality-"))
    shutil.copytree(base_dir.parent, fresh / "base")  # skip a second conversion
    env = {**os.environ, "JOKEBOT_DATA_DIR": str(fresh), "STARTER_CORPUS": "true"}
    env.pop("MODEL_BASE", None)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "train"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.monotonic() - began
    report = "\n".join(done.stdout.strip().splitlines()[-6:])
    version = fresh / "models" / "v1"
    return (version if version.is_dir() else None), report, seconds


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    from model.devices import configure_cpu_threads
    from model.embedded import ensure_embedded_model
    from model.evaluate import release
    from model.loading import load_model_and_tokenizer

    configure_cpu_threads()
    base = ensure_embedded_model(options.data_dir)
    train, validation = starter_split()
    print(f"starter corpus: {len(train)} training jokes, {len(validation)} held out")
    rows = []
    loaded = load_model_and_tokenizer(str(base), device="cpu")
    for shots in (int(part) for part in options.shots.split(",")):
        layout = "few-shot" if shots else "plain"
        name = f"v0, {shots} examples" if shots else "v0, plain prompt"
        rows.append(
            row(name, loaded, validation, train, layout=layout, shots=shots,
                samples=options.samples, seed=options.seed)
        )  # fmt: skip
        print(f"  measured {name} in {rows[-1]['wall']:.0f} s", flush=True)
    release(loaded)
    if not options.skip_train:
        version, report, seconds = first_retrain(options.data_dir, Path(base))
        print(f"first retrain (jokebot train, starter corpus only): {seconds:.0f} s\n{report}")
        if version is not None:
            loaded = load_model_and_tokenizer(str(version), device="cpu")
            rows.append(
                row("v1 (first retrain)", loaded, validation, train, layout="plain", shots=0,
                    samples=options.samples, seed=options.seed)
            )  # fmt: skip
            release(loaded)
            shutil.rmtree(version.parents[1], ignore_errors=True)

    print()
    header = (
        f"{'model':<20} {'NLL':>6} {'served':>7} {'one-joke':>8} {'reads ok':>8} "
        f"{'copies':>6} {'prompt tok':>10} {'s/sample':>8}"
    )
    print(header)
    for r in rows:
        served = f"{r['nll_served']:.3f}" if r["nll_served"] is not None else "-"
        print(
            f"{r['name']:<20} {r['nll']:>6.3f} {served:>7} {r['one_joke']:>8.0%} "
            f"{r['reads']:>8.0%} {r['copies']:>6.0%} {r['prompt_tokens']:>10} "
            f"{r['seconds_per_sample']:>8.2f}"
        )
    print(f"\n{options.samples} samples a model, temperature 0.9, top-p 0.95, seed {options.seed}")
    for r in rows:
        print(f"\n{r['name']}:")
        for text in r["samples"][: options.show]:
            print(f"  - {text[:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
