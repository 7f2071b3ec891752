"""Verification reports: one result file per runtime, a JSON summary and JUnit XML for CI, and the terminal table.

`<out>/.reports/verify/<rt>.json` holds a runtime's last result with the inputs it was made from; the summary
files list every runtime of the catalog, a result whose inputs are no longer current as "not verified". When
`doit clean` removes what a result reported on, `forget` removes the result and marks the runtime "not verified"
in the summary files, so that no report still says it passed.
"""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from lambdaimages import layout
from lambdaimages.catalog import Catalog, Runtime
from lambdaimages.errors import ProjectError
from lambdaimages.tools.files import atomic_file, write_if_changed
from lambdaimages.verify import inputs, results
from lambdaimages.verify.results import CHECKS, FAIL, PASS, RuntimeResult

FORMAT = 1
SUMMARY_JSON = "verify.json"
JUNIT_XML = "verify.xml"
RESULTS = "verify"
NOT_VERIFIED = "not verified"


@dataclass(frozen=True)
class Verdict:
    """One runtime of the catalog in the summary: its result if it is current, else why there is none."""

    runtime: Runtime
    result: RuntimeResult | None
    status: str  # PASS, FAIL or NOT_VERIFIED
    reason: str = ""
    verified_at: str | None = None


def result_path(out: Path, runtime: str) -> Path:
    return layout.reports_dir(out) / RESULTS / f"{runtime}.json"


def record(out: Path, result: RuntimeResult, made_from: dict) -> None:
    """Store a runtime's result with the inputs it was made from (atomically)."""
    data = {"format": FORMAT, "verified_at": _now(), "inputs": made_from, "result": result.to_json()}
    with atomic_file(result_path(out, result.runtime)) as f:
        f.write((json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def verdicts(out: Path, catalog: Catalog) -> list[Verdict]:
    """Every runtime of the catalog with its last result, which counts only while its inputs are current."""
    found = []
    for runtime in catalog.runtimes:
        if (missing := inputs.missing(out, runtime)) is not None:
            found.append(Verdict(runtime, None, NOT_VERIFIED, str(missing)))
            continue
        try:
            data = json.loads(result_path(out, runtime.name).read_text(encoding="utf-8"))
            result = RuntimeResult.from_json(data["result"])
        except FileNotFoundError:
            found.append(Verdict(runtime, None, NOT_VERIFIED, f"never verified: run doit verify:{runtime.name}"))
            continue
        except (OSError, ValueError, KeyError, TypeError):
            found.append(Verdict(runtime, None, NOT_VERIFIED, f"unreadable result: run doit verify:{runtime.name}"))
            continue
        try:
            current = data.get("inputs") == inputs.gather(out, runtime)
        except ProjectError as exc:
            found.append(Verdict(runtime, None, NOT_VERIFIED, str(exc)))
            continue
        if not current:
            reason = f"the image or snapshot changed since it was verified: run doit verify:{runtime.name}"
            found.append(Verdict(runtime, None, NOT_VERIFIED, reason, data.get("verified_at")))
            continue
        found.append(Verdict(runtime, result, FAIL if result.failed else PASS, "", data.get("verified_at")))
    return found


def write(out: Path, found: list[Verdict]) -> tuple[Path, Path]:
    """Write the JSON summary and the JUnit XML of `found` into `<out>/.reports/`; their paths."""
    folder = layout.reports_dir(out)
    summary, junit = folder / SUMMARY_JSON, folder / JUNIT_XML
    # Only when changed: an up-to-date rerun rewrites no report.
    data = summary_json(found)
    try:  # the same verdicts as the file already says: keep its generated_at, so nothing changes
        kept = json.loads(summary.read_text())
        if {**kept, "generated_at": data["generated_at"]} == data:
            data["generated_at"] = kept["generated_at"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    write_if_changed(summary, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())
    xml = io.BytesIO()
    ET.ElementTree(junit_xml(found)).write(xml, encoding="utf-8", xml_declaration=True)
    write_if_changed(junit, xml.getvalue())
    return summary, junit


def forget(out: Path, runtime: Runtime, reason: str) -> list[Path]:
    """What `doit clean` removed was reported on: remove the runtime's result and mark it `not verified`
    (because of `reason`) in the summary files, so that no report still says it passed; the files changed.

    The other runtimes' entries stay as they are; an unreadable summary file is removed.
    """
    gone = Verdict(runtime, None, NOT_VERIFIED, reason)
    folder = layout.reports_dir(out)
    changed = [path for path in (result_path(out, runtime.name),) if path.exists()]
    for path in changed:
        path.unlink()
    for path, rewrite in ((folder / SUMMARY_JSON, _forget_json), (folder / JUNIT_XML, _forget_junit)):
        try:
            data = rewrite(path.read_bytes(), gone)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, ET.ParseError):
            path.unlink(missing_ok=True)
            data = b""
        if data is None:
            continue
        if data:
            write_if_changed(path, data)
        changed.append(path)
    return changed


def _forget_json(text: bytes, gone: Verdict) -> bytes | None:
    """The summary with `gone` in place of its runtime's entry; None when it has nothing to change."""
    runtimes = json.loads(text)["runtimes"]
    items = [_runtime_json(gone) if item["runtime"] == gone.runtime.name else item for item in runtimes]
    if items == runtimes:
        return None
    return (json.dumps(_summary(items), indent=2, ensure_ascii=False) + "\n").encode()


def _forget_junit(text: bytes, gone: Verdict) -> bytes | None:
    """The JUnit XML with `gone`'s testsuite in place of its runtime's, totals recounted; None when unchanged."""
    suites = ET.fromstring(text)
    found = [i for i, suite in enumerate(suites) if suite.tag == "testsuite" and suite.get("name") == gone.runtime.name]
    if not found or suites[found[0]].find("testcase/error") is not None:
        return None
    suites[found[0]] = _suite(gone)[0]
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for suite in suites.iter("testsuite"):
        for key in totals:
            totals[key] += float(suite.get(key, 0)) if key == "time" else int(suite.get(key, 0))
    _set_counts(suites, totals)
    xml = io.BytesIO()
    ET.ElementTree(suites).write(xml, encoding="utf-8", xml_declaration=True)
    return xml.getvalue()


def summary_json(found: list[Verdict]) -> dict:
    return _summary([_runtime_json(verdict) for verdict in found])


def _summary(runtimes: list[dict]) -> dict:
    counts = {status: sum(item["status"] == status for item in runtimes) for status in (PASS, FAIL, NOT_VERIFIED)}
    return {
        "format": FORMAT,
        "generated_at": _now(),
        "passed": bool(runtimes) and counts[PASS] == len(runtimes),
        "counts": {
            "runtimes": len(runtimes),
            "passed": counts[PASS],
            "failed": counts[FAIL],
            "not_verified": counts[NOT_VERIFIED],
        },
        "runtimes": runtimes,
    }


def _runtime_json(verdict: Verdict) -> dict:
    item = {"runtime": verdict.runtime.name, "status": verdict.status, "verified_at": verdict.verified_at}
    if verdict.reason:
        item["reason"] = verdict.reason
    if verdict.result is not None:
        item["architectures"] = [
            {
                **_without_checks(arch),
                "seconds": round(arch.seconds, 3),
                "checks": [_check_json(c) for c in arch.checks],
            }
            for arch in verdict.result.architectures
        ]
    return item


def _without_checks(arch: results.ArchResult) -> dict:
    return {"arch": arch.arch, "image": arch.image, "image_id": arch.image_id, "notes": list(arch.notes)}


def _check_json(check: results.Check) -> dict:
    return {
        "name": check.name,
        "status": check.status,
        "summary": check.summary,
        "details": list(check.details),
        "seconds": round(check.seconds, 3),
    }


def junit_xml(found: list[Verdict]) -> ET.Element:
    """JUnit XML: a testsuite per runtime, a testcase per architecture and check.

    A failed check is a <failure>, a check that does not apply (not built, no smoke test) is <skipped>, and a
    runtime without a current result is one testcase with an <error>.
    """
    suites = ET.Element("testsuites", name="lambdaimages verify")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for verdict in found:
        suite, counts = _suite(verdict)
        suites.append(suite)
        for key in totals:
            totals[key] += counts[key]
    _set_counts(suites, totals)
    return suites


def _suite(verdict: Verdict) -> tuple[ET.Element, dict]:
    """A runtime's testsuite (its counts set) and its counts."""
    suite = ET.Element("testsuite", name=verdict.runtime.name)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    if verdict.result is None:
        case = ET.SubElement(suite, "testcase", classname=verdict.runtime.name, name="verify", time="0")
        ET.SubElement(case, "error", message=f"{NOT_VERIFIED}: {verdict.reason}", type=NOT_VERIFIED)
        counts["tests"] += 1
        counts["errors"] += 1
    else:
        for arch in verdict.result.architectures:
            for check in arch.checks:
                case = ET.SubElement(
                    suite, "testcase", classname=verdict.runtime.name, name=f"{arch.arch} {check.name}",
                    time=f"{check.seconds:.3f}",
                )  # fmt: skip
                counts["tests"] += 1
                counts["time"] += check.seconds
                if check.status == FAIL:
                    failure = ET.SubElement(case, "failure", message=check.summary, type=check.name)
                    failure.text = "\n".join(check.details) or check.summary
                    counts["failures"] += 1
                elif check.status != PASS:
                    ET.SubElement(case, "skipped", message=f"{check.status}: {check.summary}")
                    counts["skipped"] += 1
                elif arch.notes and check.name == "config":
                    ET.SubElement(case, "system-out").text = "\n".join(arch.notes)
    _set_counts(suite, counts)
    return suite, counts


def _set_counts(element: ET.Element, counts: dict) -> None:
    for key, value in counts.items():
        element.set(key, f"{value:.3f}" if key == "time" else str(value))


# -- terminal ------------------------------------------------------------------------------------

HEADER = ("runtime", "arch", *CHECKS, "seconds")


def table(found: list[Verdict]) -> str:
    """The terminal table: a row per runtime and architecture."""
    rows = [HEADER]
    for verdict in found:
        if verdict.result is None:
            for arch in verdict.runtime.architectures:
                rows.append((verdict.runtime.name, arch, *([NOT_VERIFIED] + ["-"] * (len(CHECKS) - 1)), "-"))
            continue
        for arch in verdict.result.architectures:
            cells = [arch.check(name).status for name in CHECKS]
            rows.append((verdict.runtime.name, arch.arch, *cells, f"{arch.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i == len(row) - 1 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def describe(result: RuntimeResult) -> list[str]:
    """What a verification found, for the terminal: a line per architecture, then notes and failure details."""
    lines = []
    for arch in result.architectures:
        cells = ", ".join(f"{check.name} {check.status}" for check in arch.checks)
        lines.append(f"verify {result.runtime} {arch.arch}: {cells} ({arch.seconds:.1f} s)")
        lines += [f"  note: {note}" for note in arch.notes]
        for check in arch.checks:
            if check.failed:
                lines.append(f"  {FAIL} {check.name}: {check.summary}")
                lines += [f"    {line}" for line in check.details]
            elif check.status != PASS:
                lines.append(f"  {check.name}: {check.status}: {check.summary}")
    return lines


def closing_line(found: list[Verdict], paths: tuple[Path, Path]) -> str:
    counts = {status: sum(verdict.status == status for verdict in found) for status in (PASS, FAIL, NOT_VERIFIED)}
    return (
        f"verify: {len(found)} runtimes: {counts[PASS]} passed, {counts[FAIL]} failed, "
        f"{counts[NOT_VERIFIED]} not verified; reports: {paths[0]}, {paths[1]}"
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
