"""The per-epoch training state (mmops/training/state.py): it stores what the run changed and names the
unchanged starting tensors (a frozen pretrained encoder) by hash; a resume into the same start is bit-identical,
a checkpoint of the earlier layout still resumes, and one written over other starting weights is refused."""

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmops.errors import ConfigError
from mmops.training.state import restore, save


def _model(seed: int) -> torch.nn.Module:
    """A "pretrained" frozen encoder (64 x 256) and a trainable head, initialised from `seed`."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 3))
    model[0].requires_grad_(False)
    return model


def _optim(model: torch.nn.Module) -> SimpleNamespace:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    return SimpleNamespace(opt=opt, sched=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4),
                           scaler=torch.amp.GradScaler("cpu", enabled=False))


def _step(model: torch.nn.Module, optim: SimpleNamespace) -> None:
    loss = model(torch.randn(8, 64)).square().mean()
    loss.backward()
    optim.opt.step()
    optim.opt.zero_grad()
    optim.sched.step()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_holds_what_changed_and_resumes_bit_identical(tmp_path: Path) -> None:
    model, gen = _model(0), np.random.default_rng(0)
    optim = _optim(model)
    st = restore(tmp_path / "none.pt", "run", False, model, optim, gen, None, "t")
    frozen_start = model[0].weight.detach().clone()
    for epoch in (1, 2):
        _step(model, optim)
        st.history.append({"epoch": epoch})
        st.consider(epoch, 0.5 * epoch, 1.0, model, patience=5)
    assert set(st.best_state or {}) == {"2.weight", "2.bias"}  # the frozen encoder is not copied again
    compact, whole = tmp_path / "last.pt", tmp_path / "whole.pt"
    save(compact, "run", 2, model, optim, gen, st, None)
    save(whole, "run", 2, model, optim, gen, st, None, compact=False)
    encoder_bytes = 2 * frozen_start.numel() * 4  # stored twice in the whole layout: the weights and the best
    assert compact.stat().st_size < whole.stat().st_size - encoder_bytes * 0.9

    for path in (compact, whole):  # the earlier layout (every tensor) resumes to the same state too
        fresh, fresh_gen = _model(0), np.random.default_rng(0)
        fresh_optim = _optim(fresh)
        resumed = restore(path, "run", True, fresh, fresh_optim, fresh_gen, None, "t")
        assert resumed.start == 3 and resumed.best_epoch == 2
        assert _same(fresh.state_dict(), model.state_dict())
        assert _same(resumed.best_weights(), st.best_weights())
        assert fresh_optim.opt.state_dict()["state"][0]["step"] == optim.opt.state_dict()["state"][0]["step"]
        # and the next step lands where the uninterrupted run's does
        twin = copy.deepcopy(model)
        twin_optim = _optim(twin)
        twin_optim.opt.load_state_dict(copy.deepcopy(optim.opt.state_dict()))
        twin_optim.sched.load_state_dict(optim.sched.state_dict())
        for m, o in ((fresh, fresh_optim), (twin, twin_optim)):
            torch.manual_seed(5)
            _step(m, o)
        assert _same(fresh.state_dict(), twin.state_dict())
    assert torch.equal(model[0].weight, frozen_start)


def test_a_checkpoint_over_other_starting_weights_is_refused(tmp_path: Path) -> None:
    model = _model(0)
    optim, gen = _optim(model), np.random.default_rng(0)
    st = restore(tmp_path / "none.pt", "run", False, model, optim, gen, None, "t")
    _step(model, optim)
    st.consider(1, 0.5, 1.0, model, patience=5)
    save(tmp_path / "last.pt", "run", 1, model, optim, gen, st, None)
    other = _model(1)  # another pretrained encoder under the same run key
    with pytest.raises(ConfigError, match="over other starting weights"):
        restore(tmp_path / "last.pt", "run", True, other, _optim(other), gen, None, "t")
