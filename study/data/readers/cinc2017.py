"""PhysioNet/CinC Challenge 2017 (AF classification from a short single-lead ECG): 8,528
AliveCor recordings of 9-61 s at 300 Hz, labelled N (normal), A (AF), O (other rhythm) or
~ (too noisy).

Layout of the root::

    REFERENCE.csv          no header; one row per record: A00001,N
    training/A00001.hea    WFDB header: "A00001.mat 16+24 1000/mV 16 0 ... ECG"
    training/A00001.mat    MATLAB v4 file, variable `val` (the WFDB signal after 24 bytes)

PhysioNet's own tree keeps the records in training/A00/ ... training/A08/ and the final
labels in REFERENCE-v3.csv at the top; both work: records are looked up in training/ and one
folder below it, and `reference` names the label file to use. The recordings carry no patient
identifiers, so `patient_id` is the record id (a patient may have several records).

Label sets (all single-label: one letter per record):

- cinc2017: the challenge's four classes N, A, O, ~ (Weimann & Conrad fine-tune on these).
- af_normal: AF against normal sinus rhythm, classes ("N", "A"); records labelled O or ~ have
  no class of the set and are dropped as unlabelled. For Huerta et al.'s binary AF detector
  (AlexNet on CWT scalograms, CinC 2020).
- af_other: AF against every other record, classes ("non_A", "A"); N, O and ~ all map to
  non_A, so no record is dropped.

The positive class comes second in both binary sets, as the evaluation expects of a binary
task (sensitivity, specificity, accuracy of A).

Verified: the letters and their meaning (the challenge's REFERENCE files); each set maps
them exactly as stated above (tests/data/readers/test_cinc2017.py). Not verified: which
classes Huerta et al. took from CinC 2017. Their paper could not be read from here (neither
the CinC 2020 paper nor their Entropy 2020 paper turned up in the sources we could search),
so whether they trained on AF vs normal rhythm only or on AF vs all other recordings is
open. af_normal (N and A recordings only) is our choice for experiments/huerta_2020.yaml;
af_other keeps the other reading one word away in a spec.
"""

from __future__ import annotations

from pathlib import Path

from study.data.readers._base import (
    READERS,
    BadRecord,
    DatasetReader,
    Record,
    Signal,
    check_signal,
)
from study.data.readers.ptbxl import list_folder, read_wfdb
from study.errors import DataError

__all__ = ["Cinc2017Reader"]

FS = 300.0
LEADS = ("ECG",)  # the single AliveCor lead, named as in the headers
CLASSES = ("N", "A", "O", "~")
# Label set -> the class of each reference letter; a letter a set does not map gives the
# record no class of that set (dropped as unlabelled). Binary sets put the positive (AF)
# class second. Why two binary sets: module docstring.
_LETTER_TO_CLASS: dict[str, dict[str, str]] = {
    "cinc2017": {c: c for c in CLASSES},
    "af_normal": {"N": "N", "A": "A"},
    "af_other": {"N": "non_A", "O": "non_A", "~": "non_A", "A": "A"},
}


@READERS.register(name="cinc2017")
class Cinc2017Reader(DatasetReader):
    """CinC 2017: one record per row of the reference file, one class per record.

    Label sets: cinc2017 (N, A, O, ~), af_normal (N, A; O and ~ records dropped) and
    af_other (non_A, A); see the module docstring for what each is for.

    Records come in the reference file's order with `labels` the reference's letter and
    `meta["file"]` the header's path under the root. A row whose record is not on disk, or
    whose letter is not one of N, A, O, ~, is still listed with the reason in
    `meta["problem"]` (no labels for an unknown letter); `read` raises BadRecord with it, and
    `listing_problems` holds one BadRecord per such row after `records()`.

    Args:
        root: the dataset folder.
        reference: the label file, relative to the root (e.g. "REFERENCE-v3.csv").
        records_dir: the folder of the records, relative to the root.

    Raises:
        DataError: no records folder, no reference file (never an empty reader), or a
            reference file that is empty, has rows that are not `record,letter`, or lists
            a record twice.
    """

    name = "cinc2017"
    source = "https://physionet.org/content/challenge-2017/1.0.0/"
    licence = "ODC-By-1.0"
    label_sets = {
        "cinc2017": CLASSES,
        "af_normal": ("N", "A"),
        "af_other": ("non_A", "A"),
    }
    label_kinds = dict.fromkeys(label_sets, "single_label")  # one letter per record
    split_by = "record"
    split_basis = "CinC 2017 publishes no patient ids"

    def __init__(
        self, root: str | Path, reference: str = "REFERENCE.csv", records_dir: str = "training"
    ) -> None:
        self.reference = str(reference)
        self.records_dir = str(records_dir)
        self.listing_problems: list[BadRecord] = []
        super().__init__(root)

    def _check_layout(self) -> None:
        folder = self.root / self.records_dir
        if not folder.is_dir():
            raise DataError(
                f"cinc2017: {self.root} is not a CinC 2017 folder: expected {self.records_dir}/ "
                f"with A00001.hea/.mat ... and {self.reference}; found {list_folder(self.root)}"
            )
        path = self.root / self.reference
        if not path.is_file():
            found = sorted(
                str(p.relative_to(self.root))
                for p in [*self.root.glob("*.csv"), *folder.glob("*.csv")]
            )
            raise DataError(
                f"cinc2017: the labels file {path} is missing (rows 'A00001,N', no header); "
                f"CSV files found: {found or 'none'}; pass reference=<path relative to the "
                f"root> to use another"
            )
        self._reference = self._parse_reference(path)

    @staticmethod
    def _parse_reference(path: Path) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        seen: set[str] = set()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 2 or not fields[0]:
                raise DataError(
                    f"cinc2017: line {n} of {path} must be 'record,label' (e.g. A00001,N), "
                    f"got {line!r}"
                )
            if fields[0] in seen:
                raise DataError(f"cinc2017: {path} lists record {fields[0]} twice (line {n})")
            seen.add(fields[0])
            rows.append((fields[0], fields[1]))
        if not rows:
            raise DataError(f"cinc2017: {path} must list at least one record, got none")
        return rows

    def _headers_on_disk(self) -> dict[str, Path]:
        """Record name -> header path, in records_dir and one folder below (A00/ ...)."""
        folder = self.root / self.records_dir
        found: dict[str, Path] = {}
        for hea in sorted([*folder.glob("*.hea"), *folder.glob("*/*.hea")]):
            found.setdefault(hea.stem, hea)
        return found

    def records(self) -> list[Record]:
        """One record per row of the reference file (see the class docstring)."""
        self.listing_problems = []
        on_disk = self._headers_on_disk()
        out = []
        for rid, letter in self._reference:
            hea = on_disk.get(rid)
            meta: dict = {"label": letter}
            problems = []
            if hea is None:
                problems.append(f"listed in {self.reference} but {rid}.hea is not on disk")
            elif not hea.with_suffix(".mat").is_file():
                problems.append(f"listed in {self.reference} but {rid}.mat is not on disk")
            else:
                meta["file"] = str(hea.relative_to(self.root).with_suffix(""))
            if letter not in CLASSES:
                problems.append(
                    f"unknown label {letter!r} in {self.reference} (known: {list(CLASSES)})"
                )
            if problems:
                meta["problem"] = "; ".join(problems)
                self.listing_problems.append(BadRecord(rid, meta["problem"]))
            labels = (letter,) if letter in CLASSES else ()
            out.append(Record(rid, rid, labels, FS, None, LEADS, meta=meta))
        return out

    def classes_of(self, record: Record, label_set: str) -> set[str]:
        """The record's one class in `label_set`: empty for an unknown letter, and for a
        letter the set leaves out (O and ~ in af_normal).

        Raises:
            ConfigError: an unknown label set.
        """
        self.check_label_set(label_set)
        mapping = _LETTER_TO_CLASS[label_set]
        return {mapping[c] for c in record.labels if c in mapping}

    def read(self, record: Record) -> Signal:
        """The single lead in mV at 300 Hz.

        Raises:
            BadRecord: a listing problem (missing on disk, unknown label), a truncated or
                unreadable file, another sampling rate, a lead set other than one "ECG" lead,
                NaN samples, a flat signal.
        """
        rid = record.record_id
        if record.meta.get("problem"):
            raise BadRecord(rid, record.meta["problem"])
        if "file" not in record.meta:
            raise BadRecord(rid, "record has no file (list it with records())")
        sig, promised = read_wfdb(rid, self.root / record.meta["file"], expect_fs=FS)
        if sig.lead_names != LEADS:
            raise BadRecord(
                rid, f"leads {list(sig.lead_names)}, expected the single lead {list(LEADS)}"
            )
        return check_signal(rid, sig, expect_fs=FS, expect_leads=LEADS, expect_samples=promised)
