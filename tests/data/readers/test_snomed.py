"""The SNOMED-CT table, the CinC equivalences, the code-mapping rule and the harmonised space."""

from __future__ import annotations

import re

import pytest

from study.data import snomed
from study.data.snomed import (
    EQUIVALENT,
    HARMONISED,
    HARMONISED_CODES,
    LABEL_SETS,
    SNOMED,
    canonical,
    map_codes,
    parse_codes,
    to_harmonised,
)
from study.errors import DataError

# The CinC 2021 scored list (evaluation-2021 dx_mapping_scored.csv): code -> abbreviation.
CINC2021_SCORED = {
    "164889003": "AF",
    "164890007": "AFL",
    "6374002": "BBB",
    "426627000": "Brady",
    "733534002": "CLBBB",
    "713427006": "CRBBB",
    "270492004": "IAVB",
    "713426002": "IRBBB",
    "39732003": "LAD",
    "445118002": "LAnFB",
    "164909002": "LBBB",
    "251146004": "LQRSV",
    "698252002": "NSIVCB",
    "426783006": "NSR",
    "284470004": "PAC",
    "10370003": "PR",
    "365413008": "PRWP",
    "427172004": "PVC",
    "164947007": "LPR",
    "111975006": "LQT",
    "164917005": "QAb",
    "47665007": "RAD",
    "59118001": "RBBB",
    "427393009": "SA",
    "426177001": "SB",
    "427084000": "STach",
    "63593006": "SVPB",
    "164934002": "TAb",
    "59931005": "TInv",
    "17338001": "VPB",
}


def test_table_holds_every_scored_code_with_its_abbreviation():
    assert {c: SNOMED[c].abbreviation for c in CINC2021_SCORED} == CINC2021_SCORED
    assert {c for c, d in SNOMED.items() if d.scored} == set(CINC2021_SCORED)


@pytest.mark.parametrize(
    "code, abbreviation",
    [
        ("429622005", "STD"),
        ("164931005", "STE"),
        ("164873001", "LVH"),
        ("55827005", "LVHV"),
        ("164884008", "VEB"),
        ("713422000", "ATach"),
        ("426761007", "SVT"),
        ("233897008", "AVRT"),
        ("251166008", "AVNRT"),
        ("233896004", "AVNRT"),
        ("17366009", "SAAWR"),
        ("195101003", "WAP"),
    ],
)
def test_table_unscored_and_chapman_codes(code, abbreviation):
    assert SNOMED[code].abbreviation == abbreviation
    assert SNOMED[code].name


def test_table_rows_are_unique_and_well_formed():
    assert len(snomed._ROWS) == len(SNOMED)  # no code listed twice
    for code, diagnosis in SNOMED.items():
        assert parse_codes(code).codes == (code,)
        assert diagnosis.code == code


@pytest.mark.parametrize(
    "pair",
    [
        ("733534002", "164909002"),
        ("713427006", "59118001"),
        ("284470004", "63593006"),
        ("427172004", "17338001"),
    ],
)
def test_equivalences_map_both_codes_to_one_class(pair):
    first, second = pair
    assert canonical(first) == canonical(second) == first  # CinC: the first is representative
    assert canonical(canonical(second)) == first
    for classes in LABEL_SETS.values():
        assert map_codes([first], classes)[0] == map_codes([second], classes)[0]
    assert len(map_codes([first], HARMONISED_CODES)[0]) >= 1
    assert set(EQUIVALENT) == {"164909002", "59118001", "63593006", "17338001"}


def test_equivalent_codes_land_in_the_named_classes():
    cpsc9 = LABEL_SETS["cpsc9"]
    assert map_codes(["733534002"], cpsc9) == ({"LBBB"}, ())
    assert map_codes(["713427006"], cpsc9) == ({"RBBB"}, ())
    assert map_codes(["63593006"], cpsc9) == ({"PAC"}, ())
    assert map_codes(["17338001"], cpsc9) == ({"PVC"}, ())
    assert map_codes(["164884008"], cpsc9) == ({"PVC"}, ())  # CPSC's PVC in the CinC repack


@pytest.mark.parametrize(
    "field, codes, malformed, duplicates",
    [
        ("", (), (), ()),
        ("   ", (), (), ()),
        ("164889003", ("164889003",), (), ()),
        (" 164889003 , 59118001 ", ("164889003", "59118001"), (), ()),
        (
            "164889003,164889003,59118001,164889003",
            ("164889003", "59118001"),
            (),
            ("164889003", "164889003"),
        ),
        ("164889003,", ("164889003",), ("",), ()),
        (",", (), ("", ""), ()),
        ("AF,164889003", ("164889003",), ("AF",), ()),
        ("1648x9003", (), ("1648x9003",), ()),
        ("-164889003", (), ("-164889003",), ()),
        ("1.6e8", (), ("1.6e8",), ()),
        ("0164889003", (), ("0164889003",), ()),  # SCTIDs never start with 0
        ("12345", (), ("12345",), ()),  # SCTIDs have at least 6 digits
        (["164889003", " 59118001", "x"], ("164889003", "59118001"), ("x",), ()),
    ],
)
def test_parse_codes_counts_malformed_and_duplicates(field, codes, malformed, duplicates):
    parsed = parse_codes(field)
    assert (parsed.codes, parsed.malformed, parsed.duplicates) == (codes, malformed, duplicates)
    assert parsed.counts == {
        "codes": len(codes),
        "malformed": len(malformed),
        "duplicates": len(duplicates),
    }


def test_map_codes_drops_and_returns_codes_outside_the_label_set():
    georgia = LABEL_SETS["georgia10"]
    positive, unmapped = map_codes(["426177001", "164873001", "59118001", "164873001"], georgia)
    assert positive == {"SB"}
    assert unmapped == ("164873001", "59118001")  # once each, in first-seen order


def test_map_codes_never_relabels_to_norm():
    georgia = LABEL_SETS["georgia10"]
    assert map_codes(["164873001"], georgia) == (set(), ("164873001",))  # LVH: no class
    assert map_codes([], georgia) == (set(), ())
    assert map_codes(["426783006"], georgia) == ({"NORM"}, ())  # only sinus rhythm is NORM


def test_map_codes_returns_malformed_codes_unmapped():
    assert map_codes(["abc", "", "164889003"], LABEL_SETS["cpsc9"]) == ({"AF"}, ("abc", ""))


def test_map_codes_one_code_may_select_several_classes():
    positive, unmapped = map_codes(["429622005"], HARMONISED_CODES)
    assert positive == {"STD", "STTC"} and unmapped == ()


def test_map_codes_accepts_a_plain_mapping():
    assert map_codes(["59118001"], {"RBBB": ["713427006"]}) == ({"RBBB"}, ())


def test_label_sets_have_the_documented_classes():
    assert tuple(LABEL_SETS["cpsc9"]) == (
        "NORM",
        "AF",
        "IAVB",
        "LBBB",
        "RBBB",
        "PAC",
        "PVC",
        "STD",
        "STE",
    )
    assert tuple(LABEL_SETS["georgia10"]) == (
        "NORM",
        "AF",
        "IAVB",
        "SB",
        "LAD",
        "STach",
        "TAb",
        "TInv",
        "LQT",
        "PAC",
    )
    assert tuple(LABEL_SETS["rhythm"]) == (
        "SB",
        "SR",
        "AFIB",
        "ST",
        "AF",
        "SI",
        "SVT",
        "AT",
        "AVNRT",
        "AVRT",
        "SAAWR",
    )
    assert tuple(LABEL_SETS["snomed"]) == HARMONISED
    for classes in LABEL_SETS.values():
        for codes in classes.values():
            assert codes and all(c in SNOMED and canonical(c) == c for c in codes)


@pytest.mark.parametrize(
    "code, cls",
    [
        ("426177001", "SB"),
        ("426783006", "SR"),
        ("164889003", "AFIB"),
        ("427084000", "ST"),
        ("164890007", "AF"),
        ("427393009", "SI"),
        ("426761007", "SVT"),
        ("713422000", "AT"),
        ("233896004", "AVNRT"),
        ("251166008", "AVNRT"),
        ("233897008", "AVRT"),
        ("195101003", "SAAWR"),
        ("17366009", "SAAWR"),
    ],
)
def test_rhythm_codes(code, cls):
    assert map_codes([code], LABEL_SETS["rhythm"]) == ({cls}, ())


def test_harmonised_space_covers_the_datasets():
    assert len(set(HARMONISED)) == len(HARMONISED)
    wanted = {
        "NORM",
        "AF",
        "AFL",
        "IAVB",
        "LBBB",
        "RBBB",
        "PAC",
        "PVC",
        "STD",
        "STE",
        "SB",
        "STach",
        "LAD",
        "TAb",
        "TInv",
        "LQT",
        "SA",
        "SVT",
        "AT",
        "AVNRT",
        "AVRT",
        "SAAWR",
        "MI",
        "STTC",
        "CD",
        "HYP",
    }
    assert wanted <= set(HARMONISED)
    for code in CINC2021_SCORED:  # every scored diagnosis has a harmonised class
        assert map_codes([code], HARMONISED_CODES)[0], code


def test_to_harmonised_maps_every_label_set():
    for name, classes in LABEL_SETS.items():
        mapping = to_harmonised(name)
        assert set(mapping) == set(classes)
        assert set(mapping.values()) <= set(HARMONISED)
    assert to_harmonised("snomed") == {c: c for c in HARMONISED}
    assert to_harmonised("rhythm") == {
        "SB": "SB",
        "SR": "NORM",
        "AFIB": "AF",
        "ST": "STach",
        "AF": "AFL",
        "SI": "SA",
        "SVT": "SVT",
        "AT": "AT",
        "AVNRT": "AVNRT",
        "AVRT": "AVRT",
        "SAAWR": "SAAWR",
    }
    assert to_harmonised("cpsc9")["STD"] == "STD"  # the smallest covering class, not STTC


def test_to_harmonised_by_codes():
    assert to_harmonised(
        {"Normal": ["426783006"], "I-AVB": ["270492004"], "CRBBB": ["713427006", "59118001"]}
    ) == {"Normal": "NORM", "I-AVB": "IAVB", "CRBBB": "RBBB"}


@pytest.mark.parametrize(
    "classes, message",
    [
        ({"NORM": ["426783006"], "ALR": ["251139008"]}, "class 'ALR'"),  # arm leads reversed
        ({"AF+ALR": ["164889003", "251139008"]}, "class 'AF+ALR'"),
        ({"EMPTY": []}, "class 'EMPTY' has no SNOMED-CT codes"),
        ("no_such_set", "unknown label set 'no_such_set'"),
    ],
)
def test_to_harmonised_raises_for_a_class_it_cannot_map(classes, message):
    with pytest.raises(DataError, match=re.escape(message)):
        to_harmonised(classes)


def test_to_harmonised_raises_when_two_classes_cover_equally(monkeypatch):
    monkeypatch.setattr(
        snomed, "HARMONISED_CODES", {"X": frozenset({"164889003"}), "Y": frozenset({"164889003"})}
    )
    with pytest.raises(DataError, match="maps equally to harmonised classes X and Y"):
        to_harmonised({"AF": ["164889003"]})
