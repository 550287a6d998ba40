"""Training speed options, the training and data benches, and the GPU check's CPU mode."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from _engine_helpers import REPO, make_task_data, task_config

from dgunet.bench.data import loader_rate, worker_counts, workers_needed, write_stand_in
from dgunet.bench.gpucheck import BEGIN, END, rewrite_section
from dgunet.bench.peaks import gpu_peaks
from dgunet.bench.train import (
    TrainPath,
    TrainRow,
    graph_breaks,
    make_stepper,
    train_flops,
    train_paths,
    train_table,
)
from dgunet.config import load_config
from dgunet.engine.distributed import DistEnv
from dgunet.engine.speed import SpeedOptions, fast_preset, make_adam, speed_options
from dgunet.errors import ConfigError
from dgunet.models.fast import fast_subspace_projection
from dgunet.models.registry import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


def tiny_batch(n: int = 2, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 3, size, size, generator=g)
    return (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1), clean


# ---------------------------------------------------------------- options and config

def test_fast_preset_uses_bf16_only_where_the_cpu_has_it():
    native = fast_preset("cpu", has_fast_bf16=True)
    assert (native.amp, native.channels_last, native.fast_merge, native.compile) == ("bf16", True, True, False)
    plain = fast_preset("cpu", has_fast_bf16=False)
    assert (plain.amp, plain.channels_last, plain.adam, plain.fast_merge) == ("none", False, "foreach", True)


def test_speed_fast_refuses_hand_picked_options_and_names_them():
    with pytest.raises(ConfigError, match=r"TRAIN.SPEED = fast.*TRAIN.AMP, TRAIN.ADAM are also set"):
        load_config(opts=["TRAIN.SPEED", "fast", "TRAIN.AMP", "bf16", "TRAIN.ADAM", "fused"])
    with pytest.raises(ConfigError, match="TRAIN.ADAM = 'adamw'; choose one of loop, foreach, fused"):
        load_config(opts=["TRAIN.ADAM", "adamw"])
    with pytest.raises(ConfigError, match="TRAIN.SPEED"):
        load_config(opts=["TRAIN.SPEED", "turbo"])


def test_published_speed_takes_the_individual_keys():
    cfg = load_config(opts=["TRAIN.AMP", "bf16", "TRAIN.ADAM", "fused", "TRAIN.FAST_MERGE", "true"])
    assert speed_options(cfg, torch.device("cpu")) == SpeedOptions(amp="bf16", adam="fused", fast_merge=True)
    assert speed_options(load_config(), torch.device("cpu")) == SpeedOptions()  # published by default


def test_engine_with_the_fast_preset(tmp_path):
    from dgunet.engine.steps import build_engine

    make_task_data(tmp_path, "deblurring", n_train=2, n_val=1, size=24)
    eng = build_engine(task_config("deblurring", tmp_path, args=["--fast"]), DistEnv(), torch.device("cpu"))
    assert eng.speed == fast_preset("cpu")
    assert all(b.projection is fast_subspace_projection for b in eng.raw.modules() if hasattr(b, "projection"))
    assert eng.optimizer.defaults["foreach"] is True
    assert eng.amp_dtype == (torch.bfloat16 if eng.speed.amp == "bf16" else None)
    x = eng.to_device(torch.rand(1, 3, 16, 16))
    assert x.is_contiguous(memory_format=torch.channels_last) == eng.speed.channels_last


@pytest.mark.parametrize("kind", ["foreach", "fused"])
def test_adam_kernels_make_the_same_update(kind):
    torch.manual_seed(0)
    ref = build_model("deraining", "DGUNet", **TINY)
    other = copy.deepcopy(ref)
    x, clean = tiny_batch()
    for model, adam in ((ref, "loop"), (other, kind)):
        # eps 1: Adam's step ~ lr * g. With eps 1e-8 the first step is lr * sign(g), which float
        # noise flips where g is ~0 (the kernels sum in different orders).
        opt = make_adam(model.parameters(), SpeedOptions(adam=adam), lr=1e-3, eps=1.0)
        for _ in range(2):
            opt.zero_grad()
            sum(((o - clean) ** 2).mean() for o in model(x)).backward()
            opt.step()
    for (name, a), b in zip(ref.named_parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


# ---------------------------------------------------------------- training bench

def test_every_fp32_path_computes_the_published_step():
    """Same weights, same batch: the first loss and the gradients of every fp32 path equal the
    published ones up to rounding (the fast merge is the same function, so is channels_last;
    the Adam kernels are compared in test_adam_kernels_make_the_same_update)."""
    torch.manual_seed(0)
    base = build_model("deblurring", "DGUNet", **TINY)
    x, clean = tiny_batch()
    paths = [p for p in train_paths("cpu", with_compile=False) if p.opts.amp == "none"]
    steppers = {p.name: make_stepper(base, p, x, clean, "deblurring") for p in paths}
    losses = {name: float(s.step()) for name, s in steppers.items()}
    grads = {name: {k: p.grad for k, p in s.model.named_parameters() if p.grad is not None}
             for name, s in steppers.items()}
    ref = grads["published"]
    flat_ref = torch.cat([g.flatten() for g in ref.values()])
    for name in steppers:
        assert losses[name] == pytest.approx(losses["published"], rel=1e-5), name
        assert grads[name].keys() == ref.keys()
        flat = torch.cat([grads[name][k].flatten() for k in ref])
        assert (flat - flat_ref).norm() <= 1e-4 * flat_ref.norm(), name
        for key, g in ref.items():  # and no tensor off by more than rounding at its own scale
            error = (grads[name][key] - g).abs().max().item()
            assert error <= 1e-2 * g.abs().max().item() + 1e-6 * flat_ref.abs().max().item(), f"{name} {key}"


def test_bf16_path_trains_and_stays_close():
    base = build_model("deblurring", "DGUNet", **TINY)
    x, clean = tiny_batch()
    ref = make_stepper(base, TrainPath("published", "", SpeedOptions()), x, clean, "deblurring")
    fast = make_stepper(base, TrainPath("fast", "", fast_preset("cpu", has_fast_bf16=True)), x, clean,
                        "deblurring")
    first_ref, losses = float(ref.step()), [float(fast.step()) for _ in range(4)]
    assert losses[0] == pytest.approx(first_ref, rel=2e-2)
    assert losses[-1] < losses[0]


def test_train_table_ratios_and_mfu():
    rows = [TrainRow(TrainPath("published", "ref", SpeedOptions()), [2.0, 2.2, 1.8], 0.5),
            TrainRow(TrainPath("fast", "bf16", SpeedOptions(amp="bf16")), [1.0], 0.5005)]
    text = train_table(rows, batch=2, flops=4e9, peaks={"fp32": 4e9, "bf16": 8e9})
    pub, fast = text.splitlines()[2:]
    assert "| published |" in pub and "| 1.00x |" in pub and "| 50.0% |" in pub  # 2 GFLOP/s of 4
    assert "| 2.00x |" in fast and "| 2.00 |" in fast and "| 50.0% |" in fast  # 4 GFLOP/s of 8 (bf16 peak)
    assert "1.0e-03" in fast


def test_train_flops_count_forward_and_backward():
    from dgunet.info import count_flops

    model = build_model("deblurring", "DGUNet", **TINY)
    x, clean = tiny_batch(1)
    forward = count_flops(model, x)
    assert 2.5 * forward < train_flops(model, x, clean, "deblurring") < 3.5 * forward


@pytest.mark.slow
def test_graph_breaks_are_counted():
    """Guards the one private torch API (dynamo's explain): a .item() in the forward breaks the graph."""

    class Breaks(torch.nn.Module):
        def forward(self, x):
            return x * float(x.sum().item())

    assert graph_breaks(Breaks(), torch.ones(2)) >= 1
    assert graph_breaks(torch.nn.Linear(2, 2), torch.ones(2)) == 0


def test_gpu_peak_table_picks_the_most_specific_card():
    assert gpu_peaks("NVIDIA H100 PCIe")["bf16"] == pytest.approx(756e12)
    h100 = gpu_peaks("NVIDIA H100 80GB HBM3")
    assert h100 == {"fp32": pytest.approx(494.7e12), "bf16": pytest.approx(989.4e12)}
    assert gpu_peaks("NVIDIA A100-SXM4-80GB")["fp32"] == pytest.approx(156e12)  # TF32
    assert gpu_peaks("Some Future Card") is None


# ---------------------------------------------------------------- data bench

def test_worker_rule():
    assert worker_counts(8) == [0, 1, 2, 4, 8] and worker_counts(3) == [0, 1, 2, 3] and worker_counts(0) == [0]
    assert workers_needed(66.0, 13.0) == 7  # ceil(5.08) + 1
    assert workers_needed(10.0, 20.0) == 2


def test_data_bench_times_the_real_loader(tmp_path):
    root = write_stand_in(tmp_path / "train", "deblurring", 2, size=(48, 40))
    assert len(list((root / "input").glob("*.png"))) == 2
    for workers in (0, 1):
        assert loader_rate("deblurring", root, batch=2, workers=workers, batches=2) > 0


# ---------------------------------------------------------------- gpu check

def test_results_section_is_rewritten_between_the_markers():
    first = rewrite_section("# Title\n\ntext\n", "one")
    assert first == f"# Title\n\ntext\n\n{BEGIN}\none\n{END}\n"
    second = rewrite_section(first + "after\n", "two")
    assert second == f"# Title\n\ntext\n\n{BEGIN}\ntwo\n{END}\nafter\n"


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    """scripts/gpu_check.sh --device cpu --quick: every step passes, the docs section is written."""
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick",
                           "--docs", str(docs)], env={"PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
                                                      "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.count("  PASS  ") == 4
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n") and BEGIN in text and END in text
    assert "| fast |" in text and "| workers | images/s |" in text


def test_gpu_check_refuses_cuda_without_a_gpu(capsys):
    from dgunet.bench.gpucheck import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["--device", "cuda"]) == 2
    assert "--device cpu --quick" in capsys.readouterr().err


def test_decode_cache_yields_the_same_samples(tmp_path):
    import cv2

    from dgunet.data.paired import PairedImageDataset

    root = write_stand_in(tmp_path / "train", "deblurring", 3, size=(56, 40))
    plain = PairedImageDataset(root, 32, mode="train", saturation_aug=True)
    cached = PairedImageDataset(root, 32, mode="train", saturation_aug=True, decode_cache=tmp_path / "cache")
    for epoch in (1, 2):  # the second epoch reads the cache
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            (a_tgt, a_inp, a_name), (b_tgt, b_inp, b_name) = plain[i], cached[i]
            assert torch.equal(a_tgt, b_tgt) and torch.equal(a_inp, b_inp) and a_name == b_name
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 6
    # An edited image is decoded again, not served stale from the cache.
    target = root / "target" / "img000.png"
    cv2.imwrite(str(target), 255 - cv2.imread(str(target)))
    fresh = PairedImageDataset(root, None, mode="val", decode_cache=tmp_path / "cache")
    assert torch.equal(fresh[0][0], PairedImageDataset(root, None, mode="val")[0][0])


@pytest.mark.slow
def test_gpu_check_steps_fail_on_errors_timeouts_and_a_spent_budget(capsys):
    from dgunet.bench.gpucheck import Step, run_step

    assert run_step(Step("ok", ["-c", "print('fine')"], 60), seconds_left=60).ok
    failed = run_step(Step("exit 3", ["-c", "import sys; sys.exit(3)"], 60), seconds_left=60)
    slow = run_step(Step("sleeps", ["-c", "import time; print('started', flush=True); time.sleep(30)"], 11),
                    seconds_left=60)
    skipped = run_step(Step("late", ["-c", "print('never')"], 60), seconds_left=5)
    assert not failed.ok and not slow.ok and "timed out after 11 s" in slow.output
    assert not skipped.ok and "budget" in skipped.output
