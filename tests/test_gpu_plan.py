"""What the first GPU run depends on, checked on the CPU under a simulated CUDA.

torch.cuda's queries are monkeypatched (is_available, device_count, set_device, ...) and
torch.distributed.init_process_group is replaced by a recorder, so the device and backend a
training process would pick on 0, 1 or 2 GPUs are asserted without a GPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from dgunet.engine import distributed
from dgunet.engine.distributed import DistEnv, backend_for, pick_device, set_cudnn, setup
from dgunet.engine.speed import fast_preset
from dgunet.errors import ConfigError
from dgunet.models.blocks import subspace_projection
from dgunet.models.fast import fast_subspace_projection


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine with `gpus` visible CUDA GPUs; returns the list of set_device calls."""
    calls: list[int] = []

    def install(gpus: int) -> list[int]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "set_device", calls.append)
        return calls

    return install


@pytest.fixture
def torchrun(monkeypatch):
    """torchrun's variables for one rank of a one-host job; init_process_group records its backend."""
    backends: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend=None, **_: backends.append(backend))

    def launch(rank: int, nproc: int) -> list[str]:
        variables = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": nproc, "LOCAL_WORLD_SIZE": nproc}
        for key, value in variables.items():
            monkeypatch.setenv(key, str(value))
        return backends

    return launch


def test_cpu_training_uses_gloo_and_the_cpu(fake_cuda, torchrun):
    fake_cuda(0)
    backends = torchrun(rank=1, nproc=2)
    env = setup()
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size) == (1, 1, 2, 2)
    assert backends == ["gloo"]
    assert pick_device(env) == torch.device("cpu")


def test_cuda_training_uses_nccl_for_cuda_tensors_and_one_gpu_per_rank(fake_cuda, torchrun):
    selected = fake_cuda(2)
    backends = torchrun(rank=1, nproc=2)
    env = setup()
    # NCCL for the CUDA tensors, gloo for any CPU one (NCCL has no CPU backend).
    assert backends == ["cpu:gloo,cuda:nccl"]
    assert selected == [1]  # the rank's GPU is selected before NCCL's first collective
    assert pick_device(env) == torch.device("cuda", 1)


def test_more_ranks_than_gpus_is_a_one_line_error_on_every_rank(fake_cuda, torchrun):
    fake_cuda(1)
    for rank in (0, 1):  # rank 0 could use cuda:0, but its partner would hang without it
        backends = torchrun(rank=rank, nproc=2)
        with pytest.raises(ConfigError) as err:
            setup()
        message = str(err.value)
        assert "\n" not in message
        assert "2 training processes on this host but 1 visible CUDA GPU" in message
        assert "--nproc_per_node 1" in message and "CUDA_VISIBLE_DEVICES=" in message
    assert backends == []  # refused before joining any process group


def test_one_process_trains_on_the_first_gpu(fake_cuda, monkeypatch):
    selected = fake_cuda(1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = setup()  # no torchrun: no process group at all
    assert env == DistEnv() and not env.enabled
    assert pick_device(env) == torch.device("cuda", 0) and selected == [0]


def test_backend_follows_the_device_not_the_machine(fake_cuda):
    fake_cuda(2)  # a GPU machine still trains a CPU model through gloo
    assert backend_for(torch.device("cpu")) == "gloo"
    assert "cuda:nccl" in backend_for(torch.device("cuda", 0))


def test_the_test_session_hides_cuda_outside_cuda_tests():
    """tests/conftest.py: CPU tests and their children never see a GPU, whatever the machine."""
    import os

    assert torch.cuda.is_available() is False
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert distributed.pick_device(DistEnv()) == torch.device("cpu")


@pytest.mark.parametrize("benchmark", [True, False])
def test_cudnn_benchmark_false_also_makes_cudnn_deterministic(benchmark):
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        set_cudnn(benchmark)
        assert torch.backends.cudnn.benchmark is benchmark
        assert torch.backends.cudnn.deterministic is (not benchmark)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


@pytest.mark.parametrize(("native", "emulated", "want"), [(True, True, "bf16"), (False, True, "fp16"),
                                                          (False, False, "fp16")])
def test_fast_preset_takes_bf16_only_where_the_card_has_it_natively(monkeypatch, native, emulated, want):
    """A100/H100 (sm 8+): bf16. V100/T4 emulate bf16 (is_bf16_supported() is True there by
    default): fp16 with the gradient scaler."""

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native or (including_emulation and emulated)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert fast_preset("cuda").amp == want


def test_solve_ex_merge_agrees_with_the_published_inverse():
    """The merge's solve_ex (no host sync) computes the published projection to 1e-6."""
    g = torch.Generator().manual_seed(3)
    basis, feats = torch.rand(2, 16, 24, 20, generator=g), torch.randn(2, 32, 24, 20, generator=g)
    fast = fast_subspace_projection(basis, feats)
    published = subspace_projection(basis, feats)
    scale = published.abs().max()
    assert (fast - published).abs().max() <= 1e-6 * scale

    # And equals torch.linalg.solve's answer to the same system (same LU, no error check).
    v = basis.reshape(2, 16, -1)
    v = v / (1e-6 + v.abs().sum(dim=2, keepdim=True))
    gram, rhs = v @ v.transpose(1, 2), v @ feats.reshape(2, 32, -1).transpose(1, 2)
    checked = torch.linalg.solve(gram, rhs)
    unchecked = torch.linalg.solve_ex(gram, rhs, check_errors=False).result
    torch.testing.assert_close(unchecked, checked, rtol=1e-6, atol=1e-6 * float(checked.abs().max()))


# ---------------------------------------------------------------- scripts/gpu_check.sh

GPU_WINDOW_S = 12 * 60  # what the first GPU run gets for the check on one H100/H200


@pytest.mark.parametrize(("device", "quick"), [("cuda", False), ("cpu", True), ("cpu", False)])
def test_every_plan_fits_its_budget(device, quick):
    from dgunet.bench.gpucheck import default_budget, plan

    steps = plan(device, quick)
    assert sum(s.timeout for s in steps) < default_budget(device, quick)
    assert all(s.timeout >= 30 for s in steps)  # each step has a limit of its own, and a usable one
    required = [s for s in steps if not s.optional]
    assert steps[:len(required)] == required  # required steps first: a spent budget only skips optional ones


def test_the_cuda_plan_fits_twelve_minutes_most_valuable_first_compile_last():
    from dgunet.bench.gpucheck import CUDA_BUDGET_S, plan

    steps = plan("cuda", quick=False)
    assert sum(s.timeout for s in steps) < CUDA_BUDGET_S <= GPU_WINDOW_S - 60  # a minute of margin at least
    names = ["cuda tests", "inference 256x256", "training step, published batch per GPU"]
    assert [s.name for s in steps[:3]] == names
    assert not any(s.optional for s in steps[:3])
    compiling = [s for s in steps if "--compile" in s.args]
    assert compiling == [steps[-1]] and steps[-1].optional  # torch.compile only in the last, optional step
    assert "not compiled" in steps[0].args  # the cuda tests leave their compile test out


def test_dry_run_prints_the_plan_with_each_steps_budget(capsys):
    from dgunet.bench.gpucheck import main, plan

    for argv, steps in ((["--device", "cpu", "--quick", "--plan"], plan("cpu", True)),
                        (["--plan"], plan("cuda", False))):  # the CUDA plan is readable without a GPU
        assert main(argv) == 0
        out = capsys.readouterr().out
        for step in steps:
            line = next(ln for ln in out.splitlines() if step.name in ln)
            assert f" {step.timeout} s" in line
        assert f"limits {sum(s.timeout for s in steps)} s in all" in out


def outcome(name: str, ok: bool, output: str, skipped: bool = False, optional: bool = False):
    from dgunet.bench.gpucheck import Outcome, Step

    return Outcome(Step(name, ["-c", "pass"], 60, optional=optional), ok, 1.0, output, skipped=skipped)


def test_the_docs_writer_refuses_a_failed_or_skipped_step():
    from dgunet.bench.gpucheck import step_block

    with pytest.raises(ValueError, match="inference 256x256.*FAILED"):
        step_block(outcome("inference 256x256", False, "| faithful | 9.9 |"), "H200", "today")
    with pytest.raises(ValueError, match="skipped"):
        step_block(outcome("training step", False, "", skipped=True), "H200", "today")


def test_a_failed_run_keeps_the_good_numbers_of_an_earlier_one(tmp_path):
    from dgunet.bench.gpucheck import BEGIN, END, write_results

    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{BEGIN}\n_Not yet run on a GPU._\n{END}\n\nafter\n")
    first = [outcome("inference 256x256", True, "| faithful | 0.010 |"),
             outcome("training step", True, "| 0.5 |")]
    assert write_results(docs, first, "NVIDIA H200 x1")
    text = docs.read_text()
    assert "### inference 256x256: NVIDIA H200 x1" in text and "| faithful | 0.010 |" in text
    assert "_Not yet run" not in text and text.startswith("# Benchmarks\n") and text.endswith("after\n")

    # Next run: inference fails with garbage, training passes with new numbers.
    second = [outcome("inference 256x256", False, "| faithful | 99 |"),
              outcome("training step", True, "| 0.4 |")]
    assert write_results(docs, second, "NVIDIA H100 x1")
    text = docs.read_text()
    assert "| faithful | 0.010 |" in text and "| faithful | 99 |" not in text  # kept from the good run
    assert "### inference 256x256: NVIDIA H200 x1" in text
    assert "### training step: NVIDIA H100 x1" in text and "| 0.4 |" in text and "| 0.5 |" not in text
    assert text.index("inference 256x256") < text.index("training step")  # plan order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.md"]  # atomic: no temporary left

    # A run where nothing passed does not touch the file at all.
    before = docs.read_bytes()
    assert not write_results(docs, [outcome("inference 256x256", False, "boom")], "NVIDIA H100 x1")
    assert docs.read_bytes() == before


def test_only_required_steps_decide_the_exit_status():
    from dgunet.bench.gpucheck import required_passed, summary

    optional_failed = [outcome("cuda tests", True, ""), outcome("compile", False, "", optional=True)]
    assert required_passed(optional_failed)
    assert not required_passed([outcome("cuda tests", False, ""), outcome("compile", True, "", optional=True)])
    skipped = [outcome("cuda tests", True, ""), outcome("compile", False, "", skipped=True, optional=True)]
    assert "SKIP  compile" in summary(skipped, "H200", 1.0) and required_passed(skipped)


# ---------------------------------------------------------------- host syncs and memory figures

def test_the_training_batchs_operator_is_copied_without_blocking(monkeypatch):
    """split_batch: the kernels and sigmas reach the device with non_blocking copies (a blocking
    copy from pinned memory waits for the GPU at every step)."""
    from dgunet.engine import data

    copies: list[dict] = []

    class Pinned:
        def to(self, device, **kwargs):
            copies.append(kwargs)
            return self

    monkeypatch.setattr(data, "build_operator", lambda spec, kernels, sigma: (kernels, sigma))
    batch = (torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), ["a"], {"kernel": Pinned(), "sigma": Pinned()})
    _inp, _target, op = data.split_batch(batch, "deblurring", spec=object())
    assert copies == [{"non_blocking": True}] * 2 and isinstance(op[0], Pinned)


def test_cuda_peak_counts_only_what_the_path_allocates(monkeypatch):
    """bench.memory.cuda_peak under a simulated allocator: 3 GiB resident (other paths' copies), the
    run peaks at 5 GiB: the figure is 2 GiB."""
    from dgunet.bench import memory as bench

    gib = 2 ** 30
    state = {"allocated": 3 * gib, "peak": 7 * gib}  # an earlier path peaked at 7 GiB

    def reset():
        state["peak"] = state["allocated"]

    def run():
        state["peak"] = max(state["peak"], 5 * gib)

    fakes = {"synchronize": lambda: None, "empty_cache": lambda: None, "reset_peak_memory_stats": reset,
             "memory_allocated": lambda: state["allocated"], "max_memory_allocated": lambda: state["peak"]}
    for name, fake in fakes.items():
        monkeypatch.setattr(torch.cuda, name, fake)
    assert bench.cuda_peak(run) == 2 * gib


def test_train_py_with_two_ranks_on_one_gpu_stops_with_one_line(fake_cuda, torchrun, tmp_path, capsys):
    """The engine's entry point (what <Task>/train.py calls) under `torchrun --nproc_per_node 2`
    on a one-GPU host: exit code 2 and one line on stderr, no traceback, before any data is read."""
    from _engine_helpers import REPO, small_opts

    from dgunet.engine import main

    fake_cuda(1)
    torchrun(rank=0, nproc=2)
    argv = ["--opts", *small_opts("deraining", tmp_path)]
    code = main("deraining", REPO / "Deraining" / "training.yml", argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: 2 training processes on this host")
    assert "Traceback" not in err
