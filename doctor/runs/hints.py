"""The exact commands the RUN findings hand to the user, built from the run's own paths."""

from __future__ import annotations

from pathlib import Path

from doctor.runs.layout import RunLayout, Save


def sibling_with(layout: RunLayout, name: str, exclude: Save | None = None) -> str | None:
    """The path of ``name`` in another save of the run (the final output first, then the latest)."""
    for save in reversed(layout.saves):
        if save is not exclude and name in save.names:
            return str(save.path / name)
    return None


def zero_to_fp32_command(save: Save) -> str:
    """The CLI form of the zero_to_fp32.py copied into this save (it changed in DeepSpeed 0.14:
    an output folder and --safe_serialization instead of one output file)."""
    script = save.zero_to_fp32
    text = ""
    if script is not None:
        try:
            text = script.read_text(errors="replace")[-20000:]
        except OSError:
            text = ""
    out = f"{save.path}-fp32"
    if '"output_dir"' in text or "'output_dir'" in text:
        flags = " --safe_serialization" + (" --exclude_frozen_parameters" if "exclude_frozen_parameters" in text else "")
        return f"cd {save.path} && python zero_to_fp32.py . {out}{flags}"
    return f"cd {save.path} && python zero_to_fp32.py . {out}.bin"


def deepspeed_recovery(save: Save, layout: RunLayout) -> str:
    if not save.deepspeed_tags:
        return ("This save cannot be recovered: no DeepSpeed global_stepN/ folder was kept beside it. Use another "
                "checkpoint, and set \"stage3_gather_16bit_weights_on_model_save\": true in the DeepSpeed config.")
    tag = save.deepspeed_tags[-1]
    if save.zero_to_fp32:
        cmd = zero_to_fp32_command(save)
    else:
        cmd = (f"python -c \"from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint as g; "
               f"import torch; torch.save(g('{save.path}', tag='{tag}'), '{save.path}-fp32.bin')\"")
    return (f"Rebuild the weights from {tag}/ on a machine with DeepSpeed: `{cmd}` (or, in Python, "
            f"`get_fp32_state_dict_from_zero_checkpoint('{save.path}', tag='{tag}')`); then "
            + extract_adapter(layout, None)
            + " For future runs set \"stage3_gather_16bit_weights_on_model_save\": true.")


def extract_adapter(layout: RunLayout, src: Path | None) -> str:
    config = sibling_with(layout, "adapter_config.json")
    source = str(src) if src is not None else "the rebuilt weights"
    loader = "load_file(...)" if src is None or src.suffix == ".safetensors" else "torch.load(..., weights_only=True)"
    target = f"{layout.root}/adapter-extracted"
    return (f"keep only the LoRA tensors of {source} as a PEFT adapter: `sd = {loader}`, "
            f"`save_file({{k.replace('.default.', '.'): v for k, v in sd.items() if 'lora_' in k}}, "
            f"'{target}/adapter_model.safetensors')`, and "
            + (f"copy {config} beside it" if config else "write an adapter_config.json with the run's r, lora_alpha "
               "and target_modules")
            + " (its keys keep the base_model.model. prefix); then merge it with `vlm-doctor merge`.")


def llava_extras_hint(layout: RunLayout, extras: list) -> str:
    final = layout.final
    parts = []
    if final is not None and "config.json" in final.names:
        parts.append(f"copy {final.path / 'config.json'} (written by this run at its end) into each")
    else:
        parts.append("the run has no final config.json (it did not finish): write one from the base LLM's "
                     "config.json plus the mm_* fields of the training command (mm_vision_tower, "
                     "mm_projector_type, mm_hidden_size, mm_vision_select_layer, ...)")
    with_ds = [st.save for st in extras if st.save.deepspeed_tags]
    if with_ds:
        s = with_ds[-1]
        parts.append(f"for the projector of that very step, rebuild it from the DeepSpeed shards "
                     f"(`get_fp32_state_dict_from_zero_checkpoint('{s.path}')`) and torch.save the keys that "
                     f"contain mm_projector as non_lora_trainables.bin")
    if final is not None and "non_lora_trainables.bin" in final.names:
        parts.append(f"or copy {final.path / 'non_lora_trainables.bin'}: the projector at the end of training, "
                     "not at the checkpoint's step")
    elif not with_ds:
        parts.append("the projector of these steps was not saved anywhere: without non_lora_trainables.bin the "
                     "projector stays random; use the final output instead")
    return _sentence("; ".join(parts))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."
