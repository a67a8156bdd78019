"""Load on `mlflow models serve`: concurrent clients posting real images, latency percentiles.

    .venv/bin/python benchmarks/serving_load.py [--params params.yaml] [--model models:/deocclusion@champion]
        [--clients 8] [--requests 200] [--size 64] [--workers 1] [--out benchmarks/results/serving-cpu.json]

Starts `mlflow models serve -m MODEL --env-manager local` on 127.0.0.1 against the project's
tracking store (MLFLOW_TRACKING_URI wins), waits for /ping, sends a few warm-up requests, then
`--requests` requests from `--clients` threads, each one image of the test split (base64 PNG) in
`dataframe_split` form. A request counts as an error unless it answers 200 with a mask and an image.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tracking_uri(params: Path) -> str:
    from pipeline.config import load_config

    return os.environ.get("MLFLOW_TRACKING_URI") or load_config(params).registry.tracking_uri


def request_bodies(project: Path, size: int, count: int = 16) -> list[bytes]:
    """`count` test-split images of the project's dataset, resized to size x size, as request bodies."""
    images = sorted((project / "data" / "dataset" / "images").iterdir())[:count]
    if not images:
        raise SystemExit(f"{project / 'data/dataset/images'}: no images; run the pipeline first")
    bodies = []
    for path in images:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((size, size)).save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode()
        bodies.append(json.dumps({"dataframe_split": {"columns": ["image"], "data": [[encoded]]}}).encode())
    return bodies


def post(url: str, body: bytes) -> tuple[float, str | None]:
    """(seconds, error or None) of one request."""
    started = time.perf_counter()
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            payload = json.loads(reply.read())
        prediction = payload["predictions"][0]
        error = None if prediction.get("mask") and prediction.get("image") else "reply without mask or image"
    except (urllib.error.URLError, OSError, KeyError, ValueError) as failure:
        error = f"{type(failure).__name__}: {failure}"
    return time.perf_counter() - started, error


def wait_for_ping(port: int, server: subprocess.Popen, timeout: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.poll() is not None:
            raise SystemExit(f"mlflow models serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as reply:
                if reply.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"no answer on /ping within {timeout} s")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--model", default="models:/deocclusion@champion")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", type=int, default=64, help="side of the posted images, pixels")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of mlflow models serve")
    parser.add_argument("--out", help="JSON file for the figures")
    args = parser.parse_args()

    params = Path(args.params).resolve()
    bin_dir = Path(sys.executable).parent  # `mlflow models serve` starts `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(params), "GX_ANALYTICS_ENABLED": "false",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = free_port()
    mlflow = bin_dir / "mlflow"
    server = subprocess.Popen([str(mlflow), "models", "serve", "-m", args.model, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port), "-w", str(args.workers)], cwd=params.parent, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        startup = wait_for_ping(port, server)
        url = f"http://127.0.0.1:{port}/invocations"
        bodies = request_bodies(params.parent, args.size)
        for body in bodies[:4]:
            post(url, body)  # warm-up: first calls pay for lazy initialisation
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            results = list(pool.map(lambda i: post(url, bodies[i % len(bodies)]), range(args.requests)))
        wall = time.perf_counter() - started
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    latencies = [seconds for seconds, error in results if error is None]
    errors = [error for _, error in results if error is not None]
    figures = {
        "model": args.model, "clients": args.clients, "requests": args.requests, "image_size": args.size,
        "workers": args.workers, "errors": len(errors), "first_errors": errors[:3],
        "p50_ms": round(1000 * percentile(latencies, 0.50), 1) if latencies else None,
        "p95_ms": round(1000 * percentile(latencies, 0.95), 1) if latencies else None,
        "mean_ms": round(1000 * statistics.mean(latencies), 1) if latencies else None,
        "throughput_rps": round(len(latencies) / wall, 2), "wall_s": round(wall, 2),
        "server_startup_s": round(startup, 1), "machine": f"{platform.processor() or platform.machine()}, "
                                                           f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
