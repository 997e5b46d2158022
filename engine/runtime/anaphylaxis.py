"""Anaphylaxis decided for each recorded drug reaction from its manifestations and their onset.

Reactions are often recorded with manifestations only: no severity and no "anaphylaxis" code. The clinical
criteria decide it instead:

- NIAID/FAAN (Sampson HA, et al. J Allergy Clin Immunol 2006;117(2):391-397, doi:10.1016/j.jaci.2005.12.1303):
  anaphylaxis is highly likely, with onset over minutes to several hours, when (1) skin-mucosal involvement
  comes with respiratory compromise or reduced blood pressure / end-organ dysfunction; or (2) two or more of
  skin-mucosal, respiratory, reduced blood pressure or associated symptoms, persistent gastrointestinal
  symptoms follow exposure to a likely allergen for that patient; or (3) reduced blood pressure follows
  exposure to a known allergen. Low systolic blood pressure: < 70 mmHg from 1 month to 1 year, < 70 + 2 x age
  from 1 to 10 years, < 90 from 11 to 17, adults < 90 mmHg; or a fall of more than 30 % from baseline.
- WAO 2020 (Cardona V, et al. World Allergy Organ J 2020;13(10):100472, doi:10.1016/j.waojou.2020.100472):
  acute skin-mucosal involvement with respiratory compromise, reduced blood pressure or severe gastrointestinal
  symptoms; or acute hypotension, bronchospasm or laryngeal involvement after exposure to a known or highly
  probable allergen, even without skin involvement.

Together: anaphylaxis when the onset is acute and the reaction involves two or more of the organ groups, or one
manifestation that suffices alone (hypotension or a measured reduced blood pressure, bronchospasm/wheeze,
stridor). The drug the record attributes the reaction to, given just before it, is taken as the "likely" (NIAID
2) and "highly probable" (WAO 2) allergen. The organ group of each manifestation is the reviewed table in
engine/data/terms.yaml.

The answer is three-valued. A reaction the record cannot decide is undecided and names what to record: the
blood pressure during the reaction, the onset time, the dose before it. Manifestations are closed-world (what
was seen is listed), but blood pressure needs a measurement; a reaction with no manifestation of the criteria's
organ groups is decided as not anaphylaxis without one.

Operational readings of the criteria's "minutes to several hours", which give no number (stated in every
result that uses them): an onset within 2 hours of the dose is acute on any reading; an onset more than 24 hours
after it is not; in between the record cannot decide and a clinician must. Blood pressure "during the reaction"
is a systolic measurement from the onset to 2 hours after it (the same reading); the baseline for the > 30 % fall
is the latest systolic measurement before the dose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ..compiler.ir import Missing, Verdict
from ..core.snapshot import Course, Reaction, Snapshot
from ..core.vocab import vocabulary

HOUR = 3600
ACUTE_WITHIN = 2 * HOUR  # an onset this soon after the dose is "minutes to several hours" on any reading
NOT_ACUTE_AFTER = 24 * HOUR  # an onset later than this is not
DURING = 2 * HOUR  # blood pressure measured up to this long after the onset was measured during the reaction
BP = "systolic-bp"
GROUPS = ("skin-mucosal", "respiratory", "cardiovascular", "gastrointestinal")
GROUP_WORDS = {"skin-mucosal": "skin-mucosal", "respiratory": "respiratory", "cardiovascular":
               "reduced blood pressure or end-organ dysfunction", "gastrointestinal": "gastrointestinal"}


@dataclass(frozen=True)
class AnaphylaxisAssessment:
    """Whether one reaction meets the anaphylaxis criteria: true, false or unknown (then ``missing`` says
    what to record), with the reasons in words."""

    verdict: Verdict
    basis: str
    missing: tuple[Missing, ...] = ()
    exposure: int | None = None  # time of the dose of the drug before the reaction


def low_systolic_limit(age_years: int, months: int | None) -> float | None:
    """The criteria's age-specific low systolic limit in mmHg (a value below it is low); None where the
    criteria give none (under 1 month, or an infant whose age in months is not known)."""
    if age_years >= 11:
        return 90.0  # 11 to 17 years, and adults
    if age_years >= 1:
        return 70.0 + 2.0 * age_years
    if months is not None and months >= 1:
        return 70.0
    return None


def _months(snap: Snapshot, t: int) -> int | None:
    if snap.patient.birth is None:
        return None
    born = datetime.fromtimestamp(snap.patient.birth, tz=UTC)
    now = datetime.fromtimestamp(t, tz=UTC)
    return (now.year - born.year) * 12 + now.month - born.month - (now.day < born.day)


def _reduced_bp(snap: Snapshot, r: Reaction, exposure: int | None, as_of: int) -> tuple[Verdict, str]:
    """Reduced blood pressure during the reaction, from systolic measurements: true, false, or unknown."""
    end = min(r.time + DURING, as_of)
    during = [o for o in snap.observations if o.analyte == BP and r.time <= o.time <= end]
    if not during:
        return "unknown", "no systolic blood pressure measured during the reaction"
    before = exposure if exposure is not None else r.time
    baselines = [o for o in snap.observations if o.analyte == BP and o.time < before]
    baseline = max(baselines, key=lambda o: o.time).value if baselines else None
    age = snap.age_at(r.time)
    months = _months(snap, r.time)
    limits = [] if age is None else [low_systolic_limit(a, months) for a in range(age[0], age[1] + 1)]
    lowest = min(during, key=lambda o: o.value)
    fall = baseline is not None and lowest.value < 0.7 * baseline
    if fall:
        return "true", (f"systolic blood pressure {lowest.value:g} mmHg, a fall of more than 30 % from the baseline "
                        f"{baseline:g} mmHg")
    if limits and all(x is not None for x in limits):
        known = [x for x in limits if x is not None]
        if lowest.value < min(known):
            return "true", f"systolic blood pressure {lowest.value:g} mmHg, below the age limit {min(known):g} mmHg"
        if lowest.value >= max(known):
            fall_note = "" if baseline is not None else " (no baseline before the dose: the fall could not be checked)"
            return "false", (f"systolic blood pressure {lowest.value:g} mmHg, not below the age limit "
                              f"{max(known):g} mmHg{fall_note}")
        return "unknown", "the age is not known precisely enough for the age-specific limit"
    return "unknown", "no age-specific limit applies (age not recorded, or under 1 month)"


def assess(snap: Snapshot, i: int, as_of: int) -> AnaphylaxisAssessment:
    """The anaphylaxis criteria for reaction ``i`` of ``snap``, as known at ``as_of``."""
    v = vocabulary()
    r = snap.reactions[i]
    drug = v.drugs[r.drug].name
    if "anaphylaxis" in r.manifestations:
        return AnaphylaxisAssessment("true", "recorded as anaphylaxis")
    terms = [v.manifestations[m] for m in r.manifestations]
    groups = {t.group for t in terms if t.group in GROUPS}
    alone = [t.name for t in terms if t.alone]
    doses = [t for c in snap.courses if c.drug == r.drug for t in administration_times(c, r.time)]
    exposure = max(doses) if doses else None
    bp, bp_words = _reduced_bp(snap, r, exposure, as_of)
    if bp == "true":
        groups.add("cardiovascular")
        alone.append("reduced blood pressure")
    where = f"the reaction to {drug} at {_when(snap, r.time)}"
    missing: list[Missing] = []
    named = "; ".join(GROUP_WORDS[g] for g in GROUPS if g in groups) or "no organ group the criteria name"
    crit: Verdict
    if len(groups) >= 2 or alone:
        crit = "true"
        why = (f"{' and '.join(alone)} (WAO 2020 criterion 2; NIAID 3 for reduced blood pressure)" if alone
               and len(groups) < 2 else f"involvement of {named} (NIAID criteria 1-2; WAO criterion 1)")
    elif bp == "false":
        crit, why = "false", f"only {named}; {bp_words}"
    elif not groups:
        crit, why = "false", "no manifestation of the organ groups the anaphylaxis criteria name"
    else:
        crit, why = "unknown", f"only {named}; {bp_words}"
        if bp_words.startswith("the age is not known"):
            missing.append(Missing("birth date", f"the age-specific low blood pressure limit for {where} depends on "
                                   "the exact age", "anaphylaxis"))
        else:
            missing.append(Missing("systolic blood pressure during the reaction",
                                   f"a measurement within 2 h of the onset of {where} (reduced blood pressure would "
                                   "meet the anaphylaxis criteria)", "anaphylaxis"))
    if crit == "false":
        return AnaphylaxisAssessment("false", why, (), exposure)
    acute: Verdict
    if not r.time_is_onset:
        acute, onset_words = "unknown", "the onset time is not recorded"
        missing.append(Missing("onset of the reaction", f"when the manifestations of {where} began (its recorded "
                               "time is when it was recorded)", "anaphylaxis"))
    elif exposure is None:
        acute, onset_words = "unknown", f"no dose of {drug} is recorded before it"
        missing.append(Missing(f"dose of {drug} before the reaction",
                               f"the time of the dose of {drug} before {where}", "anaphylaxis"))
    else:
        delay = r.time - exposure
        onset_words = f"onset {_duration(delay)} after the dose"
        if delay <= ACUTE_WITHIN:
            acute = "true"
        elif delay > NOT_ACUTE_AFTER:
            acute = "false"
        else:
            acute = "unknown"
            missing.append(Missing("acute onset of the reaction", f"whether the onset of {where}, "
                                   f"{_duration(delay)} after the dose, was acute (the criteria: minutes to several "
                                   "hours) - a clinical judgement; record the reaction as anaphylaxis if it was",
                                   "anaphylaxis"))
    if acute == "false":
        return AnaphylaxisAssessment("false", f"{why}; {onset_words}, not an acute onset", (), exposure)
    verdict: Verdict = "true" if crit == "true" and acute == "true" else "unknown"
    if verdict == "true":
        return AnaphylaxisAssessment("true", f"{why}; {onset_words}", (), exposure)
    return AnaphylaxisAssessment("unknown", f"{why}; {onset_words}", tuple(missing), exposure)


def administration_times(course: Course, as_of: int) -> list[int]:
    from .facts import administration_times as times  # facts builds reaction facts from this module

    return times(course, as_of)


def _duration(seconds: int) -> str:
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = seconds / HOUR
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _when(snap: Snapshot, t: int) -> str:
    from ..core.times import relative_label

    return relative_label(t, snap.start)


def change_times(snap: Snapshot, i: int) -> tuple[int, ...]:
    """Times after the reaction at which its assessment can change: systolic measurements during it."""
    r = snap.reactions[i]
    return tuple(sorted({o.time for o in snap.observations if o.analyte == BP and r.time < o.time <= r.time + DURING}))


__all__ = ["AnaphylaxisAssessment", "assess", "change_times", "low_systolic_limit"]
