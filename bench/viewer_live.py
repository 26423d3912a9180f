"""Benchmark the live viewer's cost: optimize with and without `--view` on the same scene, same seed.

With the viewer on, the optimize stage hands a splat snapshot to its writer
thread every --every steps, the viewer polls the folder and pushes every new
snapshot to a connected client (a websocket client here, standing in for a
browser, that reads every message). The optimize stage's training seconds are
compared; runs alternate (off, on, off, on, ...) so drift hits both alike.

    python bench/viewer_live.py --scene DIR --views 3 --every 200 --repeats 2 --out bench/results/viewer-live.json
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from optimize import environment  # noqa: E402

from recon import progress  # noqa: E402
from recon.config import load_config  # noqa: E402
from recon.pipeline import run_scene  # noqa: E402
from recon.render import compile_kernels  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A websocket client that reads everything the viewer sends, as a browser tab would."""

    def __init__(self, port: int):
        import viser
        from websockets.sync.client import connect

        self.connection = connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"],
                                  max_size=None, open_timeout=30)
        self.bytes = 0
        self.messages = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for message in self.connection:
                self.bytes += len(message)
                self.messages += 1
        except Exception:  # closed by the server at the end of the run
            pass

    def close(self) -> None:
        self.connection.close()


def one_run(scene: Path, views: int, every: int, live: bool, out: Path) -> dict:
    cfg = load_config("default", {"views.count": views, "live_every": every if live else 0})
    apps, clients = [], []

    def start_viewer(folder: Path) -> None:
        from viewer.app import ViewerApp

        port = free_port()
        app = ViewerApp(folder, port=port, wait_for_run=True)
        app.start_polling()
        apps.append(app)
        clients.append(Client(port))

    result = run_scene(scene, cfg, out, force=True, until="optimize", on_start=start_viewer if live else None)
    values = result.graph.stages["optimize"].metrics
    row = {"live": live, "train_seconds": values["train_seconds"],
           "stage_seconds": result.graph.stages["optimize"].seconds,
           "psnr_masked": values.get("psnr_masked"), "gaussians": values.get("gaussians"), "steps": values.get("steps")}
    for app in apps:
        app.stop()
    for client in clients:
        row.update(client_messages=client.messages, client_megabytes=client.bytes / 2**20)
        client.close()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    progress.set_enabled(False)
    runs = []
    compile_seconds = compile_kernels()  # gsplat's JIT compile must not land in the first run
    with tempfile.TemporaryDirectory() as tmp:
        run_scene(args.scene, load_config("default", {"views.count": args.views}), Path(tmp), until="init")  # warm-up
        for _ in range(args.repeats):
            for live in (False, True):
                runs.append(one_run(args.scene, args.views, args.every, live, Path(tmp)))
                print(json.dumps(runs[-1]), flush=True)
    off = np.mean([r["train_seconds"] for r in runs if not r["live"]])
    on = np.mean([r["train_seconds"] for r in runs if r["live"]])
    report = {"environment": environment(), "scene": args.scene.name, "views": args.views, "every": args.every,
              "train_seconds_off": off, "train_seconds_live": on, "overhead": on / off - 1.0,
              "target_overhead": 0.10, "gsplat_compile_seconds": compile_seconds, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
