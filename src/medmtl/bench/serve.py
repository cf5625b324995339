"""medmtl-serve under load: requests from concurrent clients against the ONNX backend.

A real server process (``medmtl-serve``, ONNX Runtime) serves the default CPU model (random
weights: speed does not depend on them); clients post a BUSI-sized PNG over HTTP. Reported:
latency percentiles, throughput, errors, and the server's resident memory before and after.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from medmtl.bench.common import CPU_MODEL_OVERRIDES, conf_model, machine_line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def multipart(image: Path) -> tuple[bytes, str]:
    """A multipart/form-data body with ``image`` as the ``file`` field, and its content type."""
    boundary = "medmtl-bench"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{image.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


START_TIMEOUT_S = 300


@contextmanager
def running_server(
    model: Path,
    log: Path,
    threads: int = 0,
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """A ``medmtl-serve`` process for ``model`` on a free local port, once it answers: its URL
    and process id (``options``: more ``key=value``; ``env``: its environment). It is stopped
    when the block ends."""
    port = _free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medmtl.cli.serve",
                f"model={model}",
                f"port={port}",
                f"threads={threads}",
                *options,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
        )
    url = f"http://127.0.0.1:{port}"
    # a start imports torch and builds the model: on 2 busy cores that has taken over a minute
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=1):
                    break
            except OSError:
                if server.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"medmtl-serve did not start within {START_TIMEOUT_S} s: "
                        + log.read_text()[-2000:]
                    ) from None
                time.sleep(0.1)
        if server.poll() is not None:
            raise RuntimeError("medmtl-serve stopped: " + log.read_text()[-2000:])
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def _post(url: str, body: bytes, kind: str) -> tuple[float, bool]:
    start = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            ok = r.status == 200 and "probabilities" in json.loads(r.read())
    except OSError:
        ok = False
    return time.perf_counter() - start, ok


def run(
    busi_root: Path | None,
    requests: int = 200,
    clients: int = 4,
    warmup: int = 40,
    threads: int = 2,
) -> dict:
    """Start a server on a free port, warm it up, send ``requests`` from ``clients`` threads.

    The warm-up runs at the same concurrency: each request thread of the server takes its own
    memory pools on first use (measured here: 172 MB idle, 251 MB after the first 100 requests
    from 4 clients, then flat for 500 more), so growth is measured from there, to show a leak.
    """
    from medmtl.bench.inference import make_checkpoint
    from medmtl.inference.export import export_onnx

    tmp = Path(tempfile.mkdtemp(prefix="medmtl-bench-serve-"))
    model = conf_model("default CPU model", CPU_MODEL_OVERRIDES)
    ckpt = make_checkpoint(tmp / "model.ckpt", model.image_size, model.net)
    onnx = export_onnx(ckpt, tmp / "model.onnx")
    files = (
        sorted((busi_root / "benign").glob("*).png")) if busi_root and busi_root.is_dir() else []
    )
    if files:
        image, what = files[0], f"BUSI `{files[0].name}`"
    else:  # a synthetic scan of BUSI's median size
        image = tmp / "scan.png"
        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((475, 565)) * 255).astype(np.uint8)).save(image)
        what = "a synthetic 565×475 PNG"
    width, height = Image.open(image).size
    body, kind = multipart(image)
    with running_server(onnx, tmp / "server.log", threads) as (url, pid):
        idle = rss_mb(pid)
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(lambda _: _post(f"{url}/api/predict", body, kind), range(warmup)))
            before = rss_mb(pid)
            start = time.perf_counter()
            done = list(
                pool.map(lambda _: _post(f"{url}/api/predict", body, kind), range(requests))
            )
            wall = time.perf_counter() - start
        after = rss_mb(pid)
    latency = sorted(t for t, _ in done)
    return {
        "image": f"{what} ({width}×{height}, {image.stat().st_size / 1024:.0f} kB)",
        "requests": requests,
        "clients": clients,
        "warmup": warmup,
        "threads": threads,
        "p50_ms": 1000 * statistics.median(latency),
        "p95_ms": 1000 * float(np.percentile(latency, 95)),
        "max_ms": 1000 * latency[-1],
        "rps": requests / wall,
        "errors": sum(not ok for _, ok in done),
        "rss_idle_mb": idle,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "growth": after / before - 1,
        "model": model.label,
        "input": model.image_size,
    }


def section(r: dict, command: str) -> str:
    return "\n".join(
        [
            "## Serving: medmtl-serve under load (ONNX Runtime)",
            "",
            f"Command: `{command}`  ",
            f"Machine: {machine_line()}  ",
            f"A real `medmtl-serve` process ({r['threads']} ONNX Runtime threads) serves {r['model']} "
            f"at {r['input']} px (random weights); {r['clients']} concurrent clients post "
            f"{r['image']} to `/api/predict` over HTTP, {r['requests']} requests after "
            f"{r['warmup']} warm-up requests from as many clients. Each answer carries the class probabilities, the mask, "
            "the probability map and the image as PNG.",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| latency p50 | {r['p50_ms']:.0f} ms | |",
            f"| latency p95 | **{r['p95_ms']:.0f} ms** | ≤ 500 ms |",
            f"| latency max | {r['max_ms']:.0f} ms | |",
            f"| throughput | {r['rps']:.2f} requests/s | |",
            f"| errors | **{r['errors']}** of {r['requests']} | 0 |",
            f"| server resident memory: idle {r['rss_idle_mb']:.0f} MB; after warm-up → after the "
            f"requests | {r['rss_before_mb']:.0f} MB → {r['rss_after_mb']:.0f} MB "
            f"(**{100 * r['growth']:+.1f} %**) | growth < 10 % |",
            "",
        ]
    )
