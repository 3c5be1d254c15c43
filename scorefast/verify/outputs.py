"""Machine-readable results: JSON (a header and the records) and JUnit XML (one testcase per check)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

from .records import FAIL, SKIP, Record


def _ensure_dir(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def write_json(path: str, header: dict, records: list[Record]) -> None:
    """``{"header": {...}, "records": [{op, backend, dtype, variant, status, ok, max_error, budget,
    ratio, detail, seconds, device, kind, extra}, ...]}``; numbers that are not finite are null."""
    _ensure_dir(path)
    with open(path, "w") as f:
        json.dump({"header": header, "records": [r.to_json() for r in records]}, f, indent=1, allow_nan=False)
        f.write("\n")


def _properties(parent: ET.Element, header: dict) -> None:
    props = ET.SubElement(parent, "properties")
    for key, value in header.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        ET.SubElement(props, "property", name=key, value=text)


def write_junit(path: str, header: dict, records: list[Record]) -> None:
    """JUnit XML: a testsuite per backend, a testcase per check (classname
    ``scorefast.verify.<backend>.<op>``, name ``<variant>[<dtype>]``), failures with their message,
    skipped checks (an unavailable backend, a kernel a backend does not have) with the reason."""
    root = ET.Element(
        "testsuites",
        name="scorefast verify",
        tests=str(len(records)),
        failures=str(sum(r.status == FAIL for r in records)),
        errors="0",
        skipped=str(sum(r.status == SKIP for r in records)),
        time=f"{sum(r.seconds for r in records):.3f}",
    )
    for backend in dict.fromkeys(r.backend for r in records):
        mine = [r for r in records if r.backend == backend]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"scorefast.verify.{backend}",
            tests=str(len(mine)),
            failures=str(sum(r.status == FAIL for r in mine)),
            errors="0",
            skipped=str(sum(r.status == SKIP for r in mine)),
            time=f"{sum(r.seconds for r in mine):.3f}",
            timestamp=str(header.get("date", "")),
            hostname=str(header.get("hostname", "")),
        )
        _properties(suite, header)
        for r in mine:
            kind = "" if r.kind == "reference" else f".{r.kind}"
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"scorefast.verify.{backend}{kind}.{r.op}",
                name=f"{r.variant}[{r.dtype}]",
                time=f"{r.seconds:.3f}",
            )
            if r.status == FAIL:
                failure = ET.SubElement(case, "failure", message=r.detail, type="VerifyFailure")
                failure.text = json.dumps(r.to_json(), indent=1, allow_nan=False)
            elif r.status == SKIP:
                ET.SubElement(case, "skipped", message=r.detail)
    _ensure_dir(path)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
