"""The 2016 EULAR/ACR/PRINTO MAS classification, decided five ways on the same inputs, with a correctness gate.

- mascds: a knowledge base holding only that rule and the ``febrile`` assessment it uses, built at run time in a
  temporary folder from the shipped files (rules/knowledge-base.yaml and the two rule files, read unchanged, so
  there is no copy to drift from rules/), evaluated with ``KnowledgeBase.evaluate``.
- hand-written: plain Python from the Snapshot (the floor): the values the criterion reads, then the decision.
- zen-engine: the JDM graph ``mas2016.jdm.json`` (an expression node for the six criteria, a first-hit decision
  table for the classification, an expression node for what is missing), fed the values the hand-written code reads.
- durable direct: a minimal durable_rules ruleset (one rule per criterion met / not met, one fact per value) run on
  the C engine directly; the three-valued combination is the hand-written one, as in mascds (the Rete matches,
  Python decides).

Every implementation answers with the same granularity: a status (met, not_met, undecided, not_applicable) and,
when undecided, which values were missing. :func:`gate` refuses to go on if any answer differs from mascds's.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import engine
from engine.core.snapshot import Diagnosis, Observation, Patient, Snapshot

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RULE_ID = "ravelli2016.mas-classification"
FACT = "mas-classification-2016"
RULE_FILES = ("assessments/ravelli2016.mas-classification.yaml", "assessments/fardet2014.febrile.yaml")
VALUES = ("fever", "ferritin", "platelets", "ast", "triglycerides", "fibrinogen")
LABS = ("platelets", "ast", "triglycerides", "fibrinogen")
HOUR = 3600
DAY = 24 * HOUR
START = 1_704_067_200  # 2024-01-01T00:00:00Z
# mascds names a missing input by its display name (engine/data/analytes.yaml)
MISSING_NAMES = {"body temperature": "fever", "ferritin": "ferritin", "platelet count": "platelets",
                 "aspartate aminotransferase (AST)": "ast", "triglycerides": "triglycerides",
                 "fibrinogen": "fibrinogen"}

Answer = tuple[str, tuple[str, ...]]  # (status, missing values in VALUES order)


class GateError(Exception):
    """An implementation disagreed with mascds: no figures may be printed."""


@contextmanager
def kb_2016_dir() -> Iterator[Path]:
    """A rules folder holding knowledge-base.yaml and the two rules of the 2016 classification, copied unchanged
    from rules/ into a temporary folder for as long as the context lasts."""
    with tempfile.TemporaryDirectory(prefix="mascds-kb2016-") as tmp:
        d = Path(tmp)
        shutil.copy(ROOT / "rules" / "knowledge-base.yaml", d / "knowledge-base.yaml")
        for rel in RULE_FILES:
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / "rules" / rel, d / rel)
        yield d


def load_kb_2016() -> engine.KnowledgeBase:
    with kb_2016_dir() as d:
        return engine.load_knowledge_base(d)


# ---- inputs ---------------------------------------------------------------------------------------------------

# values on, just above and just below each threshold; (value, written) where written differs from the canonical unit
LAB_VALUES: dict[str, list[float]] = {
    "ferritin": [300, 684, 685, 2000, 6001, 15000],
    "platelets": [50, 110, 181, 182, 250],
    "ast": [25, 48, 49, 150, 400],
    "triglycerides": [100, 156, 157, 265],
    "fibrinogen": [100, 250, 360, 361, 450],
}
CANONICAL = {"ferritin": "ng/mL", "platelets": "10*9/L", "ast": "U/L", "triglycerides": "mg/dL",
             "fibrinogen": "mg/dL", "temperature": "Cel"}
TEMPERATURES = [36.8, 38.3, 38.4, 38.5, 39.6]


def _obs(out: list[Observation], analyte: str, value: float, t: int, rng: random.Random) -> None:
    written = f"{value:g} {CANONICAL[analyte]}"
    if analyte == "fibrinogen" and rng.random() < 0.3:
        written = f"{value / 100:g} g/L"  # read back as the same mg/dL
    elif analyte == "platelets" and rng.random() < 0.3:
        written = f"{value:g} 10*3/uL"
    out.append(Observation(f"gen:o{len(out)}", False, analyte, float(value), t, written))


def snapshot(rng: random.Random, n: int) -> tuple[Snapshot, int]:
    """One generated patient and an evaluation time. Readings fall inside the windows (temperature 24 h, laboratory
    72 h), outside them (older) and after the evaluation time, never on a window's edge; times are distinct."""
    at = START + 30 * DAY
    diagnoses = []
    if rng.random() < 0.85:
        diagnoses.append(Diagnosis("gen:dx-sjia", False, "sjia", at - int(rng.uniform(20, 400)) * DAY, None))
    obs: list[Observation] = []
    used: set[int] = set()

    def when(lo_h: float, hi_h: float) -> int:  # a distinct time lo_h..hi_h hours before the evaluation time
        while True:
            t = at - int(rng.uniform(lo_h, hi_h) * 4) * 900
            if t not in used:
                used.add(t)
                return t

    if rng.random() < 0.8:
        for _ in range(rng.choice([1, 1, 2, 3])):
            _obs(obs, "temperature", rng.choice(TEMPERATURES), when(0.25, 23.5), rng)
    if rng.random() < 0.3:
        _obs(obs, "temperature", rng.choice(TEMPERATURES), when(25, 60), rng)  # too old to count
    for analyte, values in LAB_VALUES.items():
        present = 0.9 if analyte == "ferritin" else 0.75
        if rng.random() < present:
            for _ in range(rng.choice([1, 1, 2])):
                _obs(obs, analyte, rng.choice(values), when(0.25, 71.5), rng)
        if rng.random() < 0.25:
            _obs(obs, analyte, rng.choice(values), when(73, 200), rng)  # too old to count
        if rng.random() < 0.1:
            _obs(obs, analyte, rng.choice(values), at + int(rng.uniform(1, 40)) * 900, rng)  # after the time
    patient = Patient("gen:pt", False, rng.choice(["female", "male"]), at - int(rng.uniform(2, 16) * 365.25) * DAY,
                      None, None)
    return Snapshot(f"gen-{n}", f"generated {n}", patient, at - 30 * DAY, tuple(diagnoses), tuple(obs)), at


def inputs(n: int, seed: int) -> list[tuple[Snapshot, int]]:
    rng = random.Random(seed)
    return [snapshot(rng, i) for i in range(n)]


# ---- the hand-written decision ----------------------------------------------------------------------------------

def values(snap: Snapshot, at: int) -> dict[str, Any]:
    """The values the criterion reads: sJIA recorded; febrile (highest temperature of the last 24 h >= 38.4 Cel,
    None with none); each laboratory value the latest of the last 72 h (None with none)."""
    latest: dict[str, tuple[int, float]] = {}
    highest: float | None = None
    for o in snap.observations:
        if o.time > at:
            continue
        if o.analyte == "temperature":
            if o.time > at - DAY and (highest is None or o.value > highest):
                highest = o.value
        elif o.analyte in LAB_VALUES and o.time > at - 3 * DAY:
            seen = latest.get(o.analyte)
            if seen is None or o.time > seen[0]:
                latest[o.analyte] = (o.time, o.value)
    out: dict[str, Any] = {"sjia": any(d.code == "sjia" for d in snap.diagnoses),
                           "fever": None if highest is None else highest >= 38.4}
    for analyte in LAB_VALUES:
        seen = latest.get(analyte)
        out[analyte] = None if seen is None else seen[1]
    return out


def criteria(v: dict[str, Any]) -> dict[str, bool | None]:
    """Each criterion met (True), not met (False) or unknown (None)."""
    def test(x: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if x is None else ok(x)
    return {"fever": v["fever"],
            "ferritin": test(v["ferritin"], lambda x: x > 684),
            "platelets": test(v["platelets"], lambda x: x <= 181),
            "ast": test(v["ast"], lambda x: x > 48),
            "triglycerides": test(v["triglycerides"], lambda x: x > 156),
            "fibrinogen": test(v["fibrinogen"], lambda x: x <= 360)}


def combine(sjia: bool, c: dict[str, bool | None]) -> Answer:
    """Kleene three-valued logic: all(fever, ferritin, at least 2 of the four laboratory criteria)."""
    if not sjia:
        return "not_applicable", ()
    met = sum(1 for k in LABS if c[k] is True)
    unknown = [k for k in LABS if c[k] is None]
    labs = True if met >= 2 else (False if met + len(unknown) < 2 else None)
    parts = (c["fever"], c["ferritin"], labs)
    if False in parts:
        return "not_met", ()
    if None not in parts:
        return "met", ()
    missing = [k for k in ("fever", "ferritin") if c[k] is None]
    if labs is None:
        missing += unknown
    return "undecided", tuple(missing)


def hand_written(snap: Snapshot, at: int) -> Answer:
    v = values(snap, at)
    return combine(v["sjia"], criteria(v))


# ---- mascds -----------------------------------------------------------------------------------------------------

def mascds_answer(result: engine.Result) -> Answer:
    found = [a for a in result.assessments if a.fact == FACT]
    if len(found) != 1:
        raise GateError(f"mascds gave {len(found)} answers for {FACT}")
    a = found[0]
    status = {"indeterminate": "undecided"}.get(a.status, a.status)
    missing = set()
    for m in a.missing:
        if m.what not in MISSING_NAMES:
            raise GateError(f"mascds names a missing value the comparison does not know: {m.what!r}")
        missing.add(MISSING_NAMES[m.what])
    return status, tuple(k for k in VALUES if k in missing)


# ---- zen-engine -------------------------------------------------------------------------------------------------

@dataclass
class Zen:
    decision: Any

    @classmethod
    def load(cls) -> Zen:
        import zen  # the optional `peers` extra

        return cls(zen.ZenEngine().create_decision((HERE / "mas2016.jdm.json").read_text()))

    def evaluate(self, v: dict[str, Any]) -> dict[str, Any]:
        return self.decision.evaluate(v)["result"]  # type: ignore[no-any-return]

    @staticmethod
    def answer(out: dict[str, Any]) -> Answer:
        return out["status"], tuple(k for k in VALUES if out[f"missing_{k}"])


# ---- durable_rules directly -------------------------------------------------------------------------------------

RULESET = {
    "fever_t": {"all": [{"m": {"$and": [{"n": "fever"}, {"v": 1}]}}]},
    "fever_f": {"all": [{"m": {"$and": [{"n": "fever"}, {"v": 0}]}}]},
    "ferritin_t": {"all": [{"m": {"$and": [{"n": "ferritin"}, {"$gt": {"v": 684}}]}}]},
    "ferritin_f": {"all": [{"m": {"$and": [{"n": "ferritin"}, {"$lte": {"v": 684}}]}}]},
    "platelets_t": {"all": [{"m": {"$and": [{"n": "platelets"}, {"$lte": {"v": 181}}]}}]},
    "platelets_f": {"all": [{"m": {"$and": [{"n": "platelets"}, {"$gt": {"v": 181}}]}}]},
    "ast_t": {"all": [{"m": {"$and": [{"n": "ast"}, {"$gt": {"v": 48}}]}}]},
    "ast_f": {"all": [{"m": {"$and": [{"n": "ast"}, {"$lte": {"v": 48}}]}}]},
    "triglycerides_t": {"all": [{"m": {"$and": [{"n": "triglycerides"}, {"$gt": {"v": 156}}]}}]},
    "triglycerides_f": {"all": [{"m": {"$and": [{"n": "triglycerides"}, {"$lte": {"v": 156}}]}}]},
    "fibrinogen_t": {"all": [{"m": {"$and": [{"n": "fibrinogen"}, {"$lte": {"v": 360}}]}}]},
    "fibrinogen_f": {"all": [{"m": {"$and": [{"n": "fibrinogen"}, {"$gt": {"v": 360}}]}}]},
}


class DurableDirect:
    """The criteria as a durable_rules ruleset on the C engine (no mascds code): one fact per known value, one
    session (state) per patient, deleted after it."""

    def __init__(self) -> None:
        import durable_rules_engine as dre

        self.dre = dre
        self.handle = dre.create_ruleset("mas2016direct", json.dumps(RULESET))
        self.count = 0

    def criteria(self, v: dict[str, Any]) -> dict[str, bool | None]:
        dre = self.dre
        self.count += 1
        sid = f"p{self.count}"
        facts = [{"id": f"{sid}.{k}", "sid": sid, "n": k, "v": (1 if x else 0) if k == "fever" else x}
                 for k in VALUES if (x := v[k]) is not None]
        out: dict[str, bool | None] = dict.fromkeys(VALUES)
        if facts:
            _, offset = dre.assert_facts(self.handle, json.dumps(facts))
            result = dre.start_action_for_state(self.handle, offset)
            messages = result[1] if result else None
            while messages:
                for rule in json.loads(messages):
                    out[rule[:-2]] = rule.endswith("_t")
                messages = dre.complete_and_start_action(self.handle, offset)
            dre.delete_state(self.handle, sid)
        return out

    def answer(self, snap: Snapshot, at: int) -> Answer:
        v = values(snap, at)
        return combine(v["sjia"], self.criteria(v))

    def close(self) -> None:
        self.dre.delete_ruleset(self.handle)


# ---- the gate ---------------------------------------------------------------------------------------------------

def gate(kb: engine.KnowledgeBase, data: Sequence[tuple[Snapshot, int]], zen: Zen | None,
         durable: DurableDirect | None) -> dict[str, int]:
    """Every implementation's answer equals mascds's (both backends) on every input; the count of each status.
    Raises :class:`GateError` naming the first disagreement."""
    counts: dict[str, int] = {}
    for snap, at in data:
        want = mascds_answer(kb.evaluate(snap, at))
        got = {"mascds reference backend": mascds_answer(kb.evaluate(snap, at, backend="reference")),
               "hand-written": hand_written(snap, at)}
        if zen is not None:
            got["zen-engine"] = Zen.answer(zen.evaluate(values(snap, at)))
        if durable is not None:
            got["durable direct"] = durable.answer(snap, at)
        for name, answer in got.items():
            if answer != want:
                raise GateError(f"{snap.id}: {name} answered {answer}, mascds {want} (values {values(snap, at)})")
        counts[want[0]] = counts.get(want[0], 0) + 1
    return counts


# ---- FHIR Bundles: cql-execution ----------------------------------------------------------------------------------

def _shared() -> Path:
    """The reference material read in place, as tests/conftest.py finds it: $MASCDS_SHARED, else the nearest
    ``shared/`` beside this checkout or one of its parents."""
    import os

    env = os.environ.get("MASCDS_SHARED")
    if env:
        return Path(env)
    for parent in ROOT.parents:
        if (parent / "shared" / "README.md").is_file():
            return parent / "shared"
    return ROOT.parent / "shared"


SYNTHEA = _shared() / "data" / "fhir" / "synthea-r4"


def synthea_patients(limit: int | None = None) -> list[Path]:
    """The Synthea Bundles that hold one patient's record (the folder also has Bundles of hospitals and
    practitioners, with no Patient)."""
    out = []
    for p in sorted(SYNTHEA.glob("*.json")):
        bundle = json.loads(p.read_text())
        kinds = [e.get("resource", {}).get("resourceType") for e in bundle.get("entry", ())]
        if kinds.count("Patient") == 1:
            out.append(p)
            if limit is not None and len(out) == limit:
                break
    return out


def bundle_time(bundle: dict[str, Any]) -> int:
    """The evaluation time for a Bundle written elsewhere: its latest Observation's effective time (every Synthea
    record ends at a different date), else now."""
    from engine.core.times import parse_time

    latest: int | None = None
    for entry in bundle.get("entry", ()):
        res = entry.get("resource", {})
        when = res.get("effectiveDateTime") if res.get("resourceType") == "Observation" else None
        if when:
            t = parse_time(when)
            latest = t if latest is None or t > latest else latest
    if latest is None:
        import time

        return int(time.time())
    return latest


class CqlRunner:
    """The node process running cql_runner.mjs, kept for a whole benchmark so its JIT stays warm."""

    def __init__(self, bundles: Sequence[tuple[Path, int]], cpu: int | None = None) -> None:
        import os
        import subprocess

        from engine.core.times import iso

        if not (HERE / "node_modules" / "cql-execution").is_dir():
            raise FileNotFoundError(f"{HERE / 'node_modules'} has no cql-execution: run `npm ci` in {HERE}")
        # pinned to the benchmark's core, so that both sides get the same share of the machine (no threads run here)
        pin = None if cpu is None else lambda: os.sched_setaffinity(0, {cpu})
        self.proc = subprocess.Popen(["node", str(HERE / "cql_runner.mjs")], cwd=HERE, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, preexec_fn=pin)  # noqa: PLW1509
        self._send({"bundles": [{"path": str(p), "at": iso(at)} for p, at in bundles]})
        ready = json.loads(self._read())
        if ready.get("ready") != len(bundles):
            raise RuntimeError(f"cql_runner.mjs did not load the bundles: {ready}")

    def _send(self, doc: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((doc if isinstance(doc, str) else json.dumps(doc)) + "\n")
        self.proc.stdin.flush()

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"cql_runner.mjs stopped (exit code {self.proc.wait()})")
        return line

    def round(self) -> list[dict[str, Any]]:
        """Every bundle once: [{status, missing, cpu_us, wall_us}, ...]."""
        self._send("round")
        return json.loads(self._read())  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    @staticmethod
    def answer(out: dict[str, Any]) -> Answer:
        return out["status"], tuple(out["missing"])


def from_bundle(kb: engine.KnowledgeBase, bundle: dict[str, Any], at: int) -> Answer:
    return mascds_answer(kb.evaluate(engine.snapshot_from_bundle(bundle).snapshot, at))
