"""Off-dynamics baselines on the same baseline-REINFORCE learner (paper notes §3.3): the LF pool's rewards are
corrected with what HF transitions reveal about the dynamics gap, then REINFORCE runs as usual.

  DARC: two domain classifiers, on (s, a) and (s, a, s'). For binary classifiers the DARC reward correction
        [log p(HF|s,a,s') - log p(HF|s,a)] - [log p(LF|s,a,s') - log p(LF|s,a)] is logit(s,a,s') - logit(s,a).
        Policy and value are fitted on the corrected LF pool only.
  PAR:  a latent dynamics model (state encoder z_s, state-action encoder z_sa, TD7-style) fitted on HF
        transitions; LF rewards lose beta * |z_sa(z_s(s), a) - z_s(s')|^2 (mean over latent dims, target
        encoder). Policy and value are fitted on HF plus the penalised LF pool.

Next states: segments carry no final observation, so s' = obs[t + 1] within a segment. The last step of each
segment is dropped from classifier / encoder training, and its reward gets the mean correction of the
segment's other steps (zero for a one-step segment).
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from torch import nn

from mfpg_ros.core import estimator as est
from mfpg_ros.core.adam import Adam
from mfpg_ros.core.algorithms import Learner
from mfpg_ros.core.config import AlgoConfig, OffDynamicsConfig
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import Episode


def transitions(episodes: list[Episode], contract: Contract) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, a, s') of every step that has a recorded successor; actions clipped as the plant applied them."""
    parts = [(e.obs[:-1], e.actions[:-1], e.obs[1:]) for e in episodes if len(e) > 1 and not e.aborted]
    if not parts:
        return (np.zeros((0, contract.obs_dim), np.float32), np.zeros((0, contract.act_dim), np.float32),
                np.zeros((0, contract.obs_dim), np.float32))
    s, a, s2 = (np.concatenate(p).astype(np.float32) for p in zip(*parts))
    return s, np.clip(a, contract.action_low, contract.action_high).astype(np.float32), s2


class ReplayBuffer:
    """Ring buffer of (s, a, s') transitions."""

    def __init__(self, capacity: int):
        self.capacity, self.size, self.next = capacity, 0, 0
        self.data: list[np.ndarray] | None = None

    def add(self, *arrays: np.ndarray) -> None:
        n = len(arrays[0])
        if self.data is None:
            self.data = [np.zeros((self.capacity, x.shape[1]), np.float32) for x in arrays]
        idx = (self.next + np.arange(n)) % self.capacity
        for store, x in zip(self.data, arrays):
            store[idx] = x[-self.capacity:] if n > self.capacity else x
        self.next, self.size = int((self.next + n) % self.capacity), min(self.capacity, self.size + n)

    def sample(self, rng: np.random.Generator, n: int) -> list[torch.Tensor]:
        idx = rng.integers(0, self.size, size=n)
        return [torch.as_tensor(store[idx]) for store in self.data]


def _mlp(sizes: list[int], act=nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class CorrectionModel:
    """Common frame: replay buffers, a training schedule after the HF warm-up, per-segment reward corrections."""

    def __init__(self, cfg: OffDynamicsConfig, contract: Contract, seed: int):
        self.cfg, self.contract = cfg, contract
        self.rng = np.random.default_rng([seed, 17])
        self.hf_buffer, self.lf_buffer = ReplayBuffer(cfg.buffer_size), ReplayBuffer(cfg.buffer_size)
        self.hf_seen, self.updates = 0, 0

    @property
    def active(self) -> bool:
        return self.updates > 0

    def observe(self, hifi: list[Episode], lofi: list[Episode]) -> dict:
        """Store the new transitions and, once past the warm-up, take the configured training steps."""
        self.hf_seen += sum(len(e) for e in hifi)
        for buffer, group in ((self.hf_buffer, hifi), (self.lf_buffer, lofi)):
            s, a, s2 = transitions(group, self.contract)
            if len(s):
                buffer.add(s, a, s2)
        if self.hf_seen < self.cfg.warmup_hf_steps or not self._ready():
            return {}
        losses = [self.train_step() for _ in range(self.cfg.updates_per_iter)]
        self.updates += len(losses)
        return {'correction_loss': float(np.mean(losses))}

    def _ready(self) -> bool:
        return self.hf_buffer.size > 0

    def train_step(self) -> float:
        raise NotImplementedError

    def per_step(self, s: torch.Tensor, a: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        """Reward correction of each transition (added to the LF reward)."""
        raise NotImplementedError

    def correct(self, episodes: list[Episode]) -> tuple[list[Episode], float]:
        """Copies of LF segments with corrected rewards, and the mean correction per step."""
        if not self.active or not episodes:
            return list(episodes), 0.0
        s, a, s2 = (torch.as_tensor(x) for x in transitions(episodes, self.contract))
        with torch.no_grad():
            delta = self.per_step(s, a, s2).double().numpy() if len(s) else np.zeros(0)
        out, start = [], 0
        for e in episodes:
            n = len(e) - 1 if len(e) > 1 and not e.aborted else 0
            d = delta[start:start + n]
            start += n
            last = float(d.mean()) if n else 0.0  # no s' for the last step: the segment's mean correction
            out.append(dataclasses.replace(e, rewards=e.rewards + np.append(d, last)[:len(e)]))
        return out, float(delta.mean()) if len(delta) else 0.0


class DomainClassifiers(CorrectionModel):
    """DARC: logistic classifiers HF-vs-LF on (s, a) and on (s, a, s'); correction = beta * (l_sas - l_sa)."""

    def __init__(self, cfg: OffDynamicsConfig, contract: Contract, seed: int):
        super().__init__(cfg, contract, seed)
        o, u, h = contract.obs_dim, contract.act_dim, cfg.hidden
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1000)
            self.sa, self.sas = _mlp([o + u, h, h, 1]), _mlp([2 * o + u, h, h, 1])
        self.optimizer = Adam([*self.sa.parameters(), *self.sas.parameters()], lr=cfg.lr)
        self.noise = torch.Generator().manual_seed(seed + 1001)

    def _ready(self) -> bool:
        return self.hf_buffer.size > 0 and self.lf_buffer.size > 0

    def logits(self, s, a, s2) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(HF|.) - log p(LF|.) for (s, a) and (s, a, s')."""
        return self.sa(torch.cat([s, a], -1)).squeeze(-1), self.sas(torch.cat([s, a, s2], -1)).squeeze(-1)

    def train_step(self) -> float:
        n = self.cfg.batch_size
        hf, lf = self.hf_buffer.sample(self.rng, n), self.lf_buffer.sample(self.rng, n)
        s, a, s2 = (torch.cat([x, y]) for x, y in zip(hf, lf))
        s, a, s2 = (x + self.cfg.input_noise * torch.randn(x.shape, generator=self.noise) for x in (s, a, s2))
        label = torch.cat([torch.ones(n), torch.zeros(n)])
        l_sa, l_sas = self.logits(s, a, s2)
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = bce(l_sa, label) + bce(l_sas, label)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def per_step(self, s, a, s2):
        l_sa, l_sas = self.logits(s, a, s2)
        return self.cfg.beta * (l_sas - l_sa)


class _AvgL1Norm(nn.Module):
    def forward(self, x):
        return x / x.abs().mean(-1, keepdim=True).clamp(min=1e-8)


class LatentDynamics(CorrectionModel):
    """PAR: z_s = f(s) (AvgL1-normalised), z_sa = g(z_s, a) predicts z_s(s'); trained on HF transitions only.
    Correction = -beta * mean_k (z_sa - z_s(s'))_k^2 with the Polyak-averaged target encoders."""

    def __init__(self, cfg: OffDynamicsConfig, contract: Contract, seed: int):
        super().__init__(cfg, contract, seed)
        o, u, h, z = contract.obs_dim, contract.act_dim, cfg.hidden, cfg.latent_dim
        with torch.random.fork_rng():
            torch.manual_seed(seed + 2000)
            self.state = nn.Sequential(_mlp([o, h, h, z], act=nn.ELU), _AvgL1Norm())
            self.state_action = _mlp([z + u, h, h, z], act=nn.ELU)
        self.target = copy.deepcopy((self.state, self.state_action))
        self.optimizer = Adam([*self.state.parameters(), *self.state_action.parameters()], lr=cfg.lr)

    def prediction_error(self, s, a, s2, encoders) -> torch.Tensor:
        state, state_action = encoders
        predicted = state_action(torch.cat([state(s), a], -1))
        return (predicted - state(s2)).pow(2).mean(-1)

    def train_step(self) -> float:
        s, a, s2 = self.hf_buffer.sample(self.rng, self.cfg.batch_size)
        with torch.no_grad():
            target = self.state(s2)
        loss = (self.state_action(torch.cat([self.state(s), a], -1)) - target).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for online, slow in zip((self.state, self.state_action), self.target):
                for p, q in zip(online.parameters(), slow.parameters()):
                    q.mul_(1 - self.cfg.tau).add_(self.cfg.tau * p)
        return float(loss.detach())

    def per_step(self, s, a, s2):
        return -self.cfg.beta * self.prediction_error(s, a, s2, self.target)


class _CorrectedLearner(Learner):
    """REINFORCE with a value baseline on HF and/or corrected LF data (which ones: `use_hifi`)."""

    model_class: type[CorrectionModel]
    use_hifi: bool

    def __init__(self, cfg: AlgoConfig, contract: Contract, seed: int = 0):
        super().__init__(cfg, contract, seed)
        self.correction = self.model_class(cfg.offdyn, contract, seed)
        self._training: dict = {}

    def update(self, hifi, paired=(), pool=()) -> dict:
        self._training = self.correction.observe([e for e in hifi if not e.aborted], [e for e in pool if not e.aborted])
        return super().update(hifi, paired, pool)

    def _policy_loss(self, hifi, paired, pool):
        corrected, mean_delta = self.correction.correct(list(pool))
        data = [*hifi, *corrected] if self.use_hifi else corrected
        fit = est.flatten(data, self.cfg.gamma)
        x = self._advantages(fit) * self.model.log_prob(fit.obs, fit.actions)
        return -x.mean(), fit, {'n_aligned': len(fit), 'reward_correction': mean_delta,
                                'correction_updates': self.correction.updates, **self._training}


class DARCLearner(_CorrectedLearner):
    model_class, use_hifi = DomainClassifiers, False


class PARLearner(_CorrectedLearner):
    model_class, use_hifi = LatentDynamics, True


OFF_DYNAMICS_LEARNERS = {'darc': DARCLearner, 'par': PARLearner}
