"""`python -m dgunet reproduce` tables and `python -m dgunet info` numbers."""

from __future__ import annotations

import json
import re

import pytest
from _testpy_data import make_cs, make_dnd, make_paired, run_script, tiny_checkpoint

from dgunet.cli import main as cli_main
from dgunet.info import measure
from dgunet.reproduce import load_paper, paper_scores

DERAINING = ("Rain100L", "Rain100H", "Test100", "Test1200", "Test2800")


pytestmark = pytest.mark.usefixtures("one_thread")


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """First cell -> cells of each table line (CS rows repeat names, so last one wins there)."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| Data set"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_deraining_table_beside_the_paper_with_average(tmp_path, capsys):
    for n, name in enumerate(DERAINING):
        make_paired(tmp_path / "data" / name, [(24 + 8 * n, 40)])
    weights = tiny_checkpoint(tmp_path / "w.pth", "deraining")
    out = tmp_path / "results"
    argv = ["reproduce", "--task", "deraining", "--weights", str(weights), "--data-root",
            str(tmp_path / "data"), "--results", str(out)]
    assert cli_main(argv) == 0
    text = (out / "deraining" / "table.md").read_text()
    assert text in capsys.readouterr().out
    assert "Δ PSNR" in text and "Δ SSIM" in text
    rows = _table_rows(text)
    assert rows["Rain100L"][4:6] == ["37.42", "0.969"] and rows["Average"][4:6] == ["33.06", "0.923"]
    table = json.loads((out / "deraining" / "table.json").read_text())
    by_name = {r["dataset"]: r for r in table["rows"]}
    means = [by_name[n]["psnr"] for n in DERAINING]
    assert by_name["Average"]["psnr"] == pytest.approx(sum(means) / 5)
    assert by_name["Test100"]["delta_psnr"] == pytest.approx(by_name["Test100"]["psnr"] - 30.32)
    scores = json.loads((out / "deraining" / "Test100" / "scores.json").read_text())
    assert scores["psnr"] == pytest.approx(by_name["Test100"]["psnr"])


def test_denoising_table_skips_sidd_and_points_dnd_to_the_server(tmp_path):
    make_dnd(tmp_path / "data" / "DND", [[[1, 1, 16, 24]]], shape=(20, 30))
    weights = tiny_checkpoint(tmp_path / "w.pth", "denoising")
    argv = ["reproduce", "--task", "denoising", "--weights", str(weights), "--data-root",
            str(tmp_path / "data"), "--results", str(tmp_path / "r"), "--no-self-ensemble"]
    assert cli_main(argv) == 0
    rows = _table_rows((tmp_path / "r" / "denoising" / "table.md").read_text())
    assert "skipped" in rows["SIDD"][-1] and rows["SIDD"][4:6] == ["39.88", "0.959"]
    assert "submit" in rows["DND"][-1] and "bundled" in rows["DND"][-1]


def test_cs_table_runs_each_ratio_from_a_template(tmp_path):
    make_cs(tmp_path / "data" / "Set11")
    for ratio in (10, 25):
        tiny_checkpoint(tmp_path / f"cs_{ratio}.pkl", "cs", cs_ratio=ratio, wrap=False)
    argv = ["reproduce", "--task", "cs", "--weights", str(tmp_path / "cs_{ratio}.pkl"), "--cs-ratios",
            "10", "25", "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "r")]
    assert cli_main(argv) == 0
    table = json.loads((tmp_path / "r" / "cs" / "table.json").read_text())
    set11 = {r["ratio"]: r for r in table["rows"] if r["dataset"] == "Set11"}
    assert set11[10]["paper_psnr"] == 31.07 and set11[25]["paper_ssim"] == 0.9611
    assert set11[10]["images"] == 2 and (tmp_path / "r" / "cs" / "ratio_25" / "Set11" / "odd.png").is_file()
    assert all("skipped" in r["note"] for r in table["rows"] if r["dataset"] == "BSD68")


def test_reproduce_needs_at_least_one_test_set(tmp_path, capsys):
    weights = tiny_checkpoint(tmp_path / "w.pth", "deblurring")
    argv = ["reproduce", "--task", "deblurring", "--weights", str(weights), "--data-root", str(tmp_path),
            "--results", str(tmp_path / "r")]
    assert cli_main(argv) == 2
    assert "no test set found" in capsys.readouterr().err
    assert not (tmp_path / "r" / "deblurring" / "table.md").exists()


def test_paper_numbers_are_the_published_tables():
    paper = load_paper()
    assert paper_scores(paper, "deblurring", "DGUNet_plus", "HIDE") == (31.40, 0.944)
    assert paper_scores(paper, "denoising", "DGUNet", "DND") == (40.04, 0.956)
    assert paper_scores(paper, "cs", "DGUNet_plus", "BSD68", 50) == (37.04, 0.9718)
    assert paper_scores(paper, "cs", "DGUNet", "Set11", 30) is None
    for arch in ("DGUNet", "DGUNet_plus"):
        table = paper["tasks"]["deraining"][arch]
        for metric, tol in ((0, 0.01), (1, 0.001)):
            mean = sum(table[n][metric] for n in DERAINING) / 5
            assert table["Average"][metric] == pytest.approx(mean, abs=tol)


@pytest.mark.slow
def test_info_reports_published_parameters_and_flops():
    proc = run_script(["-m", "dgunet", "info", "--task", "deblurring", "--arch", "DGUNet", "--size", "256"])
    assert proc.returncode == 0, proc.stderr
    assert "17,331,512" in proc.stdout
    tflop = float(re.search(r"FLOPs \(2 x MACs\):\s+([\d.]+) T", proc.stdout).group(1))
    assert tflop == pytest.approx(1.69, rel=0.05)
    assert "published measurement: 1.69 T" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("task", "arch", "tflop"), [("deblurring", "DGUNet_plus", 2.17),
                                                     ("deraining", "DGUNet", 0.39)])
def test_info_flops_of_other_variants(task, arch, tflop):
    info = measure(task, arch, 256)
    assert info.flops / 1e12 == pytest.approx(tflop, rel=0.05)
    assert info.macs * 2 == info.flops
