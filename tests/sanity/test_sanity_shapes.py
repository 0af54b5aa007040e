"""Stage 2's shapes, from the processor and config alone (no model): each image selects the grid,
tile arrangement or resize it stands for in the installed transformers' own selection code."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from doctor.sanity.shapes import EXTREME, EXTREME_SIDE, MAX_IMAGES, bounded, disagreements, shapes

LLAVA_16 = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # llava-v1.6's pinpoints, [height, width]


def anyres(pinpoints):
    return SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=pinpoints))


def test_llava_next_gets_one_image_per_ratio_and_an_extreme_each_way():
    got = shapes(anyres(LLAVA_16), {"image_grid_pinpoints": LLAVA_16}, "llava_next")
    assert [(s.label, s.size) for s in got] == [
        ("pinpoint [336, 672]", (672, 336)), ("pinpoint [672, 336]", (336, 672)), ("pinpoint [336, 1008]", (1008, 336)),
        ("pinpoint [1008, 336]", (336, 1008)), ("pinpoint [672, 672]", (672, 672)),
        ("very tall", (EXTREME_SIDE, EXTREME_SIDE * EXTREME)), ("very wide", (EXTREME_SIDE * EXTREME, EXTREME_SIDE))]
    assert not any(s.note for s in got)


def test_each_llava_next_image_selects_its_pinpoint_in_transformers():
    pytest.importorskip("transformers")
    from transformers.image_processing_utils import select_best_resolution

    onevision = [[384 * i, 384 * j] for i in range(1, 4) for j in range(1, 4)]
    got = [s for s in shapes(anyres(onevision), {"image_grid_pinpoints": onevision}, "llava_next")
           if s.label.startswith("pinpoint")]
    assert len(got) == 7  # 9 pinpoints, 7 ratios: 1:1 (three sizes) once, at its smallest
    for s in got:
        w, h = s.size
        assert list(select_best_resolution((h, w), onevision)) == [h, w]


def test_pinpoints_only_one_side_knows_get_their_own_image_even_when_their_ratio_is_covered():
    cfg, proc = [[28, 28], [28, 56]], [[28, 28], [28, 56], [56, 56]]
    got = {s.label: s for s in shapes(anyres(proc), {"image_grid_pinpoints": cfg}, "llava_next")}
    assert got["pinpoint [56, 56]"].note == "only in the image processor's image_grid_pinpoints"
    assert "pinpoint [28, 28]" in got and got["pinpoint [28, 28]"].note == ""
    assert disagreements(anyres(proc), {"image_grid_pinpoints": cfg}) == [
        "config.json's image_grid_pinpoints [[28, 28], [28, 56]] vs the image processor's [[28, 28], [28, 56], [56, 56]]"]


def test_mllama_gets_one_image_per_tile_arrangement_that_selects_it():
    pytest.importorskip("transformers")
    import transformers
    from transformers.models.mllama.image_processing_pil_mllama import get_optimal_tiled_canvas

    cls = getattr(transformers, "MllamaImageProcessorPil", None) or transformers.MllamaImageProcessor
    real = cls(size={"height": 560, "width": 560}, max_image_tiles=4)
    ip = SimpleNamespace(max_image_tiles=4, size={"height": 560, "width": 560})
    got = shapes(SimpleNamespace(image_processor=ip), {"vision_config": {"max_num_tiles": 4}}, "mllama")
    assert got == shapes(SimpleNamespace(image_processor=real), {"vision_config": {"max_num_tiles": 4}}, "mllama")
    assert len(got) == 8 and got[0].label == "1x1 tiles" and got[0].size == (560, 560)
    for s in got:
        w, h = s.size
        assert tuple(get_optimal_tiled_canvas(h, w, max_image_tiles=4, tile_size=560)) == (h, w)
    ip.max_image_tiles = 6
    assert disagreements(SimpleNamespace(image_processor=ip), {"vision_config": {"max_num_tiles": 4}}) == [
        "the processor's max_image_tiles is 6, config.json's vision_config.max_num_tiles is 4"]


@pytest.mark.parametrize(("lo", "hi", "side", "square"), [
    (56 * 56, 28 * 28 * 1280, 56, 56),  # Qwen2-VL's defaults: the smallest images keep their ratio
    (256 * 28 * 28, 1280 * 28 * 28, 336, 448),  # a common fine-tuning setting (min 256 tokens)
])
def test_qwen_portrait_square_landscape_stay_within_the_pixel_limits(lo, hi, side, square):
    pytest.importorskip("transformers")
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    as_saved = SimpleNamespace(patch_size=14, merge_size=2, temporal_patch_size=2,
                               size={"shortest_edge": lo, "longest_edge": hi})  # a dict, as in a saved config
    for ip in (cls(min_pixels=lo, max_pixels=hi), as_saved):  # the real one keeps them in a SizeDict
        got = {s.label: s.size for s in shapes(SimpleNamespace(image_processor=ip), {}, "qwen2_vl")}
        assert got == {"portrait": (side, 2 * side), "square": (square, square), "landscape": (2 * side, side)}
    for w, h in got.values():
        assert smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi) == (h, w)  # kept as is: no resize


def test_a_plain_llava_processor_gets_no_extra_images():
    ip = SimpleNamespace(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    assert shapes(SimpleNamespace(image_processor=ip, patch_size=14), {}, "llava") == []


def test_a_long_pinpoint_list_is_bounded_keeping_the_disagreements_and_saying_what_was_left_out():
    onevision = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]  # 36 pinpoints, 23 ratios
    config = {"image_grid_pinpoints": onevision + [[4224, 384]]}  # one the processor does not know
    found = shapes(anyres(onevision), config, "llava_next")
    assert len(found) == 23 + 1 + 2
    run, left = bounded(found)
    assert len(run) == MAX_IMAGES and len(left) == len(found) - MAX_IMAGES
    labels = [sh.label for sh in run]
    assert "pinpoint [4224, 384]" in labels and labels[-2:] == ["very tall", "very wide"]
    assert labels[0] == "pinpoint [384, 384]"  # then the smallest grids first
    assert bounded(found[:5]) == (found[:5], [])
