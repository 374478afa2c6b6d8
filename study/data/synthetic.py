"""Synthetic 12-lead ECG domains: the built-in default data of the quickstart study.

Each beat is a sum of Gaussian waves (P, Q, R, S, T and, where a condition calls for them, R',
ST injury and ectopic complexes) of a three-dimensional heart dipole, after McSharry et al.'s
ECGSYN (IEEE TBME 50(3), 2003), simplified to closed form so that a record is one matrix
product. The dipole is read out through an Einthoven triangle and six precordial electrodes,
and noise is added at the electrodes before the leads are formed, so the leads relate to each
other as real ones do: III = II - I, aVR inverted, rS in V1, R-wave progression across V1-V6,
and noise shared between the leads that share an electrode.

A domain is a population of patients. Each patient has a morphology of their own (axis, wave
amplitudes and widths, PR, QTc, heart rate) and a set of conditions; all records of a patient
share both, which is why splits must be patient-level. Chronic conditions (bundle branch block,
LVH, first-degree AV block) are in every record of the patient, episodic ones (AF, ST change,
rate, ectopy) in each record with probability `episodic_keep`. The size of every effect varies
from patient to patient, so mild cases overlap the normal range.

Labels are derived from the physiology actually rendered: a class is a set of alternative
feature combinations (`CLASS_DEFINITIONS`), so a downstream domain can name a union (``BBB``)
or a conjunction (``AF_RVR`` = AF and tachycardia) of features that upstream domains label
separately. ``NORM`` is positive exactly when no other class of the domain is.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import sqrt

import numpy as np

from study.errors import ConfigError

__all__ = [
    "CLASS_DEFINITIONS",
    "DOMAINS",
    "GENERATOR_VERSION",
    "LEAD_NAMES",
    "SyntheticData",
    "SyntheticDomain",
    "generate",
]

# Enters the prepared-data cache key: bump it whenever a domain's output changes, or caches keep
# serving the old records. (1 was the unversioned work-in-progress generator.)
GENERATOR_VERSION = 2

LEAD_NAMES: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip

# Physiological features a record can carry. Chronic ones persist across a patient's records.
_CHRONIC = frozenset({"rbbb", "lbbb", "lvh", "avb1"})
_EPISODIC = frozenset({"af", "ste", "std", "brady", "tachy", "pvc"})
# Pairs that cannot coexist in one heart at one time (or whose combination would make the
# label ambiguous, like a PR interval without P waves).
_CONFLICTS = (
    frozenset({"rbbb", "lbbb"}),
    frozenset({"ste", "std"}),
    frozenset({"brady", "tachy"}),
    frozenset({"af", "avb1"}),
)

CLASS_DEFINITIONS: dict[str, tuple[frozenset[str], ...]] = {
    # name: alternatives, each a set of features that must all be present.
    "AF": (frozenset({"af"}),),
    "RBBB": (frozenset({"rbbb"}),),
    "LBBB": (frozenset({"lbbb"}),),
    "BBB": (frozenset({"rbbb"}), frozenset({"lbbb"})),
    "STE": (frozenset({"ste"}),),
    "STD": (frozenset({"std"}),),
    "STTC": (frozenset({"ste"}), frozenset({"std"})),
    "BRADY": (frozenset({"brady"}),),
    "TACHY": (frozenset({"tachy"}),),
    "IAVB": (frozenset({"avb1"}),),
    "LVH": (frozenset({"lvh"}),),
    "PVC": (frozenset({"pvc"}),),
    "ECTOPY": (frozenset({"pvc"}),),
    "AF_RVR": (frozenset({"af", "tachy"}),),
    "LVH_STRAIN": (frozenset({"lvh", "std"}),),
}
_NORM = "NORM"

# Heart rates (bpm) outside which brady/tachycardia is labelled; sinus rates without either
# condition are drawn from inside _NORMAL_HR, leaving a small gap so labels are not noise.
_BRADY_BELOW, _TACHY_ABOVE = 55.0, 105.0
_NORMAL_HR = (58.0, 100.0)


@dataclass(frozen=True)
class SyntheticDomain:
    """One synthetic dataset: a patient population, a label set and a recording set-up.

    Attributes:
        name: domain name, also the prefix of every record id.
        classes: label names, each ``NORM`` or a key of `CLASS_DEFINITIONS`.
        prevalence: ``(class, p)`` for every class but ``NORM``: the probability that a
            patient has the condition (episodic ones then appear in a share `episodic_keep`
            of that patient's records).
        n_patients: number of patients.
        records_per_patient: inclusive ``(min, max)`` records per patient, drawn uniformly.
        fs: sampling rate in Hz.
        seconds: record length in seconds.
        lead_names: leads to output, a subset of `LEAD_NAMES` in any order.
        lead_gain: per-lead gain of the output (aligned with `lead_names`), the calibration
            profile of a recorder or its export; None for unit gain. One value for all six
            limb leads keeps Einthoven's law exact.
        gain_spread: log-normal sigma of the per-record gain (half of it again per acquired
            channel), from skin contact and amplifier tolerance.
        noise_std: approximate per-lead standard deviation of white noise, mV.
        baseline_wander: peak amplitude of the low-frequency (0.05-0.5 Hz) wander, mV.
        emg_std: standard deviation of bursty high-frequency muscle noise, mV.
        powerline_hz: mains frequency (aliases when above fs / 2, as in unfiltered data).
        powerline_amp: peak mains interference per lead, mV; 0 disables it.
        hr_mean: population mean sinus rate (bpm) of records without a rate condition.
        episodic_keep: probability that an episodic condition of a patient shows in a record.
        max_labels: most conditions one patient may have.
        label_miss: probability that a finding present in a record goes unlabelled there, as
            annotators miss findings; it keeps the best possible AUROC below 1.
        seed: seed of the whole domain; equal domains give bit-identical data.
    """

    name: str
    classes: tuple[str, ...]
    prevalence: tuple[tuple[str, float], ...]
    n_patients: int
    records_per_patient: tuple[int, int] = (1, 3)
    fs: float = 100.0
    seconds: float = 5.0
    lead_names: tuple[str, ...] = LEAD_NAMES
    lead_gain: tuple[float, ...] | None = None
    gain_spread: float = 0.1
    noise_std: float = 0.02
    baseline_wander: float = 0.1
    emg_std: float = 0.01
    powerline_hz: float = 50.0
    powerline_amp: float = 0.0
    hr_mean: float = 72.0
    episodic_keep: float = 0.75
    max_labels: int = 3
    label_miss: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        known = sorted([_NORM, *CLASS_DEFINITIONS])
        for c in self.classes:
            if c not in known:
                raise ConfigError(f"domain {self.name!r}: unknown class {c!r}; known: {known}")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ConfigError(f"domain {self.name!r}: classes must be unique and non-empty")
        want = {c for c in self.classes if c != _NORM}
        got = [c for c, _ in self.prevalence]
        if sorted(got) != sorted(want):
            raise ConfigError(
                f"domain {self.name!r}: prevalence must name each class but NORM exactly once "
                f"({sorted(want)}), got {got}"
            )
        for c, p in self.prevalence:
            if not 0.0 <= p <= 1.0:
                raise ConfigError(
                    f"domain {self.name!r}: prevalence of {c} must be in [0, 1], got {p!r}"
                )
        lo, hi = self.records_per_patient
        if not 1 <= lo <= hi:
            raise ConfigError(
                f"domain {self.name!r}: records_per_patient must satisfy 1 <= min <= max, "
                f"got {self.records_per_patient}"
            )
        noise_keys = ("gain_spread", "noise_std", "baseline_wander", "emg_std", "powerline_amp")
        for rule, keys, ok in (
            ("> 0", ("n_patients", "fs", "seconds", "max_labels"), lambda v: v > 0),
            (">= 0", noise_keys, lambda v: v >= 0),
            ("in [0, 1]", ("episodic_keep", "label_miss"), lambda v: 0 <= v <= 1),
        ):
            for key in keys:
                if not ok(getattr(self, key)):
                    raise ConfigError(
                        f"domain {self.name!r}: {key} must be {rule}, got {getattr(self, key)!r}"
                    )
        bad = [n for n in self.lead_names if n not in LEAD_NAMES]
        if bad or not self.lead_names:
            raise ConfigError(f"domain {self.name!r}: lead_names must be from {LEAD_NAMES}")
        if self.lead_gain is not None and len(self.lead_gain) != len(self.lead_names):
            raise ConfigError(
                f"domain {self.name!r}: lead_gain needs {len(self.lead_names)} values "
                f"(one per lead), got {len(self.lead_gain)}"
            )

    @property
    def n_leads(self) -> int:
        return len(self.lead_names)

    @property
    def n_samples(self) -> int:
        return int(round(self.fs * self.seconds))


@dataclass(frozen=True)
class SyntheticData:
    """Records of one synthetic domain, in the shape every reader of the project returns.

    Attributes:
        domain: the domain's name.
        signals: float32 (N, n_leads, n_samples), millivolts.
        labels: uint8 multi-hot (N, n_classes), columns in the order of `classes`.
        patient_id: int64 (N,); all records of one patient share it.
        record_id: str (N,), ``f"{domain}-p{patient:05d}-r{k}"``.
        heart_rate: float32 (N,), the mean ventricular rate of the beats in the record, bpm.
        classes: label names.
        lead_names: lead names, in the order of the signal rows.
        fs: sampling rate in Hz.
    """

    domain: str
    signals: np.ndarray
    labels: np.ndarray
    patient_id: np.ndarray
    record_id: np.ndarray
    heart_rate: np.ndarray
    classes: tuple[str, ...]
    lead_names: tuple[str, ...]
    fs: float

    def __len__(self) -> int:
        return len(self.signals)


def _unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


# Body axes: x towards the patient's left, y towards the feet, z anterior. Directions are those
# of the mean vectors in textbook vectorcardiography; amplitudes are dipole magnitudes in mV.
_P_RA, _P_LA = _unit(0.25, 0.85, 0.45), _unit(0.85, 0.35, -0.4)  # right then left atrium
_SEPTAL = _unit(-0.6, 0.15, 0.78)  # initial septal force: rightward, anterior (q in I/V6, r V1)
_R_EARLY = _unit(0.62, 0.6, 0.5)
_R_MAIN = _unit(0.65, 0.6, -0.45)  # left-ventricular free wall: left, inferior, posterior
_S_LATE = _unit(-0.45, -0.45, -0.77)  # basal terminal forces
_T_DIR = _unit(0.55, 0.65, 0.4)  # concordant with the QRS, so T is upright where R is
_LBBB_EARLY, _LBBB_LATE = _unit(0.8, 0.2, -0.3), _unit(0.7, 0.3, -0.65)
_RBBB_TERMINAL = _unit(-0.55, -0.1, 0.85)  # late, slow right-ventricular activation: R' in V1
_LVH_MAIN = _unit(0.8, 0.4, -0.45)
_AF_DIR = _unit(-0.3, 0.6, 0.75)  # f-waves are largest in V1 and the inferior leads
_STD_DIR = _unit(-0.55, -0.6, -0.3)  # subendocardial: depression in II/V4-V6, elevation aVR
_STE_TERRITORIES = (
    _unit(0.1, 0.1, 1.0),  # anterior: V1-V4 up
    _unit(0.0, 1.0, 0.1),  # inferior: II, III, aVF up, aVL down
    _unit(1.0, -0.35, 0.1),  # lateral: I, aVL, V5-V6 up, III down
)

# Einthoven triangle with the Wilson terminal at the origin, so LA - RA = lead I, LL - RA = II.
_LIMB_ELECTRODES = np.array(
    [[-0.5, -sqrt(3) / 6, 0.0], [0.5, -sqrt(3) / 6, 0.0], [0, sqrt(3) / 3, 0]]
)
_PRECORDIAL_DEG = np.array([115.0, 94.0, 75.0, 58.0, 30.0, 0.0])  # 0 = left, 90 = anterior
_PRECORDIAL_Y = np.array([0.0, 0.0, 0.1, 0.2, 0.2, 0.2])
_PRECORDIAL_GAIN = np.array([1.2, 1.8, 1.9, 1.9, 1.75, 1.35])  # nearer the heart, larger
# Leads from the nine electrodes RA, LA, LL, C1..C6 (the instrument's own arithmetic).
_LEADS_FROM_ELECTRODES = np.zeros((12, 9))
_LEADS_FROM_ELECTRODES[:6, :3] = [
    [-1, 1, 0], [-1, 0, 1], [0, -1, 1], [1, -0.5, -0.5], [-0.5, 1, -0.5], [-0.5, -0.5, 1],
]  # fmt: skip
_LEADS_FROM_ELECTRODES[6:, :3] = -1 / 3
_LEADS_FROM_ELECTRODES[6:, 3:] = np.eye(6)


@dataclass
class _Patient:
    """What all records of one patient share."""

    conditions: list[frozenset[str]]  # feature sets of the classes drawn for the patient
    severity: dict[str, float]
    hr: float
    hrv: float
    resp_hz: float
    pr: float
    qtc: float
    qrs_width: float
    amp: np.ndarray  # P, QRS, T amplitude factors
    rot: np.ndarray
    t_rot: np.ndarray
    st_normal: np.ndarray  # early-repolarisation ST vector, present in healthy hearts too
    rprime: float  # amplitude of a normal-variant terminal R' (0 for most people)
    ste_dir: np.ndarray
    pvc_dir: np.ndarray
    electrode_jitter: np.ndarray  # precordial angle (deg) and height offsets


def _rotation(rng: np.random.Generator, deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.normal(0.0, deg))
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _draw_patient(rng: np.random.Generator, dom: SyntheticDomain) -> _Patient:
    conditions: list[frozenset[str]] = []
    present: set[str] = set()
    # Random order, so the cap and the conflict rules do not favour classes listed first.
    for i in rng.permutation(len(dom.prevalence)):
        name, p = dom.prevalence[i]
        alts = CLASS_DEFINITIONS[name]
        alt = alts[rng.integers(len(alts))]
        if rng.random() >= p or len(conditions) >= dom.max_labels:
            continue
        if any(pair <= present | alt for pair in _CONFLICTS):
            continue
        conditions.append(alt)
        present |= alt
    feats = sorted(_CHRONIC | _EPISODIC)
    return _Patient(
        conditions=conditions,
        severity=dict(zip(feats, rng.uniform(0.0, 1.0, len(feats)), strict=True)),
        hr=float(np.clip(rng.normal(dom.hr_mean, 9.0), *_NORMAL_HR)),
        hrv=float(rng.uniform(0.01, 0.07)),
        resp_hz=float(rng.uniform(0.15, 0.35)),
        pr=float(rng.uniform(0.12, 0.20)),
        qtc=float(rng.normal(0.41, 0.015)),
        qrs_width=float(np.exp(rng.normal(0.0, 0.08))),
        amp=np.exp(rng.normal(0.0, [0.2, 0.25, 0.25])),
        rot=_rotation(rng, (10.0, 15.0, 25.0)),  # frontal axis spread ~ -30..+90 degrees
        t_rot=_rotation(rng, (8.0, 8.0, 12.0)),
        st_normal=_unit(0.2, 0.3, 1.0) * rng.uniform(0.0, 0.08),
        rprime=float(rng.uniform(0.05, 0.2) if rng.random() < 0.2 else 0.0),
        ste_dir=_STE_TERRITORIES[rng.integers(len(_STE_TERRITORIES))],
        pvc_dir=_unit(*rng.normal(size=3)),
        electrode_jitter=rng.normal(0.0, [6.0, 0.05]),
    )


def _record_features(rng: np.random.Generator, pat: _Patient, keep: float) -> frozenset[str]:
    feats: set[str] = set()
    for alt in pat.conditions:
        if not alt <= _EPISODIC or rng.random() < keep:
            feats |= alt
    return frozenset(feats)


def _labels(
    rng: np.random.Generator, feats: frozenset[str], classes: tuple[str, ...], miss: float
) -> np.ndarray:
    pos = {
        c: any(a <= feats for a in CLASS_DEFINITIONS[c]) and rng.random() >= miss
        for c in classes
        if c != _NORM
    }
    return np.array(
        [not any(pos.values()) if c == _NORM else pos[c] for c in classes], dtype=np.uint8
    )


def _heart_rate(
    rng: np.random.Generator, pat: _Patient, feats: frozenset[str], sev: dict[str, float]
) -> float:
    if "tachy" in feats:
        return _TACHY_ABOVE + 1.0 + 44.0 * sev["tachy"]
    if "brady" in feats:
        return _BRADY_BELOW - 1.0 - 16.0 * sev["brady"]
    if "af" in feats:
        return float(rng.uniform(*_NORMAL_HR))
    return float(np.clip(pat.hr + rng.normal(0.0, 4.0), *_NORMAL_HR))


def _beat_times(
    rng: np.random.Generator,
    pat: _Patient,
    feats: frozenset[str],
    sev: dict[str, float],
    hr: float,
    seconds: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return R times (s), the RR interval before each beat, and which beats are PVCs."""
    rr_mean = 60.0 / hr
    n = int((seconds + 2.5) / (0.5 * rr_mean)) + 2
    if "af" in feats:
        cv = 0.08 + 0.25 * sev["af"]  # sinus arrhythmia reaches ~0.06
        rr = np.maximum(rr_mean * np.exp(cv * rng.standard_normal(n) - cv**2 / 2), 0.27)
    else:
        k = np.arange(n)
        phase = 2 * np.pi * pat.resp_hz * rr_mean * k + rng.uniform(0, 2 * np.pi)
        rr = rr_mean * (1 + pat.hrv * np.sin(phase) + 0.01 * rng.standard_normal(n))
    times = -1.0 - rng.uniform(0.0, rr_mean) + np.concatenate([[0.0], np.cumsum(rr[:-1])])
    if "af" in feats:
        # A few seconds of AF wander far from their mean rate; pin the visible mean RR to the
        # drawn rate so that rate labels (TACHY, AF_RVR) say what the strip shows.
        vis = np.flatnonzero((times >= 0) & (times < seconds))
        if len(vis) > 1:
            t0 = times[vis[0]]
            times = t0 + (times - t0) * rr_mean / np.mean(np.diff(times[vis]))
    times = times[times < seconds + 0.6]
    is_pvc = np.zeros(len(times), dtype=bool)
    if "pvc" in feats:
        cand = np.flatnonzero((times > 0.2) & (times < seconds - 0.2))
        n_pvc = 1 + int(sev["pvc"] > 0.5 and rng.random() < 0.6)
        for i in rng.permutation(cand)[:n_pvc]:
            if is_pvc[i - 1] or (i + 1 < len(times) and is_pvc[i + 1]):
                continue
            # Premature beat; the sinus node is undisturbed, hence the compensatory pause.
            times[i] = times[i - 1] + rng.uniform(0.5, 0.7) * (times[i] - times[i - 1])
            is_pvc[i] = True
    rr_prev = np.diff(times, prepend=times[0] - rr_mean)
    return times, rr_prev, is_pvc


def _sinus_waves(
    pat: _Patient, feats: frozenset[str], sev: dict[str, float], rot: np.ndarray, pr: float
) -> tuple[np.ndarray, ...]:
    """Wave table of a conducted beat: offset, QT coefficient, sigma, dipole, is-P flag.

    The T-wave offset is ``offset + coef * sqrt(RR)`` (Bazett), so T follows the rate.
    """
    w = pat.qrs_width
    a_p, a_qrs, a_t = pat.amp
    waves: list[tuple[float, float, float, np.ndarray, bool]] = [
        (-pr, 0.0, 0.020, 0.10 * a_p * _P_RA, True),
        (-pr + 0.036, 0.0, 0.022, 0.09 * a_p * _P_LA, True),
    ]
    qt_extra = 0.0
    if "lbbb" in feats:
        s = sev["lbbb"]
        ww = w * (1.35 + 0.7 * s)  # QRS ~110-170 ms, no septal q, notched broad R
        qt_extra = 0.03 + 0.03 * s
        waves += [
            (-0.022 * ww, 0.0, 0.014 * ww, 0.75 * a_qrs * _LBBB_EARLY, False),
            (0.018 * ww, 0.0, 0.015 * ww, 1.05 * a_qrs * _LBBB_LATE, False),
        ]
        qrs_mean = _unit(*(_LBBB_EARLY + _LBBB_LATE))
        t_dir, t_amp = _unit(*(-qrs_mean + 0.3 * _T_DIR)), 0.22 + 0.15 * s  # discordant ST-T
        st = -qrs_mean * (0.06 + 0.12 * s)
    else:
        r_main, main_amp = _R_MAIN, 0.95
        if "lvh" in feats:
            s = sev["lvh"]
            r_main, main_amp, w = _LVH_MAIN, 0.95 * (1.1 + 0.9 * s), w * (1.05 + 0.1 * s)
        s_w = 1.0
        if "rbbb" in feats:
            s_w = 1.3 + 0.9 * sev["rbbb"]  # slurred S in I and V6
        waves += [
            (-0.026 * w, 0.0, 0.010 * w, 0.12 * a_qrs * _SEPTAL, False),
            (-0.008 * w, 0.0, 0.011 * w, 0.55 * a_qrs * _R_EARLY, False),
            (0.008 * w, 0.0, 0.012 * w, main_amp * a_qrs * r_main, False),
            (0.028 * w * s_w, 0.0, 0.012 * w * s_w, 0.30 * a_qrs * _S_LATE, False),
        ]
        t_dir, t_amp, st = _T_DIR, 0.17, pat.st_normal.copy()
        if "rbbb" in feats:
            s = sev["rbbb"]
            waves.append(
                ((0.045 + 0.03 * s) * w, 0.0, (0.015 + 0.012 * s) * w,
                 (0.15 + 0.65 * s) * a_qrs * _RBBB_TERMINAL, False)
            )  # fmt: skip
            qt_extra = 0.02 + 0.03 * s
            t_dir = _unit(*(t_dir - 0.5 * _RBBB_TERMINAL))  # secondary T inversion in V1-V3
        elif pat.rprime > 0:  # the normal rSr' of V1 that mild RBBB must be told from
            waves.append((0.042 * w, 0.0, 0.012 * w, pat.rprime * a_qrs * _RBBB_TERMINAL, False))
    if "ste" in feats:
        st = st + pat.ste_dir * (0.04 + 0.3 * sev["ste"])
    if "std" in feats:
        st = st + _STD_DIR * (0.03 + 0.2 * sev["std"])
    t_vec = t_amp * a_t * (pat.t_rot @ t_dir) + 0.6 * st  # injury also reshapes T
    waves += [
        (0.07 * w + qt_extra, 0.0, 0.03, st / 1.3, False),  # two Gaussians make a plateau
        (0.13 * w + qt_extra, 0.0, 0.04, st / 1.3, False),
        (-0.16 + qt_extra, pat.qtc, 0.055, 0.55 * t_vec, False),  # slow upstroke
        (-0.11 + qt_extra, pat.qtc, 0.035, 0.5 * t_vec, False),  # faster downstroke
    ]
    offset, coef, sigma, dip, is_p = (np.array(col) for col in zip(*waves, strict=True))
    return offset, coef, sigma, dip @ rot.T, is_p


def _pvc_waves(
    rng: np.random.Generator, pat: _Patient, sev: dict[str, float], rot: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Wave table of a ventricular ectopic beat: offset, sigma, dipole (no P, wide QRS)."""
    a = (1.0 + 1.0 * sev["pvc"]) * pat.amp[1]
    d2 = _unit(*(pat.pvc_dir + 0.6 * _unit(*rng.normal(size=3))))
    waves = [
        (-0.025, 0.026, 0.8 * a * pat.pvc_dir),
        (0.025, 0.03, 0.6 * a * d2),
        (0.3, 0.065, -0.35 * a * pat.pvc_dir),  # secondary T opposite the QRS
    ]
    offset, sigma, dip = (np.array(col) for col in zip(*waves, strict=True))
    return offset, sigma, dip @ rot.T


def _f_waves(rng: np.random.Generator, t: np.ndarray, fs: float, amp: float) -> np.ndarray:
    """Fibrillatory waves: 4-8 Hz with a wandering frequency and amplitude."""
    drift = np.cumsum(rng.standard_normal(len(t))) / np.sqrt(len(t))
    freq = rng.uniform(4.5, 8.0) * (1 + 0.08 * drift)
    phase = 2 * np.pi * np.cumsum(freq) / fs + rng.uniform(0, 2 * np.pi)
    env = 0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    return amp * env * (np.sin(phase) + 0.35 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))


def _electrodes(rng: np.random.Generator, pat: _Patient) -> np.ndarray:
    """Lead vectors (9, 3) of RA, LA, LL, C1..C6, with this visit's electrode placement."""
    ang = np.deg2rad(_PRECORDIAL_DEG + pat.electrode_jitter[0] + rng.normal(0, 4.0, 6))
    y = _PRECORDIAL_Y + pat.electrode_jitter[1] + rng.normal(0, 0.04, 6)
    chest = _PRECORDIAL_GAIN[:, None] * np.stack([np.cos(ang), y, np.sin(ang)], axis=1)
    return np.concatenate([_LIMB_ELECTRODES, chest])


def _noise(rng: np.random.Generator, dom: SyntheticDomain, t: np.ndarray) -> np.ndarray:
    """Electrode noise (9, n): white, bursty EMG, mains and baseline wander."""
    n = len(t)
    # Electrode noise reaches a lead from two electrodes, hence the 1/sqrt(2).
    white = dom.noise_std / sqrt(2) * np.exp(rng.normal(0, 0.5)) * rng.uniform(0.5, 1.5, (9, 1))
    out = white * rng.standard_normal((9, n))
    if dom.emg_std > 0:
        hp = np.diff(rng.standard_normal((9, n + 1)), axis=1) / sqrt(2)  # high-pass white noise
        f = rng.uniform(0.2, 1.0, (9, 1))
        env = (0.5 + 0.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (9, 1)))) ** 2
        limb = np.r_[np.full(3, 1.5), np.ones(6)][:, None]  # arm muscles tremble the most
        out += dom.emg_std * np.exp(rng.normal(0, 0.6)) * limb * (0.3 + 0.7 * env) * hp
    if dom.powerline_amp > 0:
        # Mains couples into each electrode a little differently; the common part cancels.
        amp = dom.powerline_amp * rng.uniform(0.0, 0.7, (9, 1))
        ph = rng.uniform(0, 2 * np.pi) + rng.normal(0, 0.5, (9, 1))
        out += amp * np.sin(2 * np.pi * dom.powerline_hz * t + ph)
    if dom.baseline_wander > 0:
        f = rng.uniform(0.05, 0.5, (9, 2, 1))
        a = dom.baseline_wander * rng.uniform(0, 1, (9, 2, 1)) * rng.uniform(0.2, 1.0)
        ph = rng.uniform(0, 2 * np.pi, (9, 2, 1))
        out += (a * np.sin(2 * np.pi * f * t + ph)).sum(axis=1)
    return out


def _acquire(rng: np.random.Generator, leads: np.ndarray, spread: float) -> np.ndarray:
    """Apply per-record channel gain errors the way a 12-lead recorder meets them.

    A recorder amplifies I, II and V1-V6 and computes III, aVR, aVL and aVF from I and II,
    so Einthoven's law survives its gain errors.
    """
    acquired = [0, 1, *range(6, 12)]
    g = np.exp(rng.normal(0, spread) + rng.normal(0, spread / 2, len(acquired)))
    out = leads.copy()
    out[acquired] *= g[:, None]
    i, ii = out[0], out[1]
    out[2], out[3], out[4], out[5] = ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2
    return out


def _gaussian_sum(
    centers: np.ndarray, sigmas: np.ndarray, dipoles: np.ndarray, fs: float, n: int
) -> np.ndarray:
    """Sum of Gaussian waves with 3-D dipoles, as (3, n).

    Each wave is evaluated only within 5 sigma of its centre, which saves most of the work
    at high sampling rates (the tails left out are below 4e-6 of the peak).
    """
    half = int(np.ceil(5 * sigmas.max() * fs))
    first = np.round(centers * fs).astype(np.int64) - half
    idx = first[:, None] + np.arange(2 * half + 1)  # (waves, window)
    inside = (idx >= 0) & (idx < n)
    g = np.exp(-0.5 * ((idx / fs - centers[:, None]) / sigmas[:, None]) ** 2) * inside
    flat = np.where(inside, idx, 0).ravel()
    return np.stack([np.bincount(flat, (g * d[:, None]).ravel(), n) for d in dipoles.T])


def _render(
    rng: np.random.Generator, dom: SyntheticDomain, pat: _Patient, feats: frozenset[str]
) -> tuple[np.ndarray, float]:
    """One record (12, n_samples) in mV and its mean ventricular rate."""
    fs = dom.fs
    t = np.arange(dom.n_samples) / fs
    sev = {f: float(np.clip(pat.severity[f] + rng.normal(0, 0.08), 0, 1)) for f in pat.severity}
    hr = _heart_rate(rng, pat, feats, sev)
    beat_t, rr_prev, is_pvc = _beat_times(rng, pat, feats, sev, hr, dom.seconds)
    rot = pat.rot @ _rotation(rng, (2.0, 2.0, 3.0))  # posture shifts the axis a little
    # PR shortens a little as the rate rises; a first-degree block keeps it above 200 ms.
    pr = max(0.10, (0.21 + 0.12 * sev["avb1"] if "avb1" in feats else pat.pr) - 4e-4 * (hr - 70))

    off, coef, sig, dip, is_p = _sinus_waves(pat, feats, sev, rot, pr)
    if "af" in feats:
        off, coef, sig, dip = off[~is_p], coef[~is_p], sig[~is_p], dip[~is_p]
    bt, rp = beat_t[~is_pvc], rr_prev[~is_pvc]
    resp = 1 + 0.05 * np.sin(2 * np.pi * pat.resp_hz * bt + rng.uniform(0, 2 * np.pi))
    centers = [(bt[:, None] + off + coef * np.sqrt(rp)[:, None]).ravel()]
    sigmas = [np.broadcast_to(sig, (len(bt), len(sig))).ravel()]
    dipoles = [(resp[:, None, None] * dip).reshape(-1, 3)]
    if is_pvc.any():
        p_off, p_sig, p_dip = _pvc_waves(rng, pat, sev, rot)
        vt = beat_t[is_pvc]
        centers.append((vt[:, None] + p_off).ravel())
        sigmas.append(np.broadcast_to(p_sig, (len(vt), len(p_sig))).ravel())
        dipoles.append(np.broadcast_to(p_dip, (len(vt), *p_dip.shape)).reshape(-1, 3))
    c, s, d = np.concatenate(centers), np.concatenate(sigmas), np.concatenate(dipoles)
    # Widen every wave by a Gaussian anti-alias filter (area kept), as a recorder filters
    # before it samples; without it a 10 ms R wave aliases at 100 Hz.
    s_eff = np.sqrt(s**2 + (0.4 / fs) ** 2)
    vcg = _gaussian_sum(c, s_eff, d * (s / s_eff)[:, None], fs, len(t))
    if "af" in feats:
        vcg += np.outer(rot @ _AF_DIR, _f_waves(rng, t, fs, 0.01 + 0.1 * sev["af"]))

    electrodes = _electrodes(rng, pat) @ vcg + _noise(rng, dom, t)
    leads = _acquire(rng, _LEADS_FROM_ELECTRODES @ electrodes, dom.gain_spread)
    vis = beat_t[(beat_t >= 0) & (beat_t < dom.seconds)]
    mean_hr = 60.0 / float(np.mean(np.diff(vis))) if len(vis) > 1 else hr
    return leads, mean_hr


def generate(domain: SyntheticDomain | str) -> SyntheticData:
    """Generate every record of a synthetic domain.

    Each patient draws from its own generator seeded by ``(domain.seed, patient)``, so the
    output is bit-identical across calls and independent of anything else the process did.

    Args:
        domain: a `SyntheticDomain`, or the name of one in `DOMAINS`.

    Returns:
        The records, labels and ids of the domain.

    Raises:
        ConfigError: the name is not in `DOMAINS`; the message lists the known names.
    """
    if isinstance(domain, str):
        if domain not in DOMAINS:
            raise ConfigError(
                f"unknown synthetic domain {domain!r}; known: {', '.join(sorted(DOMAINS))}"
            )
        domain = DOMAINS[domain]
    lead_idx = [LEAD_NAMES.index(n) for n in domain.lead_names]
    gain = np.ones(domain.n_leads) if domain.lead_gain is None else np.asarray(domain.lead_gain)
    signals, labels, pids, rids, rates = [], [], [], [], []
    lo, hi = domain.records_per_patient
    for p in range(domain.n_patients):
        rng = np.random.default_rng([domain.seed, p])
        pat = _draw_patient(rng, domain)
        for k in range(int(rng.integers(lo, hi + 1))):
            feats = _record_features(rng, pat, domain.episodic_keep)
            x, hr = _render(rng, domain, pat, feats)
            signals.append((x[lead_idx] * gain[:, None]).astype(np.float32))
            labels.append(_labels(rng, feats, domain.classes, domain.label_miss))
            pids.append(p)
            rids.append(f"{domain.name}-p{p:05d}-r{k}")
            rates.append(hr)
    return SyntheticData(
        domain=domain.name,
        signals=np.stack(signals),
        labels=np.stack(labels),
        patient_id=np.asarray(pids, dtype=np.int64),
        record_id=np.asarray(rids, dtype=str),
        heart_rate=np.asarray(rates, dtype=np.float32),
        classes=tuple(domain.classes),
        lead_names=tuple(domain.lead_names),
        fs=float(domain.fs),
    )


def _domains(*domains: SyntheticDomain) -> dict[str, SyntheticDomain]:
    return {d.name: d for d in domains}


DOMAINS: dict[str, SyntheticDomain] = _domains(
    # Upstream: large, diagnostic-statement style (PTB-XL-like): morphology classes.
    SyntheticDomain(
        name="synth_up_a",
        classes=("NORM", "AF", "RBBB", "LBBB", "STE", "STD", "LVH"),
        prevalence=(
            ("AF", 0.10),
            ("RBBB", 0.09),
            ("LBBB", 0.07),
            ("STE", 0.09),
            ("STD", 0.11),
            ("LVH", 0.10),
        ),  # fmt: skip
        n_patients=1100,
        records_per_patient=(1, 3),
        noise_std=0.015,
        baseline_wander=0.1,
        emg_std=0.01,
        seed=101,
    ),
    # Upstream: rhythm-statement style (Chapman-like): mostly one record per patient, mains hum.
    SyntheticDomain(
        name="synth_up_b",
        classes=("NORM", "AF", "BRADY", "TACHY", "IAVB", "PVC"),
        prevalence=(
            ("AF", 0.14),
            ("BRADY", 0.12),
            ("TACHY", 0.13),
            ("IAVB", 0.09),
            ("PVC", 0.09),
        ),  # fmt: skip
        n_patients=1000,
        records_per_patient=(1, 2),
        lead_gain=(1.05,) * 6 + (0.95,) * 6,
        noise_std=0.025,
        baseline_wander=0.15,
        emg_std=0.015,
        powerline_amp=0.02,
        hr_mean=75.0,
        seed=202,
    ),
    # Upstream: the largest, mixed rhythm and morphology (CPSC-2018-like).
    SyntheticDomain(
        name="synth_up_c",
        classes=("NORM", "AF", "IAVB", "LBBB", "RBBB", "PVC", "STD"),
        prevalence=(
            ("AF", 0.12),
            ("IAVB", 0.09),
            ("LBBB", 0.06),
            ("RBBB", 0.11),
            ("PVC", 0.09),
            ("STD", 0.10),
        ),  # fmt: skip
        n_patients=1400,
        records_per_patient=(1, 3),
        gain_spread=0.15,
        noise_std=0.02,
        baseline_wander=0.2,
        emg_std=0.02,
        seed=303,
    ),
    # Downstream: a noisy bedside monitor with its own gains and 60 Hz mains; coarse classes
    # that are unions (BBB, STTC) or a conjunction (AF_RVR) of upstream features.
    SyntheticDomain(
        name="synth_down_x",
        classes=("NORM", "AF_RVR", "BBB", "STTC"),
        prevalence=(("AF_RVR", 0.2), ("BBB", 0.2), ("STTC", 0.22)),
        n_patients=150,
        records_per_patient=(2, 3),
        lead_gain=(0.8,) * 6 + (1.25, 1.3, 1.3, 1.2, 1.15, 1.1),
        gain_spread=0.2,
        noise_std=0.04,
        baseline_wander=0.3,
        emg_std=0.04,
        powerline_hz=60.0,
        powerline_amp=0.03,
        hr_mean=80.0,
        seed=404,
    ),
    # Downstream: an outpatient clinic; LVH with strain (LVH and ST depression together),
    # PVCs under another name, and slow rates.
    SyntheticDomain(
        name="synth_down_y",
        classes=("NORM", "LVH_STRAIN", "IAVB", "BRADY", "ECTOPY"),
        prevalence=(("LVH_STRAIN", 0.2), ("IAVB", 0.18), ("BRADY", 0.16), ("ECTOPY", 0.16)),
        n_patients=180,
        records_per_patient=(1, 4),
        lead_gain=(1.1,) * 6 + (0.8, 0.8, 0.85, 0.85, 0.9, 0.9),
        gain_spread=0.15,
        noise_std=0.03,
        baseline_wander=0.25,
        emg_std=0.03,
        hr_mean=66.0,
        seed=505,
    ),
    # Tiny: for fast tests.
    SyntheticDomain(
        name="synth_tiny",
        classes=("NORM", "AF", "RBBB"),
        prevalence=(("AF", 0.35), ("RBBB", 0.35)),
        n_patients=30,
        records_per_patient=(2, 2),
        seed=7,
    ),
)
