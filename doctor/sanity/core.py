"""``run_sanity``: load a model, show it an image, let it answer, stage by stage.

Stages (each timed, with its peak memory): 1 load, 2 forward, 3 generate, 4 the image matters,
5 adapter vs merged (with an adapter), 6 probe (with a probe file). A stage that cannot run
because an earlier one failed is skipped with that reason. Execution runs stage 6 before stage 5
because stage 5 may merge or free the model; results are reported in stage order.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable
from typing import Any

from doctor.errors import UsageError
from doctor.sanity import inputs as _inputs
from doctor.sanity import load as _load
from doctor.sanity.memory import gib, is_oom, measure, release
from doctor.sanity.results import BY_NUMBER, SanityResult, StageResult

DEFAULT_TIMEOUT = 120.0


def run_sanity(
    model: str,
    adapter: str | None = None,
    base: str | None = None,
    image: str | None = None,
    prompt: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    load_4bit: bool = False,
    load_8bit: bool = False,
    max_new_tokens: int = 16,
    probe: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    probe_min_accuracy: float | None = None,
    image_tolerance: float | None = None,
    processor: str | None = None,
) -> SanityResult:
    """Run the sanity pass on a model folder (or an adapter on its base). Bad arguments raise
    ``doctor.errors.UsageError``; everything the model does wrong is a finding on a stage."""
    if load_4bit and load_8bit:
        raise UsageError("--load-4bit and --load-8bit exclude each other")
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    quant = "4bit" if load_4bit else "8bit" if load_8bit else None
    plan = _load.plan(model, adapter, base, device, dtype, quant, processor)
    picture = _inputs.load_image(image)
    if probe is not None:
        from doctor.sanity.probe import read_probe

        read_probe(probe)  # a missing or unreadable file is a usage error, before anything loads
    result = SanityResult(
        model=plan.model, adapter=plan.adapter or (plan.compare[1] if plan.compare else None),
        base=plan.compare[0] if plan.compare else (plan.model if plan.adapter else None),
        device=plan.device, dtype=plan.dtype, quantization=quant, family=plan.family, environment=_environment(plan),
    )
    stages = {n: StageResult(n) for n in BY_NUMBER}
    result.stages = [stages[n] for n in sorted(stages)]
    reason = _load.skip_reason(plan)
    if reason:
        for st in stages.values():
            st.skip(reason)
        return result

    loaded = _stage(stages[1], plan, lambda st: _load.load(plan, st))
    if loaded is None or stages[1].failed:
        for n in range(2, 7):
            stages[n].skip("stage 1 (load) failed")
        release(loaded)
        return result

    from doctor.sanity import stages as _stages

    session = _stages.Session(plan, loaded, picture, "given" if image else "default",
                              prompt or _inputs.DEFAULT_PROMPT)
    _stage(stages[2], plan, lambda st: _stages.forward(session, st))
    if session.last_logits is None or not session.main_finite:
        why = "raised" if session.last_logits is None else "gave NaN/inf logits"
        for n in (3, 4, 6):
            stages[n].skip(f"stage 2: the forward pass with the main image {why}")
    else:
        _stage(stages[3], plan, lambda st: _stages.generate(session, st, max_new_tokens, timeout))
        tol = _stages.IMAGE_TOLERANCE if image_tolerance is None else image_tolerance
        _stage(stages[4], plan, lambda st: _stages.image_matters(session, st, tol))
        if probe is None:
            stages[6].skip("no probe file (--probe FILE)")
        else:
            from doctor.sanity.probe import MIN_ACCURACY
            from doctor.sanity.probe import probe as run_probe

            acc = MIN_ACCURACY if probe_min_accuracy is None else probe_min_accuracy
            _stage(stages[6], plan, lambda st: run_probe(session, st, probe, timeout, acc))
    if not (plan.adapter or plan.compare):
        stages[5].skip("no adapter (--adapter DIR)")
    elif quant:
        stages[5].skip(f"merging into a {quant} base rounds the LoRA into quantized weights (peft warns so); "
                       "run stage 5 in fp16/bf16")
    elif not session.inputs:
        stages[5].skip("stage 2 (forward) failed for the main image")
    else:
        from doctor.sanity.adapter import adapter_vs_merged

        _stage(stages[5], plan, lambda st: adapter_vs_merged(session, st))
    session.loaded.model = None  # the last reference to the model (session.loaded is loaded)
    release(collect=False)  # reference counting freed it; a full gc costs up to 0.7 s
    return result


def _stage(stage: StageResult, plan: _load.Plan, body: Callable[[StageResult], Any]) -> Any:
    """Run one stage body under the meter; an exception it did not expect becomes its finding."""
    value = None
    with measure(stage, plan.device), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library deprecation chatter; findings carry what matters
        try:
            value = body(stage)
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 - a stage never takes the report down with it
            if is_oom(e):
                from doctor.sanity.memory import free_memory

                stage.add(f"out of memory in stage {stage.number} ({stage.info.title}) on {plan.device}: "
                          f"{gib(free_memory(plan.device))} free", path=plan.adapter or plan.model,
                          hint="Use --load-4bit, a smaller --max-new-tokens, or a larger GPU.")
            else:
                tb = traceback.extract_tb(e.__traceback__)
                where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
                stage.add(f"stage {stage.number} ({stage.info.title}) raised {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:300]}{where}", path=plan.adapter or plan.model,
                          hint="If the message does not point at the model, report it as a vlm-doctor bug.")
    return value


def _environment(plan: _load.Plan) -> dict[str, str]:
    import torch
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError:
        pass
    if plan.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(plan.device)
    return env
