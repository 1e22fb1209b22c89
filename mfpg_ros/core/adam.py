"""Adam with the arithmetic of torch.optim.Adam's default CPU path, bit for bit, and its state_dict layout.

torch.optim imports torch._dynamo on an optimiser's first use: 1.3-2.6 s and ~70 MB per process on these machines,
paid by every learner node, in-process trainer and benchmark run. Only what the learners use is here: one parameter
group, no weight decay, no amsgrad."""

from __future__ import annotations

from collections.abc import Iterable

import torch

# The keys torch.optim.Adam writes into a param group, so checkpoints stay readable by either.
_GROUP_DEFAULTS = {'weight_decay': 0, 'amsgrad': False, 'maximize': False, 'foreach': None, 'capturable': False,
                   'differentiable': False, 'fused': None, 'decoupled_weight_decay': False}


class Adam:
    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = list(params)
        if not self.params:
            raise ValueError('Adam got no parameters')
        if not (lr >= 0 and eps >= 0 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f'Adam needs lr >= 0, eps >= 0 and betas in [0, 1), got lr={lr}, eps={eps}, betas={betas}')
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for p in self.params:
            if p.grad is None:
                continue
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {'step': torch.tensor(0.0), 'exp_avg': torch.zeros_like(p),
                                         'exp_avg_sq': torch.zeros_like(p)}
            state['step'] += 1
            state['exp_avg'].lerp_(p.grad, 1 - beta1)
            state['exp_avg_sq'].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            step = state['step'].item()
            step_size = self.lr / (1 - beta1 ** step)
            denom = (state['exp_avg_sq'].sqrt() / (1 - beta2 ** step) ** 0.5).add_(self.eps)
            p.addcdiv_(state['exp_avg'], denom, value=-step_size)

    def state_dict(self) -> dict:
        """torch.optim's layout: parameters by index; the tensors are the live ones (copy before changing them)."""
        group = {'lr': self.lr, 'betas': self.betas, 'eps': self.eps, **_GROUP_DEFAULTS,
                 'params': list(range(len(self.params)))}
        return {'state': {i: dict(self.state[p]) for i, p in enumerate(self.params) if p in self.state},
                'param_groups': [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict['param_groups']
        if len(groups) != 1 or len(groups[0]['params']) != len(self.params):
            raise ValueError(f'optimiser state for {[len(g["params"]) for g in groups]} parameters in '
                             f'{len(groups)} groups; this Adam has one group of {len(self.params)}')
        unsupported = {k: groups[0].get(k) for k in ('weight_decay', 'amsgrad', 'maximize')
                       if groups[0].get(k, _GROUP_DEFAULTS[k]) != _GROUP_DEFAULTS[k]}
        if unsupported:
            raise ValueError(f'optimiser state uses {unsupported}, which this Adam does not implement')
        state = {}
        for index, slots in state_dict['state'].items():
            if not 0 <= int(index) < len(self.params):
                raise ValueError(f'optimiser state for parameter {index}; this Adam has {len(self.params)}')
            p = self.params[int(index)]
            for name in ('exp_avg', 'exp_avg_sq'):
                if tuple(slots[name].shape) != tuple(p.shape):
                    raise ValueError(f'optimiser {name} of parameter {index} has shape {tuple(slots[name].shape)}, '
                                     f'the parameter {tuple(p.shape)}')
            state[p] = {'step': torch.as_tensor(slots['step'], dtype=torch.float32).clone(),
                        'exp_avg': slots['exp_avg'].to(p.dtype).clone(),
                        'exp_avg_sq': slots['exp_avg_sq'].to(p.dtype).clone()}
        self.lr, self.eps = float(groups[0]['lr']), float(groups[0]['eps'])
        self.betas = (float(groups[0]['betas'][0]), float(groups[0]['betas'][1]))
        self.state = state
