"""CKP012: generation_config.json that transformers refuses to save (from 4.37, a validation
warning at save time is a ValueError; 5.x refuses it once the config is built or changed in code,
and only warns for one loaded unchanged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import read_json

from doctor.findings import Applicability, Fix, Location
from doctor.registry import Check, register

# flag -> the value at which greedy decoding does not complain (GenerationConfig.validate)
SAMPLING_FLAGS: dict[str, tuple[Any, ...]] = {
    "temperature": (None, 1.0), "top_p": (None, 1.0), "top_k": (None, 50), "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "min_p": (None,),
}
BEAM_FLAGS: dict[str, tuple[Any, ...]] = {
    "early_stopping": (None, False), "length_penalty": (None, 1.0), "num_beam_groups": (None, 1),
    "diversity_penalty": (None, 0.0),
}


def invalid_flags(gen: dict[str, Any]) -> dict[str, str]:
    """Flags transformers' ``GenerationConfig.validate`` complains about -> why."""
    out: dict[str, str] = {}
    if gen.get("do_sample") is not True:
        for flag, fine in SAMPLING_FLAGS.items():
            if flag in gen and gen[flag] not in fine:
                out[flag] = f"{flag}={gen[flag]!r} is only used when sampling (do_sample is not true)"
    if gen.get("num_beams") in (None, 1):
        for flag, fine in BEAM_FLAGS.items():
            if flag in gen and gen[flag] not in fine:
                out[flag] = f"{flag}={gen[flag]!r} is only used with beam search (num_beams is 1)"
    return out


@register
class GenerationConfigRefusedOnSave(Check):
    """generation_config.json holds sampling or beam flags that greedy decoding ignores, which
    transformers >= 4.37 refuses to save.

    ## What it does
    Reads generation_config.json and reports `temperature`, `top_p`, `top_k`, `typical_p`, ... set
    while `do_sample` is not true, and beam-only flags set while `num_beams` is 1, exactly the
    combinations `GenerationConfig.validate()` warns about.

    ## Why is this bad?
    From transformers 4.37, `save_pretrained` turns these warnings into a `ValueError` ("The
    generation config instance is invalid"; 5.x: "GenerationConfig is invalid", for a config built or
    changed in code). A LoRA merge script
    then dies after writing config.json, leaving a folder with no weights. The flags also do nothing:
    decoding is greedy. An error although loading only warns: the failure is in the save that every
    merge script and every Trainer checkpoint makes, on transformers 4.37 - 4.x (LLaVA pins 4.37.2);
    5.x saves a config it loaded unchanged with a warning.

    ## Example
    liuhaotian's LLaVA-1.5 releases: `{"temperature": 0.9, "top_p": 0.6, "max_length": 4096}` with no
    `do_sample`.

    ## How to fix
    Remove the flags (a safe fix: greedy decoding ignores them; `--fix` writes
    generation_config.fixed.json beside the original) or set `"do_sample": true` if you meant to sample.
    """

    code = "CKP012"
    name = "generation-config-refused-on-save"
    artifacts = frozenset({"model"})

    def run(self, path: str):
        f = read_json(Path(path) / "generation_config.json")
        if not f.exists:
            return
        where = str(f.path)
        if f.error is not None or not isinstance(f.data, dict):
            loc = Location(line=f.line, column=f.column) if f.line else None
            yield self.finding(f"generation_config.json is not a valid JSON object: {f.error or type(f.data).__name__}",
                               path=where, location=loc,
                               hint="Fix the JSON or delete the file (transformers then derives one from config.json).")
            return
        bad = invalid_flags(f.data)
        if bad:
            keys = sorted(bad)
            yield self.finding(
                "; ".join(bad[k] for k in keys) + ": transformers >= 4.37 refuses to save this config "
                "(save_pretrained raises ValueError: GenerationConfig is invalid)",
                path=where, location=Location(key=keys[0]),
                hint=f"Remove {', '.join(keys)} (greedy decoding ignores them), or set \"do_sample\": true to sample.",
                fix=Fix(f"write generation_config.fixed.json without {', '.join(keys)}", Applicability.SAFE,
                        fixer="generation_config", params={"remove": keys, "file": where}),
            )
