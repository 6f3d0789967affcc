"""The figures of the last mutmut runs (scripts/mutate): per module and overall,
the mutants killed, survived, timed out and untested, and the share detected
(killed or timed out, over all mutants tested); then the surviving mutants' names.
Reads mutmut's results in mutants/ (one ``.meta`` file per mutated module)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
COLUMNS = ("killed", "timeout", "survived", "no tests", "other")


def module_counts() -> dict[str, tuple[Counter, list[str]]]:
    """Per module: the count of mutants by status and the names of the survivors."""
    results = {}
    for meta in sorted(MUTANTS.glob("client/**/*.py.meta")):
        exit_codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        if not exit_codes:
            continue
        counts: Counter = Counter()
        survivors = []
        for name, code in sorted(exit_codes.items()):
            status = status_by_exit_code[code]
            if status == "survived":
                survivors.append(name)
            counts[status if status in COLUMNS or status == "not checked" else "other"] += 1
        results[str(meta.relative_to(MUTANTS))[:-len(".meta")]] = (counts, survivors)
    return results


def row(name: str, counts: Counter) -> str:
    tested = sum(counts[column] for column in COLUMNS)
    detected = counts["killed"] + counts["timeout"]
    share = f"{100 * detected / tested:5.1f} %" if tested else "    -  "
    pending = f"  ({counts['not checked']} not run)" if counts["not checked"] else ""
    return (f"{name:34} " + " ".join(f"{counts[column]:>8}" for column in COLUMNS)
            + f" {tested:>6} {share}{pending}")


def main() -> int:
    results = module_counts()
    if not results:
        print("no mutmut results in mutants/: run scripts/mutate first")
        return 1
    print(f"{'module':34} " + " ".join(f"{column:>8}" for column in COLUMNS)
          + f" {'total':>6} {'share':>7}")
    total: Counter = Counter()
    for name, (counts, _) in results.items():
        print(row(name, counts))
        total += counts
    print(row("overall", total))
    survivors = [name for _, names in results.values() for name in names]
    if survivors:
        print(f"\n{len(survivors)} surviving mutant(s) (.venv/bin/mutmut show NAME):")
        print("\n".join(f"  {name}" for name in survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
