"""core/adam.Adam: torch.optim.Adam's updates bit for bit, its state_dict both ways, and no torch._dynamo import."""
import copy
import subprocess
import sys

import pytest
import torch

from mfpg_ros.core.adam import Adam

torch.set_num_threads(1)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def _steps(model, optimizer, n, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        (model(torch.randn(32, 5, generator=gen)) ** 2).sum().backward()
        model[0].bias.grad = None  # a parameter without a gradient is left alone, as torch does
        optimizer.step()


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_updates_and_state_equal_torch_adam_bit_for_bit():
    ours, theirs = _net(), _net()
    mine, ref = Adam(ours.parameters(), lr=3e-3, eps=1e-5), torch.optim.Adam(theirs.parameters(), lr=3e-3, eps=1e-5)
    _steps(ours, mine, 40, seed=1)
    _steps(theirs, ref, 40, seed=1)
    assert _same(ours, theirs) and not _same(ours, _net())
    a, b = mine.state_dict(), ref.state_dict()
    assert a['param_groups'] == b['param_groups'] and a['state'].keys() == b['state'].keys() == {0, 2, 3}
    assert all(torch.equal(a['state'][i][k], b['state'][i][k]) and a['state'][i][k].dtype == b['state'][i][k].dtype
               for i in b['state'] for k in b['state'][i])


def test_state_dicts_load_both_ways_and_continue_identically():
    """Checkpoints written with torch.optim.Adam's state resume here, and the reverse."""
    ours, theirs = _net(), _net()
    ref = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    _steps(theirs, ref, 10, seed=2)
    ours.load_state_dict(theirs.state_dict())
    mine = Adam(ours.parameters(), lr=0.5)  # the loaded state's lr wins, as in torch
    mine.load_state_dict(copy.deepcopy(ref.state_dict()))
    assert mine.lr == 1e-3
    _steps(ours, mine, 10, seed=3)
    _steps(theirs, ref, 10, seed=3)
    assert _same(ours, theirs)
    back = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    back.load_state_dict(copy.deepcopy(mine.state_dict()))
    _steps(ours, mine, 5, seed=4)
    _steps(theirs, back, 5, seed=4)
    assert _same(ours, theirs)


def test_foreign_state_is_refused_with_the_reason():
    mine = Adam(_net().parameters())
    other = torch.nn.Linear(3, 1)
    wrong = torch.optim.Adam(other.parameters())
    other(torch.ones(3)).sum().backward()
    wrong.step()
    with pytest.raises(ValueError, match='one group of 4'):
        mine.load_state_dict(wrong.state_dict())
    state = Adam(_net().parameters()).state_dict()
    state['param_groups'][0]['amsgrad'] = True
    with pytest.raises(ValueError, match='amsgrad'):
        mine.load_state_dict(state)
    state = Adam(_net().parameters()).state_dict()
    state['state'] = {7: state['state'].get(0, {})}
    with pytest.raises(ValueError, match='parameter 7'):
        mine.load_state_dict(state)
    with pytest.raises(ValueError, match='no parameters'):
        Adam([])
    with pytest.raises(ValueError, match='betas'):
        Adam(_net().parameters(), betas=(0.9, 1.0))


def test_a_learner_update_does_not_import_torch_dynamo():
    """torch.optim imports torch._dynamo on first use (seconds and ~70 MB per learner process here)."""
    code = ('import sys; from mfpg_ros.cli import main; sys.argv = ["mfpg", "train-inprocess", "--iterations", "1"]\n'
            'main()\nprint("dynamo", "torch._dynamo" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == 'dynamo False'
