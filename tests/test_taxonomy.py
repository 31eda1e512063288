import pytest

from wsi_pipeline.taxonomy import (
    BY_ID,
    CLASS_CODES,
    LabelKind,
    LabelTally,
    lesion_class,
    resolve_label,
)


def test_classes_have_stable_ids_and_colours():
    assert CLASS_CODES == ("ASC-US", "LSIL", "HSIL", "AGC")
    assert [BY_ID[i].code for i in (1, 2, 3, 4)] == list(CLASS_CODES)
    assert len({c.color for c in BY_ID.values()}) == 4


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("ASCUS", "ASC-US"),
        ("asc-us", "ASC-US"),
        ("Atypical squamous cells of undetermined significance", "ASC-US"),
        ("Low-grade squamous intraepithelial lesion", "LSIL"),
        ("LGSIL", "LSIL"),
        ("koilocyte", "LSIL"),
        ("High grade squamous intraepithelial lesion", "HSIL"),
        ("CIN 2/3", "HSIL"),
        ("AGUS", "AGC"),
        ("Atypical glandular cells", "AGC"),
    ],
)
def test_common_spellings_map_to_classes(name, code):
    match = resolve_label(name)
    assert match.kind is LabelKind.LESION and match.lesion is not None and match.lesion.code == code


def test_non_target_and_unknown_names_are_counted_not_dropped():
    tally = LabelTally()
    labels = ["LSIL", "Negative for intraepithelial lesion", "ASC-H", "LSIL", "blob", "SCC"]
    mapped = [tally.resolve(n) for n in labels]
    assert [m.code if m else None for m in mapped] == ["LSIL", None, None, "LSIL", None, None]
    assert tally.mapped == {"LSIL": 2}
    assert tally.other == {"Negative for intraepithelial lesion": 1, "ASC-H": 1, "SCC": 1}
    assert tally.unknown == {"blob": 1}
    assert tally.summary() == (
        "mapped LSIL=2; not detector classes: ASC-H=1, Negative for intraepithelial lesion=1, SCC=1; unknown: blob=1"
    )


def test_strict_lookup_names_the_choices():
    assert lesion_class("hsil").id == 3
    with pytest.raises(ValueError, match=r"unknown lesion class 'ASC-H'; expected one of ASC-US, LSIL, HSIL, AGC"):
        lesion_class("ASC-H")
