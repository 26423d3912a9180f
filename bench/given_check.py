"""How well each real capture's given cameras fit its photos, as the poses stage checks them (poses.check_given).

Every capture under ``--root`` runs up to the poses stage under its protocol (bench/real.py) at each view count:
the verified feature matches between the training photos, how many lie on the epipolar lines the given cameras
predict, and whether the stage warned. A capture with a known defect in its copy (bench/captures.py) runs twice:
as stored and corrected. With ``poses.given_points`` on, each row also counts the explained matches triangulated into
SfM points (``points``; 0 where the scene has points of its own), what ``plain_sfm`` starts from. With ``--stereo``
each run goes on through the init stage, its stereo at the size a CUDA run matches at (``init.mvs_max_side``), and
records the share of each view's pixels stereo kept and the share of the SfM points it confirms (what
``init.mvs_min_confirmed`` judges by), with the source init chose under the default settings. Prints one JSON line
per run and writes the report.

    python bench/given_check.py --root ../shared/realdata --views 3,4,6 --out bench/results/given-check-cpu.json
    python bench/given_check.py --root ../shared/realdata --views 3,4 --stereo --out bench/results/stereo-check-cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from captures import captures_under, corrected  # noqa: E402
from optimize import environment, record  # noqa: E402
from real import DEFAULT_ROOT, scene_protocol  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--scenes", default="", help="comma-separated folder names (default: every capture)")
    ap.add_argument("--views", default="3,4,6")
    ap.add_argument("--stereo", action="store_true", help="go on through init (stereo at its CUDA size)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from recon import progress
    from recon.config import load_config
    from recon.pipeline import run_scene
    from recon.scene.names import metrics_id

    progress.set_enabled(False)
    report: dict = {"benchmark": "given-check", "environment": environment(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for capture in captures_under(args.root, args.scenes):
            fixed = corrected(capture, Path(tmp) / "fixed")
            for scene, cameras in [(capture, "as stored")] + ([(fixed, "corrected")] if fixed != capture else []):
                protocol = scene_protocol(scene)
                if protocol is None:
                    continue
                for n in [int(v) for v in args.views.split(",")]:
                    overrides = {**protocol["overrides"], "views.count": n, "poses.given_points": True}
                    cfg = load_config("default", overrides)
                    if args.stereo:
                        cfg = load_config("default", {**overrides, "init.mvs_cpu_max_side": cfg.init.mvs_max_side})
                    start = time.perf_counter()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        graph = run_scene(scene, cfg, Path(tmp) / "out", name=f"{scene.name}-{cameras}-{n}",
                                          until="init" if args.stereo else "poses").graph
                    said = [str(w.message) for w in caught if "given cameras" in str(w.message)]
                    row = {"scene": capture.name, "cameras": cameras, "views": n,
                           **graph.nodes[metrics_id("poses")].values["given_fit"],
                           "warning": said[0] if said else None, "run_seconds": time.perf_counter() - start}
                    if args.stereo:
                        init = graph.nodes[metrics_id("init")].values
                        found = init.get("mvs", {})
                        row.update(init_source=init["source"], stereo_kept=found.get("kept_share"),
                                   sfm_seen=found.get("sfm_seen"), sfm_confirmed=found.get("sfm_confirmed"),
                                   stereo_seconds=found.get("seconds"))
                    record(report, row, None, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
