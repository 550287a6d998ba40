"""CUDA readiness: the model, training paths, DDP, resume, tiling and test.py on a GPU.

Every test here is marked `cuda` and skipped without a GPU (scripts/gpu_check.sh runs them).
DGUNET_CUDA_DRY_RUN=1 runs the same tests on the CPU instead (gloo for NCCL), which checks
their logic on a machine without a GPU; nothing else changes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from _engine_helpers import PYTHON, REPO, env_one_thread, free_port, make_task_data, small_opts, task_config
from _testpy_data import make_paired, tiny_checkpoint

from dgunet.bench.train import TrainPath, graph_breaks, make_stepper
from dgunet.engine.speed import SpeedOptions
from dgunet.inference import restore
from dgunet.models.keyed_init import keyed_state_dict
from dgunet.models.registry import build_model

DRY_RUN = os.environ.get("DGUNET_CUDA_DRY_RUN") == "1"
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not (torch.cuda.is_available() or DRY_RUN), reason="needs a CUDA GPU")]
TINY = {"n_feat": 16, "scale_unetfeats": 8, "scale_orsnetfeats": 8}


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def exact_fp32():
    """No TF32 (cuDNN's default for fp32 convolutions on Ampere+): it rounds to 10-bit mantissas."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.fixture
def deterministic_cudnn():
    """cuDNN without autotuning and with deterministic kernels (what TRAIN.CUDNN_BENCHMARK false
    sets): two computations of the same gradient then sum in the same order."""
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def keyed_model(task: str = "deblurring", arch: str = "DGUNet", **widths) -> torch.nn.Module:
    model = build_model(task, arch, **widths)
    model.load_state_dict(keyed_state_dict(model))
    return model.eval()


def batch(n: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(blurred input, clean target), (n,3,size,size) in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.nn.functional.interpolate(torch.rand(n, 3, size // 4, size // 4, generator=g), size=size,
                                            mode="bicubic").clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(clean, (1, 1, 1, 1), mode="reflect"), 3, 1)
    return blurred, clean


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
def test_gpu_fp32_outputs_equal_cpu(device, exact_fp32, arch):
    model = keyed_model(arch=arch)  # published widths
    x, _ = batch(1, 64)
    cpu = restore(model, x)
    gpu = restore(model.to(device), x.to(device)).cpu()
    assert (gpu - cpu).abs().max().item() < 1e-4


def train_losses(device: str, opts: SpeedOptions, steps: int) -> list[float]:
    base = build_model("deblurring", "DGUNet", **TINY).to(device)
    x, clean = (t.to(device) for t in batch())
    stepper = make_stepper(base, TrainPath("test", "", opts), x, clean, "deblurring")
    return [float(stepper.step()) for _ in range(steps)]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_are_finite_and_lower_the_loss(device, amp):
    losses = train_losses(device, SpeedOptions(amp=amp, channels_last=True, fast_merge=True), steps=6)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses


def test_compiled_amp_training_lowers_the_loss_without_graph_breaks(device):
    amp = "bf16" if device == "cpu" or torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    opts = SpeedOptions(amp=amp, channels_last=True, compile=True, adam="fused", fast_merge=True)
    losses = train_losses(device, opts, steps=4)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    model = build_model("deblurring", "DGUNet", **TINY).to(device)
    from dgunet.models.fast import set_fast_merge

    set_fast_merge(model)
    assert graph_breaks(model, batch()[0].to(device)) == 0


def test_ddp_in_one_process_gives_the_plain_gradients(device, deterministic_cudnn):
    """World size 1 through NCCL (gloo in a dry run): DDP's gradients are the plain ones."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from dgunet.losses import stage_loss

    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        x, clean = (t.to(device) for t in batch())
        plain = build_model("deblurring", "DGUNet", **TINY).to(device)
        wrapped = DDP(build_model("deblurring", "DGUNet", **TINY).to(device),
                      device_ids=[0] if device == "cuda" else None, find_unused_parameters=True)
        wrapped.module.load_state_dict(plain.state_dict())
        for net in (plain, wrapped):
            stage_loss(net(x), clean, "deblurring").backward()
        for (name, p), q in zip(plain.named_parameters(), wrapped.module.parameters(), strict=True):
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_on_two_gpus_ends_with_equal_weights(tmp_path):
    from _engine_helpers import ddp_worker_command

    out, task_dir = tmp_path / "out", tmp_path / "task"
    out.mkdir()
    make_task_data(task_dir, "deraining", n_train=4, n_val=2)
    proc = subprocess.run(ddp_worker_command(2, free_port(), out, task_dir), env=env_one_thread(cuda=True),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each rank saved from its own GPU: compare on the CPU, not cuda:1 against cuda:0.
    a, b = (torch.load(out / f"train_rank{r}.pt", map_location="cpu", weights_only=True)["weights"]
            for r in (0, 1))
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, msg=key)


def test_resumed_run_on_the_gpu_equals_an_uninterrupted_one(tmp_path, device):
    from dgunet.engine import train

    make_task_data(tmp_path, "deraining", n_train=4, n_val=1, size=24)

    def cfg(name: str, stop_at: int = 0, resume: bool = False):
        # Adam eps 1 as in the CPU tests: with 1e-8 the first steps are lr * sign(g), and a
        # rounding-level change of a near-zero gradient moves that weight by 2 lr.
        extra = ["OUTPUT.NAME", name, "VAL.EVERY", "1", "TRAIN.CUDNN_BENCHMARK", "false", "OPTIM.EPS", "1.0",
                 "TRAIN.STOP_AT_EPOCH", str(stop_at)]
        return task_config("deraining", tmp_path, extra, epochs=2, args=["--resume"] if resume else [])

    straight = train(cfg("straight"))
    assert next(straight.model.parameters()).device.type == device
    assert train(cfg("chunked", stop_at=1)).last_epoch == 1
    resumed = train(cfg("chunked", resume=True))
    assert resumed.last_epoch == 2
    # CUDNN_BENCHMARK false also makes cuDNN deterministic; the tolerance covers the kernels
    # outside cuDNN that still add with atomics (e.g. interpolation backward).
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_tiled_restore_on_the_gpu_equals_the_cpu(device, exact_fp32):
    model = keyed_model(**TINY)
    x, _ = batch(1, 96)
    x = x[..., :80]  # 96x80: tiles on both axes, one of them partial
    cpu = restore(model, x, tile=48, overlap=16)
    gpu = restore(model.to(device), x.to(device), tile=48, overlap=16).cpu()
    assert gpu.shape == x.shape
    assert (gpu - cpu).abs().max().item() < 1e-4


def test_test_py_runs_on_the_gpu(tmp_path, device):
    data, out = tmp_path / "Datasets", tmp_path / "results"
    make_paired(data / "GoPro", [(40, 48)])
    weights = tiny_checkpoint(tmp_path / "w.pth", "deblurring")
    proc = subprocess.run([sys.executable, "Deblurring/test.py", "--weights", str(weights), "--input_dir",
                           str(data), "--result_dir", str(out), "--device", device],
                          cwd=REPO, env=env_one_thread(cuda=True), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "GoPro" / "scores.json").is_file()


def test_train_py_fast_preset_runs(tmp_path, device):
    """train.py --fast end to end: the preset's options reach the log, the run finishes."""
    make_task_data(tmp_path, "deblurring", n_train=4, n_val=1, size=24)
    args = [str(REPO / "Deblurring" / "train.py"), "--fast", "--opts", *small_opts("deblurring", tmp_path, 1)]
    proc = subprocess.run([PYTHON, *args], cwd=tmp_path, env=env_one_thread(cuda=True), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "speed fast:" in proc.stdout and f"device {device}" in proc.stdout
