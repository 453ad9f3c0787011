"""`ioa run --dry-run`: what a run would spend on the teacher, before it spends anything.

Call counts follow the loop's structure (DESIGN §5) in the worst case (every module a target, every
remediation round used); token means are typical of our prompts, refined by what the run's own cache has
already measured when it exists.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from ioa.accounting import Accountant, Estimate, dry_run_estimate
from ioa.adapter import pilot_families
from ioa.config import RunConfig
from ioa.diagnosis import selected_modules
from ioa.domains import get_domain

# (prompt, completion) tokens per call, before anything is measured: a probe asks for a worked solution,
# a worked teaching solution is a JSON object of steps, an answer key is one short JSON line.
TYPICAL_TOKENS = {"probe": (90, 160), "steps": (230, 170), "bare": (70, 12)}


@dataclass(frozen=True)
class PhaseEstimate:
    phase: str
    estimate: Estimate


def _measured_means(config: RunConfig) -> tuple[float, float] | None:
    """Mean prompt/completion tokens of the teacher calls already in this run's cache, if any."""
    path = config.run_dir / "cache.sqlite"
    if not path.exists():
        return None
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT AVG(prompt_tokens), AVG(completion_tokens), COUNT(*) FROM calls WHERE model = ?",
            (config.teacher.spec,),
        ).fetchone()
    return (row[0], row[1]) if row and row[2] else None


def estimate_run(config: RunConfig) -> list[PhaseEstimate]:
    n_modules = len(selected_modules(get_domain(config.domain), config.domain.modules))
    a, o = config.adapter, config.organizer
    price = Accountant.from_config(config.accounting).price_for(config.teacher.spec)
    measured = _measured_means(config)
    bare = a.representation == "bare"
    per_sample = TYPICAL_TOKENS["bare" if bare else "steps"]
    calls = {
        "probing": (n_modules * config.identifier.probes_per_module, TYPICAL_TOKENS["probe"]),
        "calibration": (0 if a.representation != "auto" or a.calibration == "stage"
                        else n_modules * a.pilot_samples_per_module * len(pilot_families(a.candidates)),
                        TYPICAL_TOKENS["steps"]),
        # Retries of malformed or wrong replies can double a module's calls at worst.
        "synthesis": (n_modules * a.samples_per_module * a.max_attempts, per_sample),
        "remediation": (round(n_modules * a.samples_per_module * o.remediation_fraction)
                        * o.max_remediation_rounds * a.max_attempts, per_sample),
        "bridging": (round(n_modules * a.samples_per_module * o.bridging_fraction), per_sample),
    }
    rows = []
    for phase, (n, (prompt, completion)) in calls.items():
        if measured and phase == "probing":
            prompt, completion = measured
        rows.append(PhaseEstimate(phase, dry_run_estimate(n, prompt, completion, price)))
    return rows


def estimate_json(rows: list[PhaseEstimate]) -> str:
    return json.dumps({r.phase: r.estimate.as_dict() for r in rows})
