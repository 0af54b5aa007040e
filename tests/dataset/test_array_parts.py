"""A JSON array cut into byte ranges (``--engine ray``): wherever the cuts fall (inside strings
holding ``, {`` or ``[{``, inside nested lists of objects, inside multi-byte characters, on a
minified one-line file or an indented one), the parts give the single-process scan exactly, or
the driver falls back to one process. The blocks run in a plain loop here (the Ray tests run
them on a local cluster)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doctor.checks.dataset import distributed
from doctor.checks.dataset.scan import count_array_part, scan_dataset


def loop(fn, blocks):
    return [fn(b) for b in blocks]


def snapshot(scan) -> tuple:
    """Everything a finding can take from a scan: counts, problems with their locations, positions
    of every record, image references, ids' findings, the file-level fields."""
    problems = {code: [(p.message, p.index, p.pointer, p.line, p.column) for p in samples]
                for code, samples in scan.problems.samples.items()}
    return (scan.records, scan.objects, scan.layout, scan.fmt, scan.complete, scan.trailing_comma, scan.bytes,
            [scan.offset_of(i) for i in range(scan.records)], [scan.line_of(i) for i in range(scan.records)],
            problems, dict(scan.problems.counts), dict(scan.refs), scan.first_value,
            scan.checker.image_refs, scan.checker.records_with_images, dict(scan.checker.turns),
            list(scan.checker.chars))


TRAPS = [", {", "[{", '", {"id": "x"}', "}, {", "\\", '"', "é", "日本語", "😀", ", {}", "]", "},\n  {"]

text = st.text(alphabet=st.sampled_from(list("ab ,{}[]\":\\\n") + ["é", "😀", "日"]), max_size=12)
trap = st.sampled_from(TRAPS)
value = st.lists(st.one_of(text, trap), max_size=3).map("".join)


@st.composite
def record(draw, i: int):
    turns = [{"from": "human" if k % 2 == 0 else draw(st.sampled_from(["gpt", "gpt", "user"])),
              "value": ("<image>\n" if k == 0 else "") + draw(value)}
             for k in range(draw(st.integers(1, 4)) * 2)]
    rec = {"id": draw(st.sampled_from([f"r{i}", f"r{i % 5}", i])), "image": f"img/{draw(st.integers(0, 6))}.png",
           "conversations": turns}
    if draw(st.booleans()):
        rec["meta"] = {"nested": [{"a": draw(value)}, {"b": [{"c": 1}, {"d": draw(value)}]}]}
    return rec


@st.composite
def array_file(draw):
    n = draw(st.integers(1, 40))
    records: list = [draw(record(i)) for i in range(n)]
    if n > 2 and draw(st.booleans()):  # elements that are not objects
        records.insert(draw(st.integers(1, n - 1)), draw(st.sampled_from([[1, 2], "x, {", 3, None, [{"a": 1}]])))
    layout = draw(st.sampled_from(["minified", "compact", "indent2", "indent4", "per-line", "tabs-crlf"]))
    ascii_only = draw(st.booleans())
    if layout == "minified":
        text = json.dumps(records, separators=(",", ":"), ensure_ascii=ascii_only)
    elif layout == "compact":
        text = json.dumps(records, ensure_ascii=ascii_only)
    elif layout == "tabs-crlf":  # Windows line ends and tab indents: columns count "\r" and "\t" as characters
        text = json.dumps(records, indent="\t", ensure_ascii=ascii_only).replace("\n", "\r\n")
    elif layout == "per-line":
        text = "[\n" + ",\n".join("  " + json.dumps(r, ensure_ascii=ascii_only) for r in records) + "\n]"
    else:
        text = json.dumps(records, indent=int(layout[-1]), ensure_ascii=ascii_only)
    ending = draw(st.sampled_from(["clean", "clean", "trailing-comma", "syntax-error", "extra-data"]))
    if ending == "trailing-comma":
        text = text[:text.rindex("]")].rstrip() + ",\n]"
    elif ending == "syntax-error" and n > 3:
        k = draw(st.integers(len(text) // 3, len(text) - 2))
        text = text[:k] + "}" + text[k:]
    elif ending == "extra-data":
        text += "\n{}"
    return text + draw(st.sampled_from(["", "\n", "\n\n  "])), draw(st.integers(16, 400))


def check_equal(path: Path, part_bytes: int) -> bool:
    one = scan_dataset(str(path))
    parts = distributed.scan_json_array(str(path), None, run=loop, part_bytes=part_bytes)
    if parts is None:
        # only a file one process must read: broken, or too short to carry a format
        assert one.stopped_at is not None or not one.complete or one.fmt is None, "a clean array fell back"
        return False
    assert snapshot(parts) == snapshot(one)
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(array_file())
def test_parts_of_an_array_give_the_single_process_scan(tmp_path_factory, case):
    text, part_bytes = case
    path = tmp_path_factory.mktemp("a") / "data.json"
    path.write_text(text, encoding="utf-8")
    check_equal(path, part_bytes)


def test_the_property_really_cuts(tmp_path):
    """The clean arrays above are cut into many parts (not all read by the fallback)."""
    rng = random.Random(0)
    records = [{"id": str(i), "image": "img/1.png", "conversations": [
        {"from": "human", "value": "<image>\n" + rng.choice(TRAPS) * 3}, {"from": "gpt", "value": "x, {y} [{"}]}
        for i in range(200)]
    for layout in (None, 2):
        path = tmp_path / f"d{layout}.json"
        path.write_text(json.dumps(records, indent=layout, ensure_ascii=False))
        assert check_equal(path, 97)


def test_a_wrong_guess_is_counted_again_from_the_known_start(tmp_path):
    """A cut inside a long nested list of objects: the part's guess (a nested object followed by
    more than the elements it tries) is wrong, the chain shows it, and the part is counted again
    from the true start."""
    records = [{"id": str(i), "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}],
                "boxes": [{"x": k} for k in range(100)]} for i in range(20)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    recounts = []
    original = distributed.cut_array

    def spy(size, first, parts, recount):
        def counted(*args):
            recounts.append(args)
            return recount(*args)
        return original(size, first, parts, counted)

    distributed.cut_array, saved = spy, distributed.cut_array
    try:
        assert check_equal(path, 2000)
    finally:
        distributed.cut_array = saved
    assert recounts  # some guesses were wrong, and were repaired, not folded


def test_a_guess_inside_a_nested_list_is_rejected(tmp_path):
    rec = {"id": "a", "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}
    path = tmp_path / "d.json"
    text = json.dumps([rec, rec])
    path.write_text(text)
    inner = text.index('{"from": "gpt"')
    result = count_array_part(str(path), inner - 2, len(text))  # cut just before the second turn
    assert result.start == text.index('{"id"', 5)  # not the turn: the next record


@pytest.mark.parametrize("broken", ["syntax", "bom", "empty"])
def test_arrays_one_process_must_read_fall_back(tmp_path, broken):
    recs = [{"id": str(i), "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
            for i in range(50)]
    text = json.dumps(recs, indent=1)
    if broken == "syntax":
        text = text.replace('"id": "30"', '"id" "30"')
    elif broken == "bom":
        text = "\ufeff" + text
    else:
        text = "[]"
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    assert distributed.scan_json_array(str(path), None, run=loop, part_bytes=64) is None


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_file_level_findings_of_an_array_survive_the_cut(tmp_path, suffix):
    """An array in a .jsonl file, a trailing comma, duplicate and mixed-type ids: the findings
    made from the whole array come out of the parts as from one process."""
    recs = [{"id": i if i == 7 else f"r{i % 40}", "image": "a.png",
             "conversations": [{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}]}
            for i in range(80)]
    body = ",\n".join(json.dumps(r) for r in recs)
    path = tmp_path / f"data{suffix}"
    path.write_text("[\n" + body + ",\n]\n")
    assert check_equal(path, 300)
    codes = set(scan_dataset(str(path)).problems.counts)
    assert {"DAT004", "DAT015", "DAT016"} <= codes and (suffix == ".json" or "DAT007" in codes), codes


def test_an_array_of_unknown_records_is_left_to_one_process(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": f"t{i}"} for i in range(300)]))
    assert distributed.scan_json_array(str(path), None, run=loop, part_bytes=200) is None
