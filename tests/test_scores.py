"""The scores and criteria of the knowledge base against hand computations from the published formulas.

Each row is a patient's inputs, the value worked out by hand from the publication (Minoia 2019, Fardet 2014,
Henter 2007, Eloseily 2019, Ravelli 2016) and the status the cut-off gives. Boundary rows sit exactly on the
published cut-offs and one step to either side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import engine

from .conftest import RULES, rule_text, write_kb

AT = "day 0 12:00"


@pytest.fixture(scope="module")
def shipped() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(RULES)


def assess(kb: engine.KnowledgeBase, labs: dict[str, tuple[float, str]], findings: dict[str, bool],
           diagnoses: tuple[str, ...] = ("sjia",)) -> dict[str, engine.Assessment]:
    """Evaluate one patient whose labs and examination were all recorded on the morning of day 0."""
    case: dict[str, Any] = {
        "case": {"id": "score-row", "title": "A row of the score table"},
        "patient": {"sex": "female", "age_years": 8},
        "timeline": {"start": "2024-05-01"},
        "diagnoses": [{"code": code, "onset": "day -200"} for code in diagnoses],
        "observations": [{"analyte": a, "value": v, "unit": u, "time": "day 0 07:00"}
                         for a, (v, u) in labs.items()],
        "findings": [{"code": c, "present": p, "time": "day 0 08:00"} for c, p in findings.items()],
    }
    result = engine.evaluate(kb, engine.snapshot_from_dict(case), AT)
    return {a.fact: a for a in result.assessments}


NO_MS_FINDINGS = {"cns-involvement": False, "haemorrhagic-manifestations": False, "active-arthritis": False}

# MS = 2.44·CNS + 1.54·haemorrhage − 1.30·arthritis − 0.003·platelets + 0.001·LDH − 0.004·fibrinogen
#      + 0.0001·ferritin; cut-off ≥ −2.1 (Minoia 2019)
MS_ROWS = [
    # platelets ×10⁹/L, LDH U/L, fibrinogen mg/dL, ferritin ng/mL, findings, value, status
    pytest.param(100, 1000, 150, 10000, {**NO_MS_FINDINGS, "active-arthritis": True}, -0.2, "met",
                 id="arthritis, -1.30-0.3+1.0-0.6+1.0"),
    pytest.param(200, 300, 500, 2000, NO_MS_FINDINGS, -2.1, "met", id="exactly -2.1 is at the cut-off"),
    pytest.param(200, 299, 500, 2000, NO_MS_FINDINGS, -2.101, "not_met", id="-2.101 is below it"),
    pytest.param(200, 301, 500, 2000, NO_MS_FINDINGS, -2.099, "met", id="-2.099 is above it"),
    pytest.param(400, 250, 400, 500, {**NO_MS_FINDINGS, "cns-involvement": True, "haemorrhagic-manifestations": True},
                 1.48, "met", id="CNS and haemorrhage, 2.44+1.54-1.2+0.25-1.6+0.05"),
    pytest.param(450, 200, 450, 300, {**NO_MS_FINDINGS, "active-arthritis": True}, -4.22, "not_met",
                 id="quiet sJIA, -1.30-1.35+0.2-1.8+0.03"),
]


@pytest.mark.parametrize(("plt", "ldh", "fib", "ferritin", "findings", "value", "status"), MS_ROWS)
def test_ms_score(shipped: engine.KnowledgeBase, plt: float, ldh: float, fib: float, ferritin: float,
                  findings: dict[str, bool], value: float, status: str) -> None:
    a = assess(shipped, {"platelets": (plt, "10*9/L"), "ldh": (ldh, "U/L"), "fibrinogen": (fib, "mg/dL"),
                         "ferritin": (ferritin, "ng/mL")}, findings)["ms-score"]
    assert a.value == pytest.approx(value, abs=1e-9)
    assert a.status == status and a.missing == () and a.unrecorded == ()


def test_ms_score_in_other_units_is_the_same(shipped: engine.KnowledgeBase) -> None:
    """Platelets per µL, fibrinogen in g/L and ferritin in µg/L: the score is computed in the published units."""
    a = assess(shipped, {"platelets": (200000, "/uL"), "ldh": (300, "U/L"), "fibrinogen": (5.0, "g/L"),
                         "ferritin": (2000, "ug/L")}, NO_MS_FINDINGS)["ms-score"]
    assert a.value == pytest.approx(-2.1, abs=1e-9) and a.status == "met"


HS_FINDINGS_NONE = {"known-immunosuppression": False, "hepatomegaly": False, "splenomegaly": False,
                    "haemophagocytosis": False}
HS_QUIET_LABS: dict[str, tuple[float, str]] = {
    "temperature": (37.0, "Cel"), "haemoglobin": (120, "g/L"), "wbc": (8, "10*9/L"), "platelets": (300, "10*9/L"),
    "ferritin": (500, "ng/mL"), "triglycerides": (1.0, "mmol/L"), "fibrinogen": (3.0, "g/L"), "ast": (20, "U/L"),
}

# HScore points (Fardet 2014); cut-off 168 (Knaak 2020); <1% at ≤ 90, >99% at ≥ 250
HS_ROWS = [
    pytest.param({}, {}, 0, "not_met", id="nothing abnormal scores 0"),
    pytest.param({"temperature": (38.4, "Cel")}, {}, 33, "not_met", id="38.4 °C is in the 38.4-39.4 band"),
    pytest.param({"temperature": (39.4, "Cel")}, {}, 33, "not_met", id="39.4 °C is still in it"),
    pytest.param({"temperature": (39.5, "Cel")}, {}, 49, "not_met", id="39.5 °C is above 39.4"),
    pytest.param({"temperature": (38.3, "Cel")}, {}, 0, "not_met", id="38.3 °C is below 38.4"),
    pytest.param({"temperature": (101.12, "[degF]")}, {}, 33, "not_met", id="101.12 °F is exactly 38.4 °C"),
    pytest.param({"ferritin": (2000, "ng/mL")}, {}, 35, "not_met", id="ferritin 2000 is in the middle band"),
    pytest.param({"ferritin": (6000, "ng/mL")}, {}, 35, "not_met", id="ferritin 6000 too"),
    pytest.param({"ferritin": (6001, "ng/mL")}, {}, 50, "not_met", id="ferritin 6001 is above 6000"),
    pytest.param({"ferritin": (1999, "ug/L")}, {}, 0, "not_met", id="ferritin 1999 µg/L is below 2000"),
    pytest.param({"triglycerides": (1.5, "mmol/L")}, {}, 44, "not_met", id="triglycerides 1.5 mmol/L"),
    pytest.param({"triglycerides": (1.49, "mmol/L")}, {}, 0, "not_met", id="triglycerides 1.49 mmol/L"),
    pytest.param({"triglycerides": (4.0, "mmol/L")}, {}, 44, "not_met", id="triglycerides 4 mmol/L"),
    pytest.param({"triglycerides": (4.01, "mmol/L")}, {}, 64, "not_met", id="triglycerides 4.01 mmol/L"),
    pytest.param({"fibrinogen": (2.5, "g/L")}, {}, 30, "not_met", id="fibrinogen exactly 2.5 g/L"),
    pytest.param({"fibrinogen": (251, "mg/dL")}, {}, 0, "not_met", id="fibrinogen 251 mg/dL is above 2.5 g/L"),
    pytest.param({"ast": (30, "U/L")}, {}, 19, "not_met", id="AST exactly 30"),
    pytest.param({"ast": (0.5, "ukat/L")}, {}, 19, "not_met", id="AST 0.5 µkat/L is 30 U/L"),
    pytest.param({"haemoglobin": (92, "g/L"), "wbc": (5, "10*9/L")}, {}, 24, "not_met",
                 id="two cytopenias at their limits"),
    pytest.param({"haemoglobin": (9.2, "g/dL"), "wbc": (5, "10*9/L"), "platelets": (110000, "/uL")}, {}, 34, "not_met",
                 id="three cytopenias, haemoglobin in g/dL and platelets per µL"),
    pytest.param({"platelets": (110, "10*9/L")}, {}, 0, "not_met", id="one cytopenia scores nothing"),
    pytest.param({}, {"hepatomegaly": True}, 23, "not_met", id="liver only"),
    pytest.param({}, {"hepatomegaly": True, "splenomegaly": True}, 38, "not_met", id="liver and spleen"),
    pytest.param({}, {"known-immunosuppression": True, "haemophagocytosis": True}, 53, "not_met",
                 id="immunosuppression and marrow haemophagocytosis"),
    # around the cut-off of 168: 50 + 64 + 19 + 35 = 168; 24 + 50 + 44 + 30 + 19 = 167; 33 + 23 + 64 + 30 + 19 = 169
    pytest.param({"ferritin": (6001, "ng/mL"), "triglycerides": (4.01, "mmol/L"), "ast": (30, "U/L")},
                 {"haemophagocytosis": True}, 168, "met", id="exactly 168 meets the cut-off"),
    pytest.param({"haemoglobin": (92, "g/L"), "wbc": (5, "10*9/L"), "ferritin": (6001, "ng/mL"),
                  "triglycerides": (1.5, "mmol/L"), "fibrinogen": (2.5, "g/L"), "ast": (30, "U/L")}, {}, 167,
                 "not_met", id="167 is below it"),
    pytest.param({"temperature": (38.4, "Cel"), "triglycerides": (4.01, "mmol/L"), "fibrinogen": (2.5, "g/L"),
                  "ast": (30, "U/L")}, {"hepatomegaly": True}, 169, "met", id="169 is above it"),
    pytest.param({"temperature": (39.5, "Cel"), "ferritin": (6001, "ng/mL"), "triglycerides": (4.01, "mmol/L"),
                  "fibrinogen": (2.0, "g/L"), "ast": (100, "U/L"), "haemoglobin": (80, "g/L"), "wbc": (2, "10*9/L"),
                  "platelets": (50, "10*9/L")},
                 {"known-immunosuppression": True, "hepatomegaly": True, "splenomegaly": True,
                  "haemophagocytosis": True}, 337, "met", id="every item at its highest is 337"),
]


@pytest.mark.parametrize(("labs", "findings", "value", "status"), HS_ROWS)
def test_hscore(shipped: engine.KnowledgeBase, labs: dict[str, tuple[float, str]], findings: dict[str, bool],
                value: float, status: str) -> None:
    a = assess(shipped, {**HS_QUIET_LABS, **labs}, {**HS_FINDINGS_NONE, **findings})["hscore"]
    assert (a.value, a.status) == (value, status)
    assert a.missing == () and a.unrecorded == ()


@pytest.mark.parametrize(("labs", "findings", "value", "words"), [
    # 33 + 23 + 34 = 90: "below 1%" includes 90; 23 + 24 + 44 = 91 has no published wording
    ({"temperature": (38.4, "Cel"), "haemoglobin": (80, "g/L"), "wbc": (2, "10*9/L"), "platelets": (50, "10*9/L")},
     {"hepatomegaly": True}, 90, "below 1%"),
    ({"haemoglobin": (80, "g/L"), "wbc": (2, "10*9/L"), "triglycerides": (1.5, "mmol/L")}, {"hepatomegaly": True},
     91, None),
    # 33 + 23 + 34 + 50 + 44 + 30 + 35 = 249; 38 + 34 + 50 + 44 + 30 + 19 + 35 = 250: "above 99%" from 250
    ({"temperature": (38.4, "Cel"), "haemoglobin": (80, "g/L"), "wbc": (2, "10*9/L"), "platelets": (50, "10*9/L"),
      "ferritin": (6001, "ng/mL"), "triglycerides": (1.5, "mmol/L"), "fibrinogen": (2.5, "g/L")},
     {"hepatomegaly": True, "haemophagocytosis": True}, 249, None),
    ({"haemoglobin": (80, "g/L"), "wbc": (2, "10*9/L"), "platelets": (50, "10*9/L"), "ferritin": (6001, "ng/mL"),
      "triglycerides": (1.5, "mmol/L"), "fibrinogen": (2.5, "g/L"), "ast": (30, "U/L")},
     {"hepatomegaly": True, "splenomegaly": True, "haemophagocytosis": True}, 250, "above 99%"),
], ids=["90", "91", "249", "250"])
def test_hscore_published_probability_wording(shipped: engine.KnowledgeBase, labs: dict[str, tuple[float, str]],
                                              findings: dict[str, bool], value: float, words: str | None) -> None:
    a = assess(shipped, {**HS_QUIET_LABS, **labs}, {**HS_FINDINGS_NONE, **findings})["hscore"]
    assert a.value == value
    if words is None:
        assert a.interpretation is None
    else:
        assert a.interpretation is not None and words in a.interpretation


# 2016 classification: febrile, ferritin > 684 ng/mL, and 2 of: platelets ≤ 181 ×10⁹/L, AST > 48 U/L,
# triglycerides > 156 mg/dL, fibrinogen ≤ 360 mg/dL (Ravelli 2016)
FEVER = {"temperature": (39.0, "Cel")}
NORMAL4: dict[str, tuple[float, str]] = {"platelets": (250, "10*9/L"), "ast": (30, "U/L"),
                                         "triglycerides": (100, "mg/dL"), "fibrinogen": (400, "mg/dL")}
CLASSIFICATION_ROWS = [
    pytest.param({"ferritin": (684, "ng/mL"), "platelets": (100, "10*9/L"), "ast": (100, "U/L")}, "not_met",
                 id="ferritin exactly 684 is not above 684"),
    pytest.param({"ferritin": (685, "ng/mL"), "platelets": (100, "10*9/L"), "ast": (100, "U/L")}, "met",
                 id="ferritin 685"),
    pytest.param({"ferritin": (685, "ug/L"), "platelets": (181, "10*9/L"), "ast": (49, "U/L")}, "met",
                 id="platelets exactly 181 and AST 49"),
    pytest.param({"ferritin": (685, "ng/mL"), "platelets": (182, "10*9/L"), "ast": (49, "U/L")}, "not_met",
                 id="platelets 182 is not a criterion"),
    pytest.param({"ferritin": (685, "ng/mL"), "platelets": (181000, "/uL"), "ast": (48, "U/L")}, "not_met",
                 id="AST exactly 48 is not above 48"),
    pytest.param({"ferritin": (685, "ng/mL"), "triglycerides": (157, "mg/dL"), "fibrinogen": (360, "mg/dL")}, "met",
                 id="triglycerides 157 and fibrinogen exactly 360"),
    pytest.param({"ferritin": (685, "ng/mL"), "triglycerides": (156, "mg/dL"), "fibrinogen": (360, "mg/dL")},
                 "not_met", id="triglycerides exactly 156 is not above 156"),
    pytest.param({"ferritin": (685, "ng/mL"), "triglycerides": (1.77, "mmol/L"), "fibrinogen": (3.6, "g/L")}, "met",
                 id="1.77 mmol/L is above 156 mg/dL, 3.6 g/L is 360 mg/dL"),
    pytest.param({"ferritin": (685, "ng/mL"), "triglycerides": (1.76, "mmol/L"), "fibrinogen": (3.61, "g/L")},
                 "not_met", id="1.76 mmol/L is 155.9 mg/dL, 3.61 g/L is above 360"),
]


@pytest.mark.parametrize(("labs", "status"), CLASSIFICATION_ROWS)
def test_mas_classification_2016(shipped: engine.KnowledgeBase, labs: dict[str, tuple[float, str]],
                                 status: str) -> None:
    a = assess(shipped, {**FEVER, **NORMAL4, **labs}, {})["mas-classification-2016"]
    assert (a.status, a.reliable) == (status, True)


def test_mas_classification_needs_fever(shipped: engine.KnowledgeBase) -> None:
    labs = {**NORMAL4, "ferritin": (5000.0, "ng/mL"), "platelets": (90.0, "10*9/L"), "ast": (200.0, "U/L")}
    assert assess(shipped, {**labs, "temperature": (38.3, "Cel")}, {})["mas-classification-2016"].status == "not_met"
    assert assess(shipped, {**labs, "temperature": (101.12, "[degF]")}, {})["mas-classification-2016"].status == "met"
    undecided = assess(shipped, labs, {})["mas-classification-2016"]
    assert undecided.status == "indeterminate"
    assert [m.what for m in undecided.missing] == ["body temperature"]


# Ferritin (ng/mL) / ESR (mm/h) > 21.5 (Eloseily 2019)
@pytest.mark.parametrize(("ferritin", "esr", "value", "status"), [
    (430, 20, 21.5, "not_met"), (431, 20, 21.55, "met"), (10000, 50, 200, "met"), (300, 20, 15, "not_met"),
], ids=["exactly 21.5", "21.55", "200", "15"])
def test_ferritin_esr_ratio(shipped: engine.KnowledgeBase, ferritin: float, esr: float, value: float,
                            status: str) -> None:
    a = assess(shipped, {"ferritin": (ferritin, "ng/mL"), "esr": (esr, "mm/h")}, {})["ferritin-esr-ratio"]
    assert (a.value, a.status) == (value, status)


HLH_FINDINGS = {"splenomegaly": True, "haemophagocytosis": True, "low-nk-activity": False}


# HLH-2004: 5 of 8 (Henter 2007): fever; splenomegaly; ≥ 2 of Hb < 90 g/L, platelets < 100, neutrophils < 1.0;
# triglycerides ≥ 265 mg/dL or fibrinogen ≤ 150 mg/dL; haemophagocytosis; low NK activity; ferritin ≥ 500; sCD25 ≥ 2400
@pytest.mark.parametrize(("labs", "findings", "value", "status"), [
    ({"temperature": (39.0, "Cel"), "ferritin": (500, "ng/mL"), "scd25": (2399, "U/mL"), "haemoglobin": (90, "g/L"),
      "platelets": (99, "10*9/L"), "neutrophils": (1.0, "10*9/L"), "triglycerides": (264, "mg/dL"),
      "fibrinogen": (151, "mg/dL")}, HLH_FINDINGS, 4, "not_met"),
    ({"temperature": (39.0, "Cel"), "ferritin": (500, "ng/mL"), "scd25": (2400, "U/mL"), "haemoglobin": (90, "g/L"),
      "platelets": (99, "10*9/L"), "neutrophils": (1.0, "10*9/L"), "triglycerides": (264, "mg/dL"),
      "fibrinogen": (151, "mg/dL")}, HLH_FINDINGS, 5, "met"),
    ({"temperature": (37.0, "Cel"), "ferritin": (499, "ng/mL"), "scd25": (1000, "U/mL"), "haemoglobin": (8.9, "g/dL"),
      "platelets": (99, "10*9/L"), "neutrophils": (2.0, "10*9/L"), "triglycerides": (3.0, "mmol/L"),
      "fibrinogen": (3.0, "g/L")}, HLH_FINDINGS, 4, "not_met"),
], ids=["4: sCD25 2399, cytopenia in one lineage", "5: sCD25 2400", "4: two cytopenias, triglycerides 3.0 mmol/L"])
def test_hlh_2004_count(shipped: engine.KnowledgeBase, labs: dict[str, tuple[float, str]], findings: dict[str, bool],
                        value: float, status: str) -> None:
    a = assess(shipped, labs, findings)["hlh-2004-criteria"]
    assert (a.value, a.status) == (value, status)


def test_missing_inputs_are_never_scored_as_normal(shipped: engine.KnowledgeBase) -> None:
    """Ferritin 900 and platelets 150, nothing else: the 2016 criteria could still be met, so the result is
    undecided and names exactly what to measure; the MS score is a range, not a number computed with zeros."""
    result = assess(shipped, {**FEVER, "ferritin": (900, "ng/mL"), "platelets": (150, "10*9/L")}, {})
    classification = result["mas-classification-2016"]
    assert classification.status == "indeterminate"
    assert sorted(m.what for m in classification.missing) == [
        "aspartate aminotransferase (AST)", "fibrinogen", "triglycerides"]
    ms = result["ms-score"]
    assert ms.status == "indeterminate" and ms.value is None and ms.value_range is not None
    lo, hi = ms.value_range
    assert hi is not None and lo < -2.1 <= hi
    assert {m.what for m in ms.missing} >= {"lactate dehydrogenase (LDH)", "fibrinogen"}


def test_explain_shows_every_term_its_points_and_what_decided_it(shipped: engine.KnowledgeBase) -> None:
    case: dict[str, Any] = {
        "case": {"id": "explain-score", "title": "HScore explained"},
        "patient": {"sex": "female", "age_years": 8},
        "timeline": {"start": "2024-05-01"},
        "diagnoses": [{"code": "sjia", "onset": "day -200"}],
        "observations": [{"analyte": "temperature", "value": 39.5, "unit": "Cel", "time": "day 0 07:00"},
                         {"analyte": "ferritin", "value": 6001, "unit": "ng/mL", "time": "day 0 07:00"}],
    }
    explanation = engine.explain(shipped, engine.snapshot_from_dict(case), "fardet2014.hscore", AT)
    data = explanation.to_json()["score"]
    assert data is not None and data["verdict"] == "unknown" and data["condition"] == "score 99 to 337"
    terms = {t["condition"].split(":")[0]: t for t in data["children"]}
    assert terms["body temperature"]["verdict"] == "true" and "49 points" in terms["body temperature"]["condition"]
    assert "39.5 °C" in terms["body temperature"]["children"][0]["decided_by"][0]
    assert terms["triglycerides"]["verdict"] == "unknown" and "0 to 64 points" in terms["triglycerides"]["condition"]
    assert terms["triglycerides"]["children"][0]["missing"][0]["what"] == "triglycerides"
    assert "score 99 to 337" in explanation.render_text(color=False)


def test_rules_can_compare_a_derived_score_with_a_number(tmp_path: Path) -> None:
    """derived: {fact: hscore, gte: 250} is met for a score of 337, not for 35, and undecided while the score's
    range straddles 250 - and the undecided rule names the inputs the score is missing."""
    rules = {"hscore.yaml": (RULES / "assessments" / "fardet2014.hscore.yaml").read_text(encoding="utf-8"),
             "high.yaml": rule_text("test.high-hscore", "derived: {fact: hscore, gte: 250}",
                                    "recommend: {indicator: warning, rationale: High HScore., actions: "
                                    "[{kind: monitor, target: infection-evaluation, text: Look.}]}")}
    kb = engine.load_knowledge_base(write_kb(tmp_path, rules))
    every_high = {**HS_QUIET_LABS, "temperature": (39.5, "Cel"), "ferritin": (6001, "ng/mL"),
                  "triglycerides": (4.01, "mmol/L"), "fibrinogen": (2.0, "g/L"), "ast": (100, "U/L"),
                  "haemoglobin": (80, "g/L"), "wbc": (2, "10*9/L"), "platelets": (50, "10*9/L")}
    all_present = {"known-immunosuppression": True, "hepatomegaly": True, "splenomegaly": True,
                   "haemophagocytosis": True}

    def state(labs: dict[str, tuple[float, str]], findings: dict[str, bool]) -> str:
        case: dict[str, Any] = {
            "case": {"id": "derived-value", "title": "Derived value"},
            "patient": {"sex": "female", "age_years": 8}, "timeline": {"start": "2024-05-01"},
            "diagnoses": [{"code": "sjia", "onset": "day -200"}],
            "observations": [{"analyte": a, "value": v, "unit": u, "time": "day 0 07:00"}
                             for a, (v, u) in labs.items()],
            "findings": [{"code": c, "present": p, "time": "day 0 08:00"} for c, p in findings.items()],
        }
        result = engine.evaluate(kb, engine.snapshot_from_dict(case), AT)
        if "test.high-hscore" in result.fired():
            return "fired"
        undecided = [u for u in result.indeterminate if u.rule_id == "test.high-hscore"]
        return f"undecided: {sorted({m.what for m in undecided[0].missing})}" if undecided else "not fired"

    assert state(every_high, all_present) == "fired"
    assert state(HS_QUIET_LABS, {**HS_FINDINGS_NONE, "haemophagocytosis": True}) == "not fired"
    assert state({k: v for k, v in every_high.items() if k != "triglycerides"},
                 {**all_present, "hepatomegaly": False, "splenomegaly": False}) == "undecided: ['triglycerides']"


def test_weights_and_ratios_apply_to_the_unit_the_term_is_written_in(tmp_path: Path) -> None:
    """A weight per g/L must not be applied to mg/dL: the same score written in mg/dL and in g/L, and a ratio of
    values written in mmol/L and g/L, give what the written units say."""
    score = ("derive:\n  fact: {fact}\n  score:\n    terms:\n      - {{value: {{analyte: fibrinogen, unit: {unit}, "
             "within: 72h}}, weight: {weight}}}\n    cutoff: {{lte: -2}}\n")
    rules = {
        "mg.yaml": rule_text("test.mg", "diagnosis: {code: sjia}", score.format(fact="in-mg", unit="mg/dL",
                                                                               weight=-0.004)),
        "g.yaml": rule_text("test.g", "diagnosis: {code: sjia}", score.format(fact="in-g", unit="g/L", weight=-0.4)),
        "ratio.yaml": rule_text("test.ratio", "diagnosis: {code: sjia}",
                                "derive:\n  fact: tg-per-fib\n  ratio:\n    numerator: {analyte: triglycerides, "
                                "unit: mmol/L, within: 72h}\n    denominator: {analyte: fibrinogen, unit: g/L, "
                                "within: 72h}\n    cutoff: {gt: 1.9}\n"),
    }
    kb = engine.load_knowledge_base(write_kb(tmp_path, rules))
    found = assess(kb, {"fibrinogen": (500, "mg/dL"), "triglycerides": (3.0, "mmol/L")}, {})
    assert (found["in-mg"].value, found["in-mg"].status) == (-2.0, "met")
    assert (found["in-g"].value, found["in-g"].status) == (-2.0, "met")
    assert found["in-g"].terms[0]["input"] == 5.0  # shown in the unit the term is written in
    assert (found["tg-per-fib"].value, found["tg-per-fib"].status) == (0.6, "not_met")  # 3.0 mmol/L / 5 g/L
    again = assess(kb, {"fibrinogen": (1.5, "g/L"), "triglycerides": (3.0, "mmol/L")}, {})
    assert (again["tg-per-fib"].value, again["tg-per-fib"].status) == (2.0, "met")
