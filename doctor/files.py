"""Layout facts, in one place: the file names, folder patterns and type sets that say what an
artifact is. Discovery, checks and fixers import them from here; nothing else defines them.

Names follow the libraries that write them: transformers (``config.json``, ``model.safetensors``,
``pytorch_model.bin``, their ``.index.json``; Trainer's ``checkpoint-N/`` with ``optimizer.pt``,
``scheduler.pt``, ``scaler.pt``, ``rng_state[_N].pth``, ``training_args.bin``), peft
(``adapter_model.safetensors`` / ``.bin``; ``adapter_model.pt`` is what merge tools also accept),
accelerate (``save_state``: ``optimizer[_N].bin``, ``scheduler[_N].bin``, ``sampler[_N].bin``,
``random_states_N.pkl``), DeepSpeed (``global_stepN/`` holding
``*_model_states.pt`` / ``*_optim_states.pt``), mmengine / XTuner (``work_dirs/<config>/``
holding ``iter_N.pth`` or ``epoch_N.pth``: a file, or with DeepSpeed a folder of the above, plus
``last_checkpoint``), the original LLaVA codebase (``non_lora_trainables.bin``,
``mm_projector.bin``, its ``llava_*`` model types) and XTuner releases.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

# ---- configs ---------------------------------------------------------------------------------
MODEL_CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
TRAINER_STATE = "trainer_state.json"
CONFIG_NAMES = frozenset({
    "config.json", "adapter_config.json", "generation_config.json", "tokenizer_config.json",
    "special_tokens_map.json", "preprocessor_config.json", "processor_config.json",
    "trainer_state.json", "chat_template.json", "tokenizer.json", "added_tokens.json",
    "model.safetensors.index.json", "pytorch_model.bin.index.json", "vocab.json",
    "xtuner_config.json", "training_args.json", "all_results.json", "train_results.json",
    "eval_results.json",
})

# ---- weights ---------------------------------------------------------------------------------
# What peft reads (load_peft_weights: SAFETENSORS_WEIGHTS_NAME, then WEIGHTS_NAME); nothing else loads.
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
INDEX_SUFFIX = ".index.json"
NON_LORA_TRAINABLES = "non_lora_trainables.bin"
MM_PROJECTOR = "mm_projector.bin"
# files the LLaVA codebase loads with a plain torch.load (llava/model/builder.py)
LLAVA_PLAIN_LOAD = frozenset({NON_LORA_TRAINABLES, MM_PROJECTOR})
# pickled state dicts transformers / peft load by name (shards included); a safetensors copy can replace them
PICKLE_WEIGHTS_RE = re.compile(r"^(pytorch_model|adapter_model)(-\d+-of-\d+)?\.bin$")
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"  # what a clone without git-lfs leaves
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# what torch.load / pickle.load / mmengine open: every such file goes through the pickle scanner
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_SUFFIX = ".safetensors"

# ---- training state (pickles that are not model weights) --------------------------------------
TRAINING_ARGS = "training_args.bin"
RNG_STATE_RE = re.compile(r"^(rng_state(_\d+)?\.pth|random_states_\d+\.pkl)$")  # Trainer / accelerate
TRAINER_STATE_FILES = frozenset({"optimizer.pt", "scheduler.pt", "scaler.pt"})
ACCELERATE_STATE_RE = re.compile(r"^(optimizer|scheduler|sampler|dl_state_dict)(_\d+)?\.bin$")  # save_state
DEEPSPEED_STATE_RE = re.compile(r"(_optim_states|_model_states)\.pt$")
MMENGINE_CHECKPOINT_RE = re.compile(r"^(best_.+_)?(iter|epoch)_(\d+)\.pth$")

# ---- folders ---------------------------------------------------------------------------------
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
GLOBAL_STEP_RE = re.compile(r"^global_step(\d+)$")
FSDP_DIR_RE = re.compile(r"^pytorch_model_fsdp_\d+$")
DISTCP_SUFFIX = ".distcp"
# torch.distributed.checkpoint's metadata beside the .distcp files: ".metadata", or "__{rank}.metadata"
# when ranks do not coordinate (filesystem.py _get_metadata_path); FileSystemReader pickle.load()s it
DCP_METADATA_RE = re.compile(r"^(__\d+)?\.metadata$")
XTUNER_PARTS = ("llm_adapter", "visual_encoder_adapter", "projector")

# ---- model types -----------------------------------------------------------------------------
ORIGINAL_LLAVA_TYPES = frozenset(
    {"llava_llama", "llava_mistral", "llava_mpt", "llava_mixtral", "llava_qwen", "llava_qwen_moe", "llava_gemma"}
)


def checkpoint_step(name: str) -> int | None:
    """N of a Trainer ``checkpoint-N`` folder name, else None."""
    m = CHECKPOINT_RE.match(name)
    return int(m.group(1)) if m else None


def is_pickle_name(name: str) -> bool:
    """A file name torch.load / pickle.load / mmengine would open."""
    return name.lower().endswith(PICKLE_SUFFIXES)


def is_dcp_metadata(path: str | PurePath) -> bool:
    """A torch.distributed.checkpoint ``.metadata`` pickle: the name, beside ``*.distcp`` files."""
    p = PurePath(path)
    if not DCP_METADATA_RE.match(p.name):
        return False
    try:
        return any(child.suffix == DISTCP_SUFFIX for child in Path(p.parent).iterdir())
    except OSError:
        return False


def is_weight_name(name: str) -> bool:
    return name.lower().endswith(WEIGHT_SUFFIXES)


def is_training_state(path: str | PurePath) -> bool:
    """A pickle that holds training state rather than model weights: the Trainer's optimizer /
    scheduler / scaler / RNG states and arguments, accelerate's random states, DeepSpeed's
    ``*_optim_states.pt`` / ``*_model_states.pt`` and mmengine's ``iter_N.pth`` checkpoints (which
    hold the optimizer and the message hub beside the state dict)."""
    p = PurePath(path)
    name = p.name
    return (name == TRAINING_ARGS or name in TRAINER_STATE_FILES or bool(RNG_STATE_RE.match(name))
            or bool(ACCELERATE_STATE_RE.match(name))
            or bool(DEEPSPEED_STATE_RE.search(name)) or bool(MMENGINE_CHECKPOINT_RE.match(name))
            or any(MMENGINE_CHECKPOINT_RE.match(part) for part in p.parts[:-1]))


def in_mmengine_save(path: str | PurePath) -> bool:
    """The file is, or lies inside, an mmengine / XTuner ``iter_N.pth`` / ``epoch_N.pth`` save."""
    return any(MMENGINE_CHECKPOINT_RE.match(part) for part in PurePath(path).parts)
