"""load_weights: every published format, strict, explained mismatches, no unpickling of code."""

from __future__ import annotations

import re

import pytest
import torch

from dgunet.checkpoint import infer_structure, load_weights, save_atomic
from dgunet.errors import CheckpointError
from dgunet.models import build_model

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


def small(task="deraining", arch="DGUNet", **kw):
    return build_model(task, arch, **{**SMALL, **kw})


def cheap_state_dict(task, arch, **kw):
    """Published-shaped weights stored as expanded zeros: tiny files, real shapes."""
    with torch.device("meta"):
        model = build_model(task, arch, **kw)
    return {k: torch.zeros(()).expand(v.shape) for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_checkpoint_with_dataparallel_prefix(tmp_path):
    src = small()
    path = tmp_path / "model_best.pth"
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    assert_same_weights(load_weights(small(), path), src)


def test_bare_state_dict_like_cs_pkl_and_legacy_serialization(tmp_path):
    src = small("cs", cs_ratio=10)
    path = tmp_path / "net_best.pkl"
    # The published files predate the zip format; weights_only must still read them.
    torch.save(src.state_dict(), path, _use_new_zipfile_serialization=False)
    assert_same_weights(load_weights(small("cs", cs_ratio=10), path), src)


def test_in_memory_state_dict_is_accepted():
    src = small(arch="DGUNet_plus")
    assert_same_weights(load_weights(small(arch="DGUNet_plus"), src.state_dict()), src)


def test_other_variant_is_named_in_the_error(tmp_path):
    path = tmp_path / "deraining_plus.pth"
    torch.save({"state_dict": cheap_state_dict("deraining", "DGUNet_plus")}, path)
    with torch.device("meta"):
        model = build_model("deblurring", "DGUNet")
    with pytest.raises(CheckpointError) as err:
        load_weights(model, path)
    message = str(err.value)
    assert str(path) in message
    assert "this checkpoint is DGUNet+ for deraining (n_feat=40" in message
    assert "the model you built is DGUNet for deblurring or denoising (n_feat=80" in message
    assert "missing keys" in message and "unexpected keys" in message


def test_wrong_cs_ratio_is_explained(tmp_path):
    path = tmp_path / "net_best.pkl"
    torch.save(cheap_state_dict("cs", "DGUNet", cs_ratio=10), path)
    with torch.device("meta"):
        model = build_model("cs", "DGUNet", cs_ratio=25)
    with pytest.raises(CheckpointError, match=r"ratio 10%.*ratio 25%(?s:.*)Phi: file \(103, 1024\)"):
        load_weights(model, path)


def test_unknown_file_matches_no_variant(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="not any DGUNet variant we know"):
        load_weights(small(), path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(small(), tmp_path / "nope.pth")
    bad = tmp_path / "download.pth"
    bad.write_text("<html>Google Drive - virus scan warning</html>")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_weights(small(), bad)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_weights(small(), empty)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_runs_code_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small().state_dict(), "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_weights(small(), path)
    assert not marker.exists()


def test_infer_structure_reads_widths():
    structure = infer_structure(cheap_state_dict("denoising", "DGUNet_plus"))
    assert (structure.kind, structure.arch, structure.n_feat, structure.scale_unetfeats) == (
        "image", "DGUNet_plus", 80, 40)
    assert infer_structure(small("cs", cs_ratio=4).state_dict()).cs_ratio == 4
    assert infer_structure({"x": torch.zeros(1)}) is None


def test_save_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "model_latest.pth"
    save_atomic({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model_latest.pth"]


def test_load_model_reads_the_file_once_and_names_it_on_a_mismatch(tmp_path, monkeypatch):
    from dgunet import checkpoint
    from dgunet.testrun import loading

    path = tmp_path / "small.pth"
    torch.save(small("deblurring").state_dict(), path)
    reads = []
    real = checkpoint.read_checkpoint
    monkeypatch.setattr(loading, "read_checkpoint", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(checkpoint, "read_checkpoint", lambda p: reads.append(p) or real(p))
    loading.load_model("deblurring", path)
    assert reads == [path]
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + " does not fit the model"):
        loading.load_model("deblurring", path, arch="DGUNet_plus")


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
def test_init_from_a_published_file_into_a_noise_aware_stages_model(tmp_path, arch):
    """TRAIN.INIT_FROM: the published keys load, the opt-in modules keep their initialisation, and
    every other mismatch is still refused."""
    from dgunet.checkpoint import init_weights

    widths = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}
    torch.manual_seed(1)
    published = build_model("deblurring", arch, **widths)
    torch.save({"epoch": 3, "state_dict": published.state_dict()}, tmp_path / "published.pth")
    torch.manual_seed(2)
    model = build_model("deblurring", arch, gradient="known", noise_aware=True, head="stages", **widths)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    assert init_weights(model, tmp_path / "published.pth") == ["noise_net", "readout"]
    for key, value in model.state_dict().items():
        expected = fresh[key] if key.startswith(("noise_net.", "readout.")) else published.state_dict()[key]
        assert torch.equal(value, expected), key
    # the other way round: a stages file into a published model has keys that model lacks
    torch.save(model.state_dict(), tmp_path / "stages.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(\d+\): readout"):
        init_weights(build_model("deblurring", arch, **widths), tmp_path / "stages.pth")
    # a missing key outside the opt-in modules is still a mismatch
    partial = published.state_dict()
    del partial["shallow_feat1.0.weight"]
    with pytest.raises(CheckpointError, match="missing keys"):
        init_weights(model, _saved(tmp_path / "partial.pth", partial))


def _saved(path, state):
    torch.save(state, path)
    return path
