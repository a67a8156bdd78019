"""Ingest and validate N face images (128x128 by default): wall time and peak memory of each.

    .venv/bin/python benchmarks/ingest.py --count 30000 [--resolution 128] [--workdir /tmp/ingest-bench] [--out F]

The raw faces are crops of the photographs installed packages ship, each shifted, scaled, tinted
and noised so that no two are near-duplicates, saved as JPEG (not timed). Ingest (`deocclude data
ingest --kind faces`, occluders composited) and validation (the validate stage's Great
Expectations suite on the manifest) each run in their own process, timed, with their peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_raw_faces(folder: Path, count: int, size: int) -> None:
    from pipeline.data.synthetic import load_photo, package_file

    photos = [load_photo(package_file("skimage", name)) for name in ("data/astronaut.png", "data/coffee.png",
                                                                        "data/chelsea.png", "data/rocket.jpg")]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        photo = photos[index % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2])))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        crop = np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size)), dtype=np.float32)
        crop = crop * rng.uniform(0.7, 1.3, 3) + rng.normal(0, 6, crop.shape)
        Image.fromarray(crop.clip(0, 255).astype(np.uint8)).save(folder / f"face {index:05d}.jpg", quality=90)


# Runs a command and prints its own peak RSS (KiB) last on stderr: each measurement its own process tree.
PEAK_WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
                "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def timed_child(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of a command."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *command], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    peak_kib = int(result.stderr.rsplit("PEAK_KIB", 1)[1].split()[0])
    return seconds, peak_kib / 1024, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=30000)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ingest-bench"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    raw = workdir / f"raw-{args.count}"
    if not raw.is_dir() or len(list(raw.iterdir())) != args.count:
        shutil.rmtree(raw, ignore_errors=True)
        make_raw_faces(raw, args.count, int(args.resolution * 1.5))
    project = workdir / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["resolution"] = args.resolution
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    deocclude = [str(Path(sys.executable).parent / "deocclude"), "--params", str(project / "params.yaml")]
    env_note = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",)}
    ingest_s, ingest_peak, _ = timed_child([*deocclude, "data", "ingest", str(raw), "--kind", "faces", "--name", "bench",
                                            "--no-dvc"], project)
    dataset = project / "data" / "ingested" / "bench"
    validate = [sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); import pipeline; "
        "from pathlib import Path; from pipeline.data.validation import validate_dataset; "
        "t = time.perf_counter(); o = validate_dataset(Path(%r), %d, (0.0, 0.61), 5); "
        "print(o.success, time.perf_counter() - t)") % (str(REPO), str(dataset), args.resolution)]
    validate_s, validate_peak, printed = timed_child(validate, project)
    success, inner_seconds = printed.split()[-2:]
    results = {"count": args.count, "resolution": args.resolution, "ingest_s": round(ingest_s, 1),
               "ingest_images_per_s": round(args.count / ingest_s, 1), "ingest_peak_rss_mb": round(ingest_peak),
               "validate_s": round(validate_s, 1), "validate_in_process_s": round(float(inner_seconds), 1),
               "validate_peak_rss_mb": round(validate_peak),
               "validation_passed": success == "True", "env": env_note}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
