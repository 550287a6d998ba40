"""scripts/known_degradation.py, the evidence of docs/known_degradation.md, cannot rot: its quick mode
trains the four models (deblurring known / blind, CS fixed / learned
Phi) for a few steps through the real train.py and writes every table and figure."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO, SCRIPT_TIMEOUT_S


@pytest.mark.slow
def test_quick_evidence_run_writes_tables_and_figures(tmp_path):
    script = REPO / "scripts" / "known_degradation.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--quick"],
                          capture_output=True, text=True, check=False,
                          timeout=SCRIPT_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    table = summary["deblurring"]["table"]
    assert set(table) == {"1%", "3%"}
    for row in table.values():
        expected = {"Wiener, flat spectrum (true kernel)", "DGUNet blind (learned step)",
                    "DGUNet known (A, A^T given)",
                    "A_dagger family, eps per image on the ground truth (oracle)",
                    "hyper-Laplacian HQS (Krishnan-Fergus, tuned on training photos)"}
        assert expected <= set(row)
        assert all(math.isfinite(v) and v > 5 for v in row.values())
    for kind in ("known", "blind"):
        assert len(summary["deblurring"]["stage_psnr"][kind]) == 7
        assert len(summary["deblurring"]["stage_residual"][kind]) == 7
    assert {"x4"} <= set(summary["sr"]) and all("bicubic" in r for r in summary["sr"].values())
    assert all(len(r["stage_psnr"]) == 7 for r in summary["sr"].values())
    for row in summary["cs_25"].values():  # each CS model against its own start, per stage
        assert len(row["stage_psnr"]) == 7 and row["output"] == row["stage_psnr"][-1]
    assert set(summary["cs_25"]) == {"fixed Phi", "learned Phi", "fixed Phi, TV start",
                                     "fixed Phi, TV start, 96x96 crops",
                                     "fixed Phi, TV start, 96x96 crops, stage weights"}
    for name in ("fixed Phi", "learned Phi"):  # Phi^T y keeps 25% of the energy: about 9 dB here
        assert 5 < summary["cs_25"][name]["Phi^T y (start)"] < 15
    tv = summary["cs_25_classical"]
    assert summary["cs_25"]["fixed Phi, TV start"]["Phi^T y (start)"] == pytest.approx(
        tv["FISTA-TV (tuned on training photos)"], abs=1e-3)  # the TV-start model starts from that row
    tuned = tv["FISTA-TV (tuned on training photos)"]
    assert tv["FISTA-TV, lam per image on the ground truth (oracle)"] >= tuned > 20
    denoise = summary["denoising_baselines"]
    assert set(denoise) == {"sigma15", "sigma25", "sigma50"}
    assert all(r["hyper-Laplacian HQS (tuned on training photos)"] > r["input y"] for r in denoise.values())
    for name in ("known_stages.png", "known_deblur_strip.png", "known_sr4_strip.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "non-blind deblurring, noise 1%" in done.stdout
