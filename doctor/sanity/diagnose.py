"""Name the cause when a stage fails: non-finite parameters (stage 2), a cut image path (stage 4).

These read the loaded model's own parameters and config; they run only after a failure, so the
cost of a pass over the weights is paid only when there is something to explain.
"""

from __future__ import annotations

from typing import Any

PROJECTOR = ("multi_modal_projector", "mm_projector")
SHOW = 4


def nonfinite_parameters(model: Any, limit: int = SHOW) -> list[str]:
    """Names of floating-point parameters holding NaN or inf, LoRA tensors first.

    One float32 sum per parameter (no tensor-sized temporaries) and one device sync per device: a
    sum is finite exactly when every element is (finite weights do not reach 3e38); the few flagged
    tensors are then confirmed element-wise. Quantized (integer) parameters are skipped.
    """
    import torch

    by_device: dict[Any, list[tuple[str, Any]]] = {}
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.numel():
            by_device.setdefault(p.device, []).append((name, p))
    bad: list[str] = []
    with torch.no_grad():
        for params in by_device.values():
            sums = torch.stack([p.detach().sum(dtype=torch.float32) for _, p in params])
            flags = torch.isfinite(sums).cpu().tolist()
            bad += [name for (name, p), ok in zip(params, flags, strict=True)
                    if not ok and not bool(torch.isfinite(p.detach()).all())]
    bad.sort(key=lambda n: ("lora" not in n, n))
    return bad[:limit]


def image_path_problems(model: Any, inputs: dict[str, Any]) -> list[str]:
    """Reasons the image cannot influence the logits, as far as the parameters and config show."""
    out = []
    out += _projector(model)
    out += _cross_attention(model)
    out += _placeholder(model, inputs)
    return out


def _projector(model: Any) -> list[str]:
    params = [(n, p) for n, p in model.named_parameters() if any(k in n for k in PROJECTOR) and p.is_floating_point()]
    if not params:
        return []
    zero_weights = [n for n, p in params if n.endswith("weight") and p.numel() and not bool(p.detach().abs().max() > 0)]
    if zero_weights and len(zero_weights) == sum(n.endswith("weight") for n, _ in params):
        return [f"every projector weight is zero ({', '.join(zero_weights[:SHOW])}): its output is a constant"]
    if zero_weights:
        return [f"projector weight {zero_weights[-1]} is all zeros, so the projector outputs its bias for every image"]
    return []


def _cross_attention(model: Any) -> list[str]:
    cfg = getattr(model, "config", None)
    text_cfg = getattr(cfg, "text_config", None)
    layers = getattr(text_cfg, "cross_attention_layers", None)
    if layers is None:
        return []
    depth = getattr(text_cfg, "num_hidden_layers", None)
    valid = [i for i in layers if isinstance(i, int) and depth is not None and 0 <= i < depth]
    if not valid:
        return [f"text_config.cross_attention_layers {list(layers)} names no layer of the {depth}-layer text "
                "model, so no cross-attention layer sees the image"]
    gates = [(n, p) for n, p in model.named_parameters() if n.endswith("cross_attn_attn_gate")]
    if gates and all(not bool(p.detach().float().abs().max() > 0) for _, p in gates):
        return [f"all {len(gates)} cross-attention gates are 0 ({gates[0][0]} ...): tanh(0) = 0 multiplies the "
                "image's contribution by zero (freshly initialised, never trained)"]
    return []


def _placeholder(model: Any, inputs: dict[str, Any]) -> list[str]:
    cfg = getattr(model, "config", None)
    token = getattr(cfg, "image_token_id", None)
    if token is None:
        token = getattr(cfg, "image_token_index", None)
    ids = inputs.get("input_ids")
    if token is None or ids is None:
        return []
    if not bool((ids == token).any()):
        return [f"the prompt holds no image token (id {token}): the processor's image token does not match "
                "config.image_token_index"]
    mask = inputs.get("cross_attention_mask")
    if mask is not None and not bool(mask.any()):
        return ["the processor's cross_attention_mask is all zero: no text token attends to the image"]
    return []
