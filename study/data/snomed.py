"""SNOMED-CT diagnosis codes of the PhysioNet/CinC 2020/2021 challenges, in one table.

The table (`SNOMED`) holds every code of the CinC 2021 scored and unscored lists
(physionetchallenges/evaluation-2021: dx_mapping_scored.csv, dx_mapping_unscored.csv) with
the challenge's abbreviation and full name, plus the few codes that only the PhysioNet
ecg-arrhythmia release (Chapman-Shaoxing/Ningbo, ConditionNames_SNOMED-CT.csv) uses.

Label sets name classes by a set of codes. The rule for turning a record's codes into
classes is `map_codes`:

- each code is first replaced by its canonical code (the CinC equivalences below), then
- a class is positive when one of its codes is present,
- codes that belong to no class are dropped from the label vector and returned, so the
  caller can count them; malformed codes are never mapped and come back the same way,
- a record whose codes map to no class has no positive class. Nothing is inferred: NORM
  is positive only when sinus rhythm (426783006) is among the codes.

`HARMONISED` is one label space across the datasets the studies use (PTB-XL superclasses,
CPSC 2018, Georgia, Chapman): the 26 CinC 2021 scored classes, the rhythm classes of
Chapman, STD/STE of CPSC 2018, LVH, and the four PTB-XL diagnostic superclasses (MI, STTC,
CD, HYP) as unions of codes. Classes may overlap (STD is also STTC): it is a multi-label
space. `to_harmonised` maps a dataset's classes into it and raises for any class it cannot
place, so a downstream head never drops a class silently.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from study.errors import DataError

__all__ = [
    "Diagnosis",
    "SNOMED",
    "EQUIVALENT",
    "canonical",
    "ParsedCodes",
    "parse_codes",
    "map_codes",
    "HARMONISED",
    "HARMONISED_CODES",
    "LABEL_SETS",
    "to_harmonised",
]


@dataclass(frozen=True)
class Diagnosis:
    """One row of the table."""

    code: str
    abbreviation: str
    name: str
    scored: bool  # on the CinC 2021 scored list
    source: str  # the table the row comes from


_CINC = "CinC 2021 dx_mapping"
_EA = "ecg-arrhythmia ConditionNames_SNOMED-CT"

# (code, abbreviation, full name, scored in CinC 2021, source), as in the source tables.
_ROWS: tuple[tuple[str, str, str, bool, str], ...] = (
    # CinC 2021 scored (dx_mapping_scored.csv)
    ("164889003", "AF", "atrial fibrillation", True, _CINC),
    ("164890007", "AFL", "atrial flutter", True, _CINC),
    ("6374002", "BBB", "bundle branch block", True, _CINC),
    ("426627000", "Brady", "bradycardia", True, _CINC),
    ("733534002", "CLBBB", "complete left bundle branch block", True, _CINC),
    ("713427006", "CRBBB", "complete right bundle branch block", True, _CINC),
    ("270492004", "IAVB", "1st degree av block", True, _CINC),
    ("713426002", "IRBBB", "incomplete right bundle branch block", True, _CINC),
    ("39732003", "LAD", "left axis deviation", True, _CINC),
    ("445118002", "LAnFB", "left anterior fascicular block", True, _CINC),
    ("164909002", "LBBB", "left bundle branch block", True, _CINC),
    ("164947007", "LPR", "prolonged pr interval", True, _CINC),
    ("251146004", "LQRSV", "low qrs voltages", True, _CINC),
    ("111975006", "LQT", "prolonged qt interval", True, _CINC),
    ("698252002", "NSIVCB", "nonspecific intraventricular conduction disorder", True, _CINC),
    ("426783006", "NSR", "sinus rhythm", True, _CINC),
    ("284470004", "PAC", "premature atrial contraction", True, _CINC),
    ("10370003", "PR", "pacing rhythm", True, _CINC),
    ("365413008", "PRWP", "poor R wave Progression", True, _CINC),
    ("427172004", "PVC", "premature ventricular contractions", True, _CINC),
    ("164917005", "QAb", "qwave abnormal", True, _CINC),
    ("47665007", "RAD", "right axis deviation", True, _CINC),
    ("59118001", "RBBB", "right bundle branch block", True, _CINC),
    ("427393009", "SA", "sinus arrhythmia", True, _CINC),
    ("426177001", "SB", "sinus bradycardia", True, _CINC),
    ("427084000", "STach", "sinus tachycardia", True, _CINC),
    ("63593006", "SVPB", "supraventricular premature beats", True, _CINC),
    ("164934002", "TAb", "t wave abnormal", True, _CINC),
    ("59931005", "TInv", "t wave inversion", True, _CINC),
    ("17338001", "VPB", "ventricular premature beats", True, _CINC),
    # CinC 2021 unscored (dx_mapping_unscored.csv)
    ("233892002", "AAR", "accelerated atrial escape rhythm", False, _CINC),
    ("251173003", "AB", "atrial bigeminy", False, _CINC),
    ("164951009", "abQRS", "abnormal QRS", False, _CINC),
    ("251187003", "AED", "atrial escape beat", False, _CINC),
    ("195080001", "AFAFL", "atrial fibrillation and flutter", False, _CINC),
    ("195126007", "AH", "atrial hypertrophy", False, _CINC),
    ("61277005", "AIVR", "accelerated idioventricular rhythm", False, _CINC),
    ("426664006", "AJR", "accelerated junctional rhythm", False, _CINC),
    ("251139008", "ALR", "suspect arm ecg leads reversed", False, _CINC),
    ("57054005", "AMI", "acute myocardial infarction", False, _CINC),
    ("413444003", "AMIs", "acute myocardial ischemia", False, _CINC),
    ("54329005", "AnMI", "anterior myocardial infarction", False, _CINC),
    ("426434006", "AnMIs", "anterior ischemia", False, _CINC),
    ("251268003", "AP", "atrial pacing pattern", False, _CINC),
    ("106068003", "ARH", "atrial rhythm", False, _CINC),
    ("713422000", "ATach", "atrial tachycardia", False, _CINC),
    ("233917008", "AVB", "av block", False, _CINC),
    ("50799005", "AVD", "atrioventricular dissociation", False, _CINC),
    ("29320008", "AVJR", "atrioventricular junctional rhythm", False, _CINC),
    ("251166008", "AVNRT", "atrioventricular node reentrant tachycardia", False, _CINC),
    ("233897008", "AVRT", "atrioventricular reentrant tachycardia", False, _CINC),
    ("251170000", "BPAC", "blocked premature atrial contraction", False, _CINC),
    ("418818005", "BRU", "brugada", False, _CINC),
    ("74615001", "BTS", "brady tachy syndrome", False, _CINC),
    ("426749004", "CAF", "chronic atrial fibrillation", False, _CINC),
    ("251199005", "CCR", "countercolockwise rotation", False, _CINC),
    ("698247007", "CD", "cardiac dysrhythmia", False, _CINC),
    ("27885002", "CHB", "complete heart block", False, _CINC),
    ("53741008", "CHD", "coronary heart disease", False, _CINC),
    ("204384007", "CIAHB", "congenital incomplete atrioventricular heart block", False, _CINC),
    ("413844008", "CMI", "chronic myocardial ischemia", False, _CINC),
    ("251198002", "CR", "clockwise rotation", False, _CINC),
    (
        "61721007",
        "CVCL/CCVCL",
        "clockwise or counterclockwise vectorcardiographic loop",
        False,
        _CINC,
    ),
    ("82226007", "DIB", "diffuse intraventricular block", False, _CINC),
    ("428417006", "ERe", "early repolarization", False, _CINC),
    ("13640000", "FB", "fusion beats", False, _CINC),
    ("164942001", "FQRS", "fqrs wave", False, _CINC),
    ("84114007", "HF", "heart failure", False, _CINC),
    ("251259000", "HTV", "high t-voltage", False, _CINC),
    ("368009", "HVD", "heart valve disorder", False, _CINC),
    ("251200008", "ICA", "indeterminate cardiac axis", False, _CINC),
    ("195042002", "IIAVB", "2nd degree av block", False, _CINC),
    ("426183003", "IIAVBII", "mobitz type II atrioventricular block", False, _CINC),
    ("425419005", "IIs", "inferior ischaemia", False, _CINC),
    ("251120003", "ILBBB", "incomplete left bundle branch block", False, _CINC),
    ("49260003", "IR", "idioventricular rhythm", False, _CINC),
    ("704997005", "ISTD", "inferior ST segment depression", False, _CINC),
    ("426995002", "JE", "junctional escape", False, _CINC),
    ("251164006", "JPC", "junctional premature complex", False, _CINC),
    ("426648003", "JTach", "junctional tachycardia", False, _CINC),
    ("253352002", "LAA", "left atrial abnormality", False, _CINC),
    ("67741000119109", "LAE", "left atrial enlargement", False, _CINC),
    ("446813000", "LAH", "left atrial hypertrophy", False, _CINC),
    ("425623009", "LIs", "lateral ischaemia", False, _CINC),
    ("445211001", "LPFB", "left posterior fascicular block", False, _CINC),
    ("164873001", "LVH", "left ventricular hypertrophy", False, _CINC),
    ("55827005", "LVHV", "left ventricular high voltage", False, _CINC),
    ("370365005", "LVS", "left ventricular strain", False, _CINC),
    ("164865005", "MI", "myocardial infarction", False, _CINC),
    ("164861001", "MIs", "myocardial ischemia", False, _CINC),
    ("54016002", "MoI", "mobitz type i wenckebach atrioventricular block", False, _CINC),
    ("428750005", "NSSTTA", "nonspecific st t abnormality", False, _CINC),
    ("164867002", "OldMI", "old myocardial infarction", False, _CINC),
    ("282825002", "PAF", "paroxysmal atrial fibrillation", False, _CINC),
    ("251205003", "PPW", "prolonged P wave", False, _CINC),
    ("67198005", "PSVT", "paroxysmal supraventricular tachycardia", False, _CINC),
    ("425856008", "PVT", "paroxysmal ventricular tachycardia", False, _CINC),
    ("164912004", "PWC", "p wave change", False, _CINC),
    ("253339007", "RAAb", "right atrial abnormality", False, _CINC),
    ("164921003", "RAb", "r wave abnormal", False, _CINC),
    ("314208002", "RAF", "rapid atrial fibrillation", False, _CINC),
    ("446358003", "RAH", "right atrial hypertrophy", False, _CINC),
    ("67751000119106", "RAHV", "right atrial high voltage", False, _CINC),
    ("89792004", "RVH", "right ventricular hypertrophy", False, _CINC),
    ("17366009", "SAAWR", "sinus atrium to atrial wandering rhythm", False, _CINC),
    ("65778007", "SAB", "sinoatrial block", False, _CINC),
    ("5609005", "SARR", "sinus arrest", False, _CINC),
    ("60423000", "SND", "sinus node dysfunction", False, _CINC),
    ("49578007", "SPRI", "shortened pr interval", False, _CINC),
    ("77867006", "SQT", "decreased qt interval", False, _CINC),
    ("55930002", "STC", "s t changes", False, _CINC),
    ("429622005", "STD", "st depression", False, _CINC),
    ("164931005", "STE", "st elevation", False, _CINC),
    ("164930006", "STIAb", "st interval abnormal", False, _CINC),
    ("251168009", "SVB", "supraventricular bigeminy", False, _CINC),
    ("426761007", "SVT", "supraventricular tachycardia", False, _CINC),
    ("266257000", "TIA", "transient ischemic attack", False, _CINC),
    ("251223006", "TPW", "tall p wave", False, _CINC),
    ("164937009", "UAb", "u wave abnormal", False, _CINC),
    ("11157007", "VBig", "ventricular bigeminy", False, _CINC),
    ("164884008", "VEB", "ventricular ectopics", False, _CINC),
    ("75532003", "VEsB", "ventricular escape beat", False, _CINC),
    ("81898007", "VEsR", "ventricular escape rhythm", False, _CINC),
    ("164896001", "VF", "ventricular fibrillation", False, _CINC),
    ("111288001", "VFL", "ventricular flutter", False, _CINC),
    ("266249003", "VH", "ventricular hypertrophy", False, _CINC),
    ("195060002", "VPEx", "ventricular pre excitation", False, _CINC),
    ("251266004", "VPP", "ventricular pacing pattern", False, _CINC),
    ("251182009", "VPVC", "paired ventricular premature complexes", False, _CINC),
    ("164895002", "VTach", "ventricular tachycardia", False, _CINC),
    ("251180001", "VTrig", "ventricular trigeminy", False, _CINC),
    # Chapman and Georgia use 195101003: CinC names it "wandering atrial pacemaker",
    # ecg-arrhythmia "sinus atrium to atrial wandering rhythm" (SAAWR).
    ("195101003", "WAP", "wandering atrial pacemaker", False, _CINC),
    ("74390002", "WPW", "wolff parkinson white pattern", False, _CINC),
    # Only in the ecg-arrhythmia release (its acronyms); CinC codes these differently.
    ("233896004", "AVNRT", "atrioventricular node reentrant tachycardia", False, _EA),
    ("28189009", "2AVB2", "2 degree atrioventricular block (type two)", False, _EA),
    ("251148003", "LVQRSCL", "lower voltage QRS in chest lead", False, _EA),
    ("251147008", "LVQRSLL", "lower voltage QRS in limb lead", False, _EA),
)

SNOMED: Mapping[str, Diagnosis] = MappingProxyType(
    {code: Diagnosis(code, abbr, name, scored, src) for code, abbr, name, scored, src in _ROWS}
)

# CinC scores each pair as one diagnosis; the first code of its pair is the representative
# (evaluation-2021 evaluate_model.py: equivalent_classes, "use the first class").
EQUIVALENT: Mapping[str, str] = MappingProxyType(
    {
        "164909002": "733534002",  # LBBB -> CLBBB
        "59118001": "713427006",  # RBBB -> CRBBB
        "63593006": "284470004",  # SVPB -> PAC
        "17338001": "427172004",  # VPB -> PVC
    }
)

# SNOMED-CT identifiers are 6 to 18 digits without a leading zero.
_SCTID = re.compile(r"[1-9][0-9]{5,17}")


def canonical(code: str) -> str:
    """The representative code of `code`'s CinC equivalence pair (the code itself if none)."""
    return EQUIVALENT.get(code, code)


@dataclass(frozen=True)
class ParsedCodes:
    """A record's diagnosis field split into well-formed codes and what was wrong with it."""

    codes: tuple[str, ...]  # well-formed, first occurrence only, in the order given
    malformed: tuple[str, ...]  # entries that are not SNOMED-CT identifiers (empty included)
    duplicates: tuple[str, ...]  # repeats of a code already listed (one entry per repeat)

    @property
    def counts(self) -> dict[str, int]:
        """How many codes, malformed entries and duplicates the field had."""
        return {
            "codes": len(self.codes),
            "malformed": len(self.malformed),
            "duplicates": len(self.duplicates),
        }


def parse_codes(field: str | Iterable[str]) -> ParsedCodes:
    """Split a diagnosis field ("164889003,59118001") into codes; never raises on bad entries.

    Entries are separated by commas and stripped. An entry that is not 6 to 18 digits
    (empty, letters, signs, decimals) is malformed; a code seen before is a duplicate. Both
    are returned for counting, and neither enters `codes`. A field that is blank as a whole
    has no codes and no malformed entry.

    Args:
        field: the text after "Dx:", or the entries already split.
    """
    if isinstance(field, str):
        entries = [] if not field.strip() else field.split(",")
    else:
        entries = list(field)
    codes: list[str] = []
    malformed: list[str] = []
    duplicates: list[str] = []
    seen: set[str] = set()
    for raw in entries:
        entry = str(raw).strip()
        if not _SCTID.fullmatch(entry):
            malformed.append(entry)
        elif entry in seen:
            duplicates.append(entry)
        else:
            seen.add(entry)
            codes.append(entry)
    return ParsedCodes(tuple(codes), tuple(malformed), tuple(duplicates))


def map_codes(
    codes: Iterable[str], classes: Mapping[str, Collection[str]]
) -> tuple[set[str], tuple[str, ...]]:
    """The classes a record's codes give, and the codes that map to no class.

    Each code is replaced by its canonical code (`EQUIVALENT`) and each class's codes are
    too, so either code of a pair selects the class. A code may make several classes
    positive (STD and STTC). A code that selects no class, or is malformed, is dropped from
    the label vector and returned in `unmapped` (once, in first-seen order) for the caller
    to count. No class is inferred from the absence of codes: a record whose codes map to
    nothing has an empty class set, never NORM.

    Args:
        codes: the record's SNOMED-CT codes as strings.
        classes: class name -> the codes that make it positive (a `LABEL_SETS` entry).

    Returns:
        (positive classes, unmapped codes).
    """
    index: dict[str, list[str]] = {}
    for name, class_codes in classes.items():
        for code in class_codes:
            index.setdefault(canonical(str(code).strip()), []).append(name)
    positive: set[str] = set()
    unmapped: list[str] = []
    for raw in codes:
        code = str(raw).strip()
        hits = index.get(canonical(code)) if _SCTID.fullmatch(code) else None
        if hits:
            positive.update(hits)
        elif code not in unmapped:
            unmapped.append(code)
    return positive, tuple(unmapped)


def _label_set(**classes: Collection[str]) -> Mapping[str, frozenset[str]]:
    """A label set with canonical codes; every code must be in the table."""
    for name, codes in classes.items():
        for code in codes:
            if code not in SNOMED:
                raise DataError(f"label set class {name}: code {code} is not in the table")
    return MappingProxyType(
        {name: frozenset(canonical(c) for c in codes) for name, codes in classes.items()}
    )


# The harmonised space: class -> codes. The classes are the CinC abbreviations (the four
# equivalence pairs under their common names LBBB, RBBB, PAC, PVC; NSR as NORM).
HARMONISED_CODES: Mapping[str, frozenset[str]] = _label_set(
    NORM=["426783006"],  # sinus rhythm only: never inferred from an absence of codes
    # rhythm
    AF=["164889003", "426749004", "282825002", "314208002"],  # AF, chronic, paroxysmal, rapid
    AFL=["164890007"],
    Brady=["426627000"],
    SB=["426177001"],
    STach=["427084000"],
    SA=["427393009"],  # Chapman's "sinus irregularity" (SI)
    SVT=["426761007"],
    AT=["713422000"],
    AVNRT=["251166008", "233896004"],  # CinC code, ecg-arrhythmia code
    AVRT=["233897008"],
    SAAWR=["17366009", "195101003"],  # CinC SAAWR; 195101003 WAP, ecg-arrhythmia's SAAWR
    PR=["10370003"],
    # ectopy
    PAC=["284470004", "63593006"],
    PVC=["427172004", "17338001", "164884008"],  # + ventricular ectopics: CPSC's PVC in CinC
    # conduction
    IAVB=["270492004"],
    LPR=["164947007"],
    BBB=["6374002"],
    LBBB=["733534002", "164909002"],
    RBBB=["713427006", "59118001"],
    IRBBB=["713426002"],
    LAnFB=["445118002"],
    NSIVCB=["698252002"],
    # axis, voltage, morphology
    LAD=["39732003"],
    RAD=["47665007"],
    LQRSV=["251146004"],
    PRWP=["365413008"],
    QAb=["164917005"],
    LQT=["111975006"],
    STD=["429622005"],
    STE=["164931005"],
    TAb=["164934002"],
    TInv=["59931005"],
    LVH=["164873001"],
    # PTB-XL diagnostic superclasses as unions of the CinC codes of their statements
    MI=["164865005", "57054005", "54329005", "164867002"],
    STTC=[
        "429622005",
        "164931005",
        "164934002",
        "59931005",
        "111975006",
        "428750005",
        "55930002",
        "164930006",
        "704997005",
        "164861001",
        "426434006",
        "425419005",
        "425623009",
        "413444003",
        "413844008",
    ],
    CD=[
        "270492004",
        "733534002",
        "713427006",
        "713426002",
        "445118002",
        "445211001",
        "698252002",
        "251120003",
        "6374002",
        "82226007",
        "74390002",
        "233917008",
        "195042002",
        "54016002",
        "426183003",
        "28189009",
        "27885002",
    ],
    HYP=[
        "164873001",
        "89792004",
        "266249003",
        "446358003",
        "446813000",
        "67741000119109",
        "253352002",
        "253339007",
        "195126007",
    ],
)
HARMONISED: tuple[str, ...] = tuple(HARMONISED_CODES)

# The label sets the readers offer: name -> (class -> codes), classes in column order.
LABEL_SETS: Mapping[str, Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        # CPSC 2018's nine classes. In the CinC repack PVC is 164884008 (ventricular
        # ectopics: 700 CPSC records), not 427172004.
        "cpsc9": _label_set(
            NORM=["426783006"],
            AF=["164889003"],
            IAVB=["270492004"],
            LBBB=["164909002"],
            RBBB=["59118001"],
            PAC=["284470004"],
            PVC=["427172004", "164884008"],
            STD=["429622005"],
            STE=["164931005"],
        ),
        "georgia10": _label_set(
            NORM=["426783006"],
            AF=["164889003"],
            IAVB=["270492004"],
            SB=["426177001"],
            LAD=["39732003"],
            STach=["427084000"],
            TAb=["164934002"],
            TInv=["59931005"],
            LQT=["111975006"],
            PAC=["284470004"],
        ),
        # Chapman's rhythm classes (Zheng et al. 2020, ecg-arrhythmia acronyms: AF is
        # atrial flutter, AFIB atrial fibrillation, SI sinus irregularity). The CinC 2021
        # repack codes AVNRT and SAAWR differently from ecg-arrhythmia; both are accepted.
        "rhythm": _label_set(
            SB=["426177001"],
            SR=["426783006"],
            AFIB=["164889003"],
            ST=["427084000"],
            AF=["164890007"],
            SI=["427393009"],
            SVT=["426761007"],
            AT=["713422000"],
            AVNRT=["233896004", "251166008"],
            AVRT=["233897008"],
            SAAWR=["195101003", "17366009"],
        ),
        "ptbxl_super": MappingProxyType(
            {c: HARMONISED_CODES[c] for c in ("NORM", "MI", "STTC", "CD", "HYP")}
        ),
        "snomed": HARMONISED_CODES,
    }
)


def to_harmonised(dataset_classes: str | Mapping[str, Collection[str]]) -> dict[str, str]:
    """Map each class of a dataset's label set to its class in `HARMONISED`.

    A dataset class maps to the harmonised class whose codes include all of its (canonical)
    codes; where several do (STD is in STD and in STTC), the one with the fewest codes wins.
    Classes are matched by codes, not names, because names clash across datasets (Chapman's
    AF is atrial flutter).

    Args:
        dataset_classes: a `LABEL_SETS` name, or class name -> SNOMED-CT codes.

    Returns:
        dataset class -> harmonised class, for every dataset class.

    Raises:
        DataError: an unknown label set, a class without codes, a class no harmonised class
            covers, or one two harmonised classes cover equally (each names the class).
    """
    if isinstance(dataset_classes, str):
        if dataset_classes not in LABEL_SETS:
            raise DataError(
                f"unknown label set {dataset_classes!r}; known: {', '.join(LABEL_SETS)}"
            )
        dataset_classes = LABEL_SETS[dataset_classes]
    out: dict[str, str] = {}
    for name, codes in dataset_classes.items():
        wanted = {canonical(str(c).strip()) for c in codes}
        if not wanted:
            raise DataError(f"class {name!r} has no SNOMED-CT codes, so it cannot be harmonised")
        covering = sorted(
            (len(h_codes), h_name)
            for h_name, h_codes in HARMONISED_CODES.items()
            if wanted <= h_codes
        )
        if not covering:
            raise DataError(
                f"class {name!r} (codes {', '.join(sorted(wanted))}) maps to no harmonised "
                f"class; every class must map so that no head drops it"
            )
        if len(covering) > 1 and covering[0][0] == covering[1][0]:
            raise DataError(
                f"class {name!r} maps equally to harmonised classes {covering[0][1]} and "
                f"{covering[1][1]}"
            )
        out[name] = covering[0][1]
    return out
