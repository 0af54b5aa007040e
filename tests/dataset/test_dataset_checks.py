"""DAT0xx / DAT1xx: each check fails on its case, passes on clean data, and (where a fix exists)
the fixed copy no longer has the problem. Datasets come from the shared factory with real
images; "what breaks" is shown with the real loader where one is installed (``json.load``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import doctor
from doctor.findings import Status
from doctor.testing import (
    LLAVA_PROBLEMS,
    MESSAGES_PROBLEMS,
    make_image,
    make_llava_dataset,
    make_messages_dataset,
    planted_records,
)

STRUCTURE = [f"DAT{n:03d}" for n in range(1, 19)] + ["DAT101", "DAT102", "DAT103", "DAT104", "DAT105",
                                                        "DAT110", "DAT111", "DAT112", "DAT113", "DAT114"]


def check(path: Path, **options) -> doctor.report.Report:  # type: ignore[name-defined]
    options.setdefault("images", "none")
    return doctor.check(str(path), select=["DAT"], **options)


def found(report, code: str) -> list:
    return [f for f in report.findings if f.code == code]


def fix(path: Path, unsafe: bool = False, **options) -> Path:
    report = check(path, fix=True, unsafe_fixes=unsafe, **options)
    outcome = next(x for x in report.fixes if x.fixer == "dataset")
    assert outcome.error is None, outcome.error
    return Path(outcome.written[0])


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def rec(i: int, image: str | None = "a.png", turns: list | None = None, **extra) -> dict:
    r: dict = {"id": f"r{i}", **extra}
    if image:
        r["image"] = image
    r["conversations"] = turns if turns is not None else [
        {"from": "human", "value": ("<image>\n" if image else "") + "What is it?"},
        {"from": "gpt", "value": "A cat."}]
    return r


def array(tmp_path: Path, records: list, name: str = "d.json") -> Path:
    make_image(tmp_path / "a.png")
    return write(tmp_path, name, json.dumps(records, indent=2))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    return make_llava_dataset(root, n=6), make_messages_dataset(root, n=4), root


def test_clean_datasets_pass_every_structure_check(clean):
    llava, messages, root = clean
    for path, folder in ((llava, root / "images"), (messages, root)):
        report = check(path, images="decode", image_folder=str(folder))
        assert [f.code for f in report.findings if f.severity.value != "info"] == []
        status = {r.code: r.status for r in report.results}
        assert all(status[c] is Status.PASS for c in STRUCTURE), {c: status[c] for c in STRUCTURE}
        assert status["DAT201"] is Status.PASS and status["DAT301"] is Status.SKIP


def test_factory_llava_problems_each_found_at_their_record(tmp_path):
    problems = [p for p in LLAVA_PROBLEMS if p not in ("trailing-comma", "long-text")]
    path = make_llava_dataset(tmp_path, n=3, problems=problems)
    where = planted_records(3, problems)
    report = check(path, images="decode", image_folder=str(tmp_path / "images"))
    expect = {"missing-image": "DAT201", "no-image-token": "DAT110", "double-image-token": "DAT111",
              "image-token-in-gpt": "DAT113", "bad-role": "DAT101", "first-turn-gpt": "DAT102",
              "empty-value": "DAT104", "non-string-value": "DAT013", "truncated-image": "DAT207",
              "not-an-image": "DAT205", "path-escape": "DAT209", "absolute-path": "DAT209",
              "duplicate-id": "DAT015"}
    for problem, code in expect.items():
        records = {f.location.record for f in found(report, code)}
        assert where[problem] in records, (problem, code, records)
    bad = {f.location.record for f in report.findings if f.location and f.location.record is not None}
    assert where["text-only-record"] not in bad and where["grayscale-image"] not in bad


def test_factory_messages_problems(tmp_path):
    problems = ["no-image-token", "double-image-token", "bad-role", "first-turn-assistant", "empty-value",
                "missing-image", "not-an-image", "path-escape", "truncated-image"]
    for content in ("list", "string"):
        folder = tmp_path / content
        path = make_messages_dataset(folder, n=2, problems=problems, content=content)
        where = planted_records(2, problems, MESSAGES_PROBLEMS)
        report = check(path, images="decode", image_folder=str(folder))
        for problem, code in {"no-image-token": "DAT110", "double-image-token": "DAT111", "bad-role": "DAT101",
                              "first-turn-assistant": "DAT102", "empty-value": "DAT104", "missing-image": "DAT201",
                              "not-an-image": "DAT205", "path-escape": "DAT209", "truncated-image": "DAT207"}.items():
            assert where[problem] in {f.location.record for f in found(report, code)}, (content, problem)


# ---- file level -------------------------------------------------------------------------------
def test_invalid_json_line_and_column_like_json_load(tmp_path):
    path = write(tmp_path, "d.json", '[\n  {"id": "a", "conversations": []}\n  {"id": "b"}\n]\n')
    with pytest.raises(json.JSONDecodeError) as real:
        json.load(path.open())
    (f,) = found(check(path), "DAT001")
    assert (f.location.line, f.location.column) == (real.value.lineno, real.value.colno) == (3, 3)
    (outcome,) = check(path, fix=True, unsafe_fixes=True).fixes  # DAT014 offers a drop, the fixer refuses:
    assert "line 3, column 3" in outcome.error and not outcome.written  # nothing after the error is readable


def test_invalid_json_lines_dropped_by_unsafe_fix(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    path = write(tmp_path, "d.jsonl", f"{good}\n{{broken\n{good}\n")
    (f,) = found(check(path), "DAT001")
    assert f.location.line == 2 and f.fix.applicability.value == "unsafe"
    out = fix(path, unsafe=True)
    assert [json.loads(x) for x in out.read_text().splitlines()] == [json.loads(good)] * 2
    rejected = [json.loads(x) for x in (tmp_path / "d.rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["line"] == 2 and rejected[0]["reasons"][0].startswith("DAT001")


def test_not_utf8(tmp_path):
    path = write(tmp_path, "d.json", b'[{"id": "caf\xe9", "conversations": []}]')
    with pytest.raises(UnicodeDecodeError):
        json.load(path.open(encoding="utf-8"))
    (f,) = found(check(path), "DAT002")
    assert "0xe9" in f.message and f.location.line == 1


def test_bom_fixed(tmp_path):
    path = write(tmp_path, "d.json", "\ufeff" + json.dumps([rec(0, image=None)]))
    with pytest.raises(json.JSONDecodeError, match="BOM"):
        json.load(path.open(encoding="utf-8"))
    assert found(check(path), "DAT003")
    out = fix(path)
    assert json.load(out.open()) == [rec(0, image=None)] and not found(check(out), "DAT003")


def test_trailing_comma_fixed(tmp_path):
    path = make_llava_dataset(tmp_path, n=2, problems=["trailing-comma"])
    with pytest.raises(json.JSONDecodeError):
        json.load(path.open())
    (f,) = found(check(path), "DAT004")
    assert f.location.line == 3 and f.fix.applicability.value == "safe"
    out = fix(path)
    assert len(json.load(out.open())) == 2 and not found(check(out), "DAT004")


def test_json_lines_in_a_json_file_fixed(tmp_path):
    path = write(tmp_path, "d.json", "".join(json.dumps(rec(i, image=None)) + "\n" for i in range(3)))
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        json.load(path.open())
    assert found(check(path), "DAT005")
    out = fix(path)
    assert [r["id"] for r in json.load(out.open())] == ["r0", "r1", "r2"] and not found(check(out), "DAT005")


def test_llava_json_lines_noted_and_converted(tmp_path):
    path = make_llava_dataset(tmp_path, n=3, fmt="jsonl")
    (f,) = found(check(path), "DAT006")
    assert f.severity.value == "info"
    out = fix(path)
    assert out.name == "data.fixed.json" and len(json.load(out.open())) == 3


def test_array_in_json_lines_file_fixed(tmp_path):
    path = array(tmp_path, [rec(0), rec(1)], name="d.jsonl")
    with pytest.raises(json.JSONDecodeError):
        [json.loads(line) for line in path.read_text().splitlines()]  # a JSON Lines reader
    assert found(check(path), "DAT007")
    out = fix(path)
    assert out.name == "d.fixed.jsonl" and [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["r0", "r1"]


def test_single_record_and_wrapped_records_fixed(tmp_path):
    one = array(tmp_path, rec(0), name="one.json")
    (f,) = found(check(one), "DAT008")
    assert "one record" in f.message
    assert json.load(fix(one).open()) == [rec(0)]
    wrapped = write(tmp_path, "wrapped.json", json.dumps({"version": 2, "data": [rec(0), rec(1)]}))
    (f,) = found(check(wrapped), "DAT008")
    assert '"data"' in f.message
    assert json.load(fix(wrapped).open()) == [rec(0), rec(1)]
    scalar = write(tmp_path, "scalar.json", "42")
    assert found(check(scalar), "DAT008")


def test_empty_dataset(tmp_path):
    for text in ("[]", "", "  \n"):
        assert found(check(write(tmp_path, "e.json", text)), "DAT009"), text
    assert not found(check(array(tmp_path, [rec(0)])), "DAT009")


def test_nesting_too_deep(tmp_path):
    path = write(tmp_path, "d.json", "[" + json.dumps(rec(0, image=None)) + ", " + "[" * 3000 + "]" * 3000 + "]")
    with pytest.raises(RecursionError):
        json.load(path.open())
    (f,) = found(check(path), "DAT017")
    assert f.location.record == 1


def test_not_one_record_per_line_fixed(tmp_path):
    path = write(tmp_path, "d.jsonl", "".join(json.dumps(rec(i, image=None), indent=2) + "\n" for i in range(2)))
    assert found(check(path), "DAT018")
    out = fix(path)
    assert len(out.read_text().splitlines()) == 2 and not found(check(out), "DAT018")


# ---- records ----------------------------------------------------------------------------------
def test_record_not_object_dropped_by_unsafe_fix(tmp_path):
    path = array(tmp_path, [rec(0), "a.png", None])
    assert [f.location.pointer for f in found(check(path), "DAT010")] == ["/1", "/2"]
    assert json.load(fix(path, unsafe=True).open()) == [rec(0)]


def test_unknown_record_format(tmp_path):
    path = array(tmp_path, [{"question": "q", "answer": "a", "image": "a.png"}])
    (f,) = found(check(path), "DAT011")
    assert '"question"' in f.message


def test_missing_wrong_type_and_empty_fields(tmp_path):
    records = [rec(0, turns=[{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "text": "a"}]),
               rec(1, image=None, turns=[{"from": "human", "value": "q"}, {"from": "gpt", "value": 42}]),
               rec(2, turns=[]), {"id": "r3", "image": None, "conversations": rec(3)["conversations"]},
               {**rec(4), "image": ""}]
    report = check(array(tmp_path, records))
    assert [f.location.pointer for f in found(report, "DAT012")] == ["/0/conversations/1/value"]
    assert {f.location.pointer for f in found(report, "DAT013")} == {"/1/conversations/1/value", "/3/image"}
    assert {f.location.pointer for f in found(report, "DAT014")} == {"/2/conversations", "/4/image"}
    out = fix(array(tmp_path, records), unsafe=True)
    assert json.load(out.open()) == [] and len((tmp_path / "d.rejected.jsonl").read_text().splitlines()) == 5


def test_duplicate_ids_confirmed_and_mixed_types_fixed(tmp_path):
    path = array(tmp_path, [rec(0), rec(1), {**rec(2), "id": "r0"}, {**rec(3), "id": 7}])
    report = check(path)
    (dup,) = found(report, "DAT015")
    assert dup.location.record == 2 and "'r0'" in dup.message and "record 0" in dup.message
    (mixed,) = found(report, "DAT016")
    assert "a number in 1 records" in mixed.message
    out = fix(path)
    assert [r["id"] for r in json.load(out.open())] == ["r0", "r1", "r0", "7"]
    assert not found(check(out), "DAT016")


def test_duplicate_ids_at_scale_are_capped(tmp_path):
    records = [{"id": f"x{i % 100}", "conversations": rec(0, image=None)["conversations"]} for i in range(400)]
    report = check(array(tmp_path, records))
    findings = found(report, "DAT015")
    assert len(findings) == 51 and "250 more records" in findings[-1].message


# ---- conversations ----------------------------------------------------------------------------
def test_roles_fixed_and_unknown_role_dropped(tmp_path):
    alias = rec(0, turns=[{"from": "User", "value": "<image>\nq"}, {"from": "assistant", "value": "a"}])
    unknown = rec(1, turns=[{"from": "system", "value": "be brief"}, {"from": "human", "value": "<image>\nq"},
                            {"from": "gpt", "value": "a"}])
    path = array(tmp_path, [alias, unknown])
    report = check(path)
    fixes = {f.location.pointer: f.fix.applicability.value for f in found(report, "DAT101")}
    assert fixes == {"/0/conversations/0/from": "safe", "/0/conversations/1/from": "safe",
                     "/1/conversations/0/from": "unsafe"}
    out = json.load(fix(path).open())
    assert [t["from"] for t in out[0]["conversations"]] == ["human", "gpt"] and out[1] == unknown
    assert json.load(fix(path, unsafe=True).open()) == [out[0]]


def test_first_turn_dropped_as_llava_does(tmp_path):
    path = make_llava_dataset(tmp_path, n=1, problems=["first-turn-gpt"])
    (f,) = found(check(path, image_folder=str(tmp_path / "images")), "DAT102")
    assert f.severity.value == "warning"
    out = json.load(fix(path).open())
    assert [t["from"] for t in out[1]["conversations"]] == ["human", "gpt"]


def test_roles_not_alternating_and_no_assistant(tmp_path):
    twice = rec(0, turns=[{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"},
                          {"from": "gpt", "value": "b"}])
    lonely = rec(1, turns=[{"from": "human", "value": "<image>\nq"}])
    report = check(array(tmp_path, [twice, lonely, rec(2)]))
    assert [f.location.pointer for f in found(report, "DAT103")] == ["/0/conversations/2/from"]
    assert [f.location.pointer for f in found(report, "DAT105")] == ["/1/conversations"]
    assert [r["id"] for r in json.load(fix(array(tmp_path, [twice, lonely, rec(2)]), unsafe=True).open())] == ["r2"]


def test_empty_turn(tmp_path):
    path = array(tmp_path, [rec(0, turns=[{"from": "human", "value": "<image>\n  "}, {"from": "gpt", "value": "\n"}])])
    assert [f.location.pointer for f in found(check(path), "DAT104")] == ["/0/conversations/1/value"]


def test_image_placeholders_fixed(tmp_path):
    path = make_llava_dataset(tmp_path, n=1, problems=["no-image-token", "double-image-token", "image-token-in-gpt"])
    folder = str(tmp_path / "images")
    report = check(path, image_folder=folder)
    assert len(found(report, "DAT110")) == len(found(report, "DAT111")) == len(found(report, "DAT113")) == 1
    out = fix(path, image_folder=folder)
    for r in json.load(out.open()):
        values = [t["value"] for t in r["conversations"]]
        assert values[0].startswith("<image>\n") and "".join(values).count("<image>") == 1
    assert not {f.code for f in check(out, image_folder=folder).findings} & {"DAT110", "DAT111", "DAT113"}


def test_placeholder_without_image_removed_by_unsafe_fix(tmp_path):
    path = array(tmp_path, [rec(0, image=None, turns=[{"from": "human", "value": "<image>\nq"},
                                                      {"from": "gpt", "value": "a"}])])
    (f,) = found(check(path), "DAT112")
    assert f.fix.applicability.value == "unsafe"
    assert json.load(fix(path, unsafe=True).open())[0]["conversations"][0]["value"] == "q"


def test_multi_image_records_noted_once(tmp_path):
    make_image(tmp_path / "b.png")
    two = rec(0, image=None, turns=[{"from": "human", "value": "<image>\n<image>\nq"}, {"from": "gpt", "value": "a"}])
    two["image"] = ["a.png", "b.png"]
    report = check(array(tmp_path, [two, two, rec(1)]))
    (f,) = found(report, "DAT114")
    assert f.severity.value == "info" and "2 record(s)" in f.message
    assert not found(report, "DAT111")


def test_messages_roles_and_leading_assistant(tmp_path):
    path = make_messages_dataset(tmp_path, n=1, problems=["bad-role", "first-turn-assistant"])
    report = check(path, image_folder=str(tmp_path))
    assert {f.fix.applicability.value for f in found(report, "DAT101")} == {"safe"}
    (lead,) = found(report, "DAT102")
    assert lead.fix.applicability.value == "unsafe"
    out = json.load(fix(path, unsafe=True, image_folder=str(tmp_path)).open())
    assert [m["role"] for m in out[1]["messages"]] == ["user", "assistant"]
    assert [m["role"] for m in out[2]["messages"]] == ["user", "assistant"]


def test_diff_writes_nothing(tmp_path):
    path = make_llava_dataset(tmp_path, n=1, problems=["bad-role"])
    before = sorted(p.name for p in tmp_path.iterdir())
    report = check(path, diff=True, image_folder=str(tmp_path / "images"))
    (outcome,) = report.fixes
    assert '-      "from": "user",' in outcome.diff and '+      "from": "human",' in outcome.diff
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_input_never_modified(tmp_path):
    path = make_llava_dataset(tmp_path, n=2, problems=["bad-role", "trailing-comma"])
    data = path.read_bytes()
    fix(path, unsafe=True, image_folder=str(tmp_path / "images"))
    assert path.read_bytes() == data


def test_schemas_accept_clean_data_and_reject_broken_records(clean):
    jsonschema = pytest.importorskip("jsonschema")
    from importlib.resources import files

    llava, messages, _ = clean
    for name, path in (("llava", llava), ("messages", messages)):
        schema = json.loads((files("doctor.data") / "schemas" / f"{name}.schema.json").read_text())
        jsonschema.validate(json.load(path.open()), schema)
    schema = json.loads((files("doctor.data") / "schemas" / "llava.schema.json").read_text())
    bad = [rec(0, turns=[{"from": "user", "value": "q"}]), {**rec(1), "image": ""}, {"id": "x"}]
    validator = jsonschema.Draft202012Validator(schema)
    assert len(list(validator.iter_errors(bad))) == 3
