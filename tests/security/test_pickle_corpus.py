"""The security corpus: malicious pickles built here, in every container and trick the scanner
must see through. Each payload only creates a marker file. The tests in this module prove the
corpus is real: loading each sample the way its victim would (pickle.load, torch.load with
weights_only=False, zipfile + pickle) in a subprocess DOES create its marker. The scanner tests
(test_pickle_scan.py, test_security_checks.py) and benchmarks/pickle_bench.py use the same
builder and prove the scanner flags every sample without ever creating a marker."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from tests.helpers.pickle_corpus import _VICTIM, Sample, build_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def test_every_sample_really_runs_its_payload(corpus: list[Sample]) -> None:
    """Loaded the way its victim loads it, every sample creates its marker: the corpus is not
    a set of harmless look-alikes."""
    jobs = [(str(x.path), x.victim) for x in corpus]
    subprocess.run([sys.executable, "-c", _VICTIM, json.dumps(jobs)], check=True, capture_output=True, timeout=300)
    missing = [x.name for x in corpus if not x.marker.exists()]
    assert not missing, f"these samples did not run their payload when loaded: {missing}"
    for x in corpus:
        x.marker.unlink()


def test_zip_variants_have_the_flags_they_claim(corpus: list[Sample]) -> None:
    by_name = {x.name: x for x in corpus}
    with zipfile.ZipFile(by_name["zip-descriptor"].path) as z:
        assert all(i.flag_bits & 0x08 for i in z.infolist())
    with zipfile.ZipFile(by_name["zip-deflated"].path) as z:
        assert z.infolist()[0].compress_type == zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(by_name["zip-comment"].path) as z:
        assert z.comment
    assert not by_name["zip-prefix-polyglot"].path.read_bytes().startswith(b"PK")

