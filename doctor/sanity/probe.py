"""Stage 6: POPE-style yes/no questions about images, scored by accuracy.

The probe file is JSON Lines, one question per line::

    {"image": "images/kitchen.jpg", "question": "Is there a knife in the image?", "answer": "yes"}

``image`` is relative to the probe file's folder (or absolute); ``answer`` is ``yes`` or ``no``;
other keys (``id``, ``category``) are kept but not used. The model's answer is read from the
next-token logits after LLaVA-1.5's POPE prompt (question + "Answer the question using a single
word or phrase."): yes when the best "yes" spelling outscores the best "no" spelling. One forward
pass per question, no sampling.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from doctor.errors import UsageError
from doctor.findings import Severity
from doctor.sanity import inputs as _inputs
from doctor.sanity.quiet import quiet
from doctor.sanity.results import StageResult
from doctor.sanity.stages import Session

MIN_ACCURACY = 0.6  # POPE chance level is 0.5; LLaVA-1.5 scores about 0.85


def read_probe(path: str) -> list[tuple[int, dict[str, Any] | str]]:
    """(line index, record or a problem description) for every non-blank line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such probe file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read the probe file ({e})") from None
    out: list[tuple[int, dict[str, Any] | str]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            out.append((i, f"line {i + 1} is not JSON: {e}"))
            continue
        out.append((i, _validate(rec, i, p.parent)))
    return out


def _validate(rec: Any, i: int, folder: Path) -> dict[str, Any] | str:
    if not isinstance(rec, dict):
        return f"line {i + 1} is not a JSON object"
    missing = [k for k in ("image", "question", "answer") if not isinstance(rec.get(k), str) or not rec.get(k)]
    if missing:
        return f"line {i + 1} lacks string field(s) {', '.join(missing)}"
    answer = rec["answer"].strip().lower()
    if answer not in ("yes", "no"):
        return f"line {i + 1}: answer is {rec['answer']!r}, not yes or no"
    image = Path(rec["image"])
    image = image if image.is_absolute() else folder / image
    if not image.is_file():
        return f"line {i + 1}: image {rec['image']} not found (relative to {folder})"
    return {**rec, "answer": answer, "image_path": str(image)}


def probe(s: Session, stage: StageResult, path: str, timeout: float, min_accuracy: float = MIN_ACCURACY) -> None:
    import torch

    records = read_probe(path)
    tok = s.loaded.processor.tokenizer
    yes_ids, no_ids = _inputs.yes_no_ids(tok)
    # Llama-style vocabularies have one token for "Yes"/"No": one forward pass per question reads both.
    # Otherwise (byte-level pieces) score the whole answer, one forward pass per answer.
    first_token = bool(yes_ids and no_ids)
    stage.metrics["scoring"] = "first-token logits" if first_token else "answer log-likelihood"
    started = time.perf_counter()
    tp = fp = tn = fn = 0
    for line, rec in records:
        if isinstance(rec, str):
            stage.add(rec, path=path, record=line, severity=Severity.WARNING,
                      hint='Each line needs {"image": PATH, "question": TEXT, "answer": "yes"|"no"}.')
            continue
        if time.perf_counter() - started > timeout:
            stage.add(f"the probe stopped at the {timeout:g} s timeout after {tp + fp + tn + fn} question(s)",
                      path=path, severity=Severity.WARNING, hint="Raise --timeout or shorten the probe file.")
            break
        try:
            image = _inputs.load_image(rec["image_path"])
        except UsageError as e:
            stage.add(str(e), path=path, record=line, severity=Severity.WARNING, hint="Fix or remove the line.")
            continue
        text, _ = _inputs.build_prompt(s.loaded.processor, s.plan.family, rec["question"] + _inputs.POPE_SUFFIX)
        if first_token:
            inputs = _inputs.make_inputs(s.loaded.processor, text, image, s.plan.device, s.loaded.torch_dtype)
            with torch.no_grad(), quiet():
                logits = s.model(**inputs).logits[0, -1].float()
            said_yes = bool(logits[sorted(yes_ids)].max() > logits[sorted(no_ids)].max())
        else:
            said_yes = _loglik(s, text, image, " Yes") > _loglik(s, text, image, " No")
        truth_yes = rec["answer"] == "yes"
        tp += said_yes and truth_yes
        fp += said_yes and not truth_yes
        tn += not said_yes and not truth_yes
        fn += not said_yes and truth_yes
    _score(stage, path, tp, fp, tn, fn, min_accuracy)


def _loglik(s: Session, text: str, image: Any, answer: str) -> float:
    """Sum of log-probabilities of the tokens ``answer`` adds after the prompt."""
    import torch

    n_prompt = _inputs.make_inputs(s.loaded.processor, text, image, "cpu", torch.float32)["input_ids"].shape[-1]
    inputs = _inputs.make_inputs(s.loaded.processor, text + answer, image, s.plan.device, s.loaded.torch_dtype)
    ids = inputs["input_ids"][0]
    with torch.no_grad(), quiet():
        logp = torch.log_softmax(s.model(**inputs).logits[0].float(), dim=-1)
    positions = range(min(n_prompt, len(ids) - 1), len(ids))
    return float(sum(logp[i - 1, ids[i]] for i in positions))


def _score(stage: StageResult, path: str, tp: int, fp: int, tn: int, fn: int, min_accuracy: float) -> None:
    n = tp + fp + tn + fn
    if n == 0:
        stage.add("the probe file holds no usable question", path=path,
                  hint='Write one {"image": ..., "question": ..., "answer": "yes"|"no"} object per line.')
        return
    acc = (tp + tn) / n
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    yes_ratio = (tp + fp) / n
    stage.metrics.update({"questions": n, "accuracy": acc, "precision": precision, "recall": recall, "f1": f1,
                          "yes_ratio": yes_ratio, "min_accuracy": min_accuracy})
    stage.detail = f"{n} questions: accuracy {acc:.1%}, F1 {f1:.2f}, yes-ratio {yes_ratio:.0%}"
    if acc < min_accuracy:
        stage.add(f"probe accuracy {acc:.1%} on {n} yes/no questions is below {min_accuracy:.0%} "
                  f"(chance is 50%; yes-ratio {yes_ratio:.0%})", path=path,
                  hint="The model does not use the image: check stages 1 and 4, the projector and the base model.")
    has_both = (tp + fn) and (tn + fp)
    if has_both and yes_ratio in (0.0, 1.0):
        stage.add(f"the model answers {'yes' if yes_ratio else 'no'} to every question", path=path,
                  severity=Severity.WARNING,
                  hint="A constant answer means the image and question are ignored: check the prompt and stage 4.")
