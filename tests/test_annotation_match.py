"""Slides pair with annotation files by whole-token names (never by substring), with one clear error or
report per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_pipeline.data.annotation_match import names_slide, pair_annotations


@pytest.mark.parametrize(
    ("stem", "slide", "expected"),
    [
        ("S1", "S1", True),
        ("case-S1-gt", "S1", True),
        ("S1_gt", "S1", True),
        ("gt.S1", "S1", True),
        ("case-S10-gt", "S1", False),  # the substring trap of the issue
        ("S10", "S1", False),
        ("xS1", "S1", False),
        ("cric-1a2b-gt", "1a2b", True),
        ("S1 copy", "S1", False),  # a space is not a delimiter
        ("a.b-c", "a.b", True),  # names with delimiters in them still match whole
    ],
)
def test_a_slide_name_must_be_a_whole_token(stem: str, slide: str, expected: bool):
    assert names_slide(stem, slide) is expected


def _files(folder: Path, *names: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("{}")
    return folder


def test_pairs_misses_and_ambiguities_are_reported_per_slide(tmp_path: Path):
    folder = _files(tmp_path / "ann", "S1.geojson", "case-S10-gt.geojson", "S2-a.geojson", "S2-b.geojson", "x.geojson")
    pairing = pair_annotations(["S1", "S10", "S2", "S3"], folder)
    assert pairing.files == {"S1": folder / "S1.geojson", "S10": folder / "case-S10-gt.geojson"}
    assert pairing.problems["S2"].startswith("several annotation files name it: ")
    assert "S2-a.geojson" in pairing.problems["S2"] and "S2-b.geojson" in pairing.problems["S2"]
    assert pairing.problems["S3"].startswith("no annotation file names it")
    assert pairing.unused == [folder / "x.geojson"]


def test_the_longest_slide_name_wins_a_file_that_names_several(tmp_path: Path):
    folder = _files(tmp_path / "ann", "S1-a.geojson", "S1.geojson")
    pairing = pair_annotations(["S1", "S1-a"], folder)
    assert pairing.files == {"S1": folder / "S1.geojson", "S1-a": folder / "S1-a.geojson"}


def test_an_explicit_pattern_replaces_the_rule(tmp_path: Path):
    folder = _files(tmp_path / "ann", "S1-gt.geojson", "S1.geojson")
    pairing = pair_annotations(["S1", "S2"], folder, pattern="{slide}-gt.geojson")
    assert pairing.files == {"S1": folder / "S1-gt.geojson"}
    assert pairing.problems == {"S2": f"no file named S2-gt.geojson in {folder}"}


def test_one_file_is_never_applied_to_every_slide(tmp_path: Path):
    one = _files(tmp_path / "ann", "labels.geojson") / "labels.geojson"
    assert pair_annotations(["anything"], one).files == {"anything": one}  # one slide, one file: paired
    with pytest.raises(ValueError, match=r"labels\.geojson: one annotation file for 2 slides, and it names none"):
        pair_annotations(["S1", "S2"], one)
    named = _files(tmp_path / "ann", "S2.geojson") / "S2.geojson"
    pairing = pair_annotations(["S1", "S2"], named)  # it names one of them: that one only
    assert pairing.files == {"S2": named} and "S1" in pairing.problems
