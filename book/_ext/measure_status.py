"""Measure the chapters and write book/_data/status.json (the status page).

    .venv/bin/python book/_ext/measure_status.py [NN_slug ...]
        Run each chapter's committed notebook under nbval (fresh kernel, one
        torch thread, the sanitizers of tests/book/sanitize.cfg). Records the
        wall-clock time, the CPU time (pytest and the kernel together) and,
        when the outputs matched, today's date as "verified".
    .venv/bin/python book/_ext/measure_status.py --gpu [NN_slug ...]
        On a machine with a GPU: execute each chapter (outputs differ from
        the committed CPU ones, so nothing is verified) and record its
        wall-clock time as gpu_wall_s.
    .venv/bin/python book/_ext/measure_status.py --from-metadata [NN_slug ...]
        Costs nothing: the wall-clock time between the first and the last
        cell of the committed notebook, as recorded when `make chapter`
        executed it, and that day as the date its outputs were verified.

Chapters not named keep their entries. The torch and dlcourse versions are
those installed in the running environment.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from course_pages import (  # noqa: E402
    BOOK, REPO, STATUS_JSON, chapter_slugs, load_status)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "DLCOURSE_THREADS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
       # the pinned numerics of the Makefile and tests/conftest.py
       "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE",
       "ONEDNN_MAX_CPU_ISA": "AVX2"}
ENV.pop("MPLBACKEND", None)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def nbval(slug: str) -> dict:
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--nbval", f"book/{slug}.ipynb",
         "--nbval-sanitize-with", "tests/book/sanitize.cfg"],
        cwd=REPO, env=ENV, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    entry = {"cpu_wall_s": round(wall, 1), "cpu_process_s": round(cpu, 1),
             "measured_by": f"nbval, {os.cpu_count()} cores"}
    if proc.returncode == 0:
        entry["verified"] = dt.date.today().isoformat()
    else:
        print(proc.stdout[-3000:], file=sys.stderr)
        print(f"{slug}: outputs did NOT match; not marked verified",
              file=sys.stderr)
    return entry


def gpu(slug: str) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
             "--execute", "--ExecutePreprocessor.timeout=600",
             "--output-dir", tmp, str(BOOK / f"{slug}.ipynb")],
            cwd=BOOK, env=ENV, check=True, capture_output=True)
    return {"gpu_wall_s": round(time.perf_counter() - t0, 1)}


def from_metadata(slug: str) -> dict:
    nb = json.loads((BOOK / f"{slug}.ipynb").read_text())
    runs = [c["metadata"]["execution"] for c in nb["cells"]
            if c["cell_type"] == "code" and "execution" in c["metadata"]]
    if not runs:
        return {}
    start = dt.datetime.fromisoformat(
        runs[0]["iopub.execute_input"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(
        runs[-1]["shell.execute_reply"].replace("Z", "+00:00"))
    return {"cpu_wall_s": round((end - start).total_seconds(), 1),
            "cpu_process_s": None, "verified": start.date().isoformat(),
            "measured_by": "make chapter (cell timestamps)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("slugs", nargs="*")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--gpu", action="store_true")
    mode.add_argument("--from-metadata", action="store_true")
    args = ap.parse_args()
    measure = gpu if args.gpu else from_metadata if args.from_metadata \
        else nbval
    status = load_status()
    chapters = status.setdefault("chapters", {})
    for slug in args.slugs or chapter_slugs():
        entry = measure(slug)
        chapters.setdefault(slug, {}).update(entry)
        print(slug, entry, flush=True)
    status.update(
        torch=metadata.version("torch"),
        dlcourse=metadata.version("dlcourse"),
        python=f"Python {platform.python_version()}",
        method=("Run time: wall-clock seconds, one torch thread, the "
                "pinned numerics of the Makefile. Measured by 'nbval': the "
                "whole pytest --nbval run of the chapter, pytest's and the "
                "kernel's start (about 3 s) included; by 'make chapter (cell "
                "timestamps)': from the first cell to the last. CPU time "
                "(nbval runs only): pytest and the kernel together."))
    status["chapters"] = dict(sorted(chapters.items()))
    STATUS_JSON.parent.mkdir(parents=True, exist_ok=True)
    STATUS_JSON.write_text(json.dumps(status, indent=2) + "\n")


if __name__ == "__main__":
    main()
