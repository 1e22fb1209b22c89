"""REINFORCE with a value baseline in three flavours: multi-fidelity (control variate), HF-only and LF-only.

One `Learner.update` is one iteration of the authors' loop: advantages from the current critic, one Adam step on
policy + value loss with grad-norm clipping, then the policy version advances. The clip is global over policy and
value parameters together (`algo.clip_mode: joint`, the authors' code) or applied to each group on its own
(`separate`: the policy step no longer shrinks with the critic's error).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from mfpg_ros.core import estimator as est
from mfpg_ros.core.adam import Adam
from mfpg_ros.core.config import AlgoConfig
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import Episode
from mfpg_ros.core.policy import ActorCritic


def seeded_model(cfg: AlgoConfig, contract: Contract, seed: int) -> tuple[ActorCritic, Adam]:
    """The policy/value net initialised from `seed` alone (global torch RNG untouched), and its optimiser."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ActorCritic(contract.obs_dim, contract.act_dim, cfg.hidden, cfg.log_std_init)
    return model, Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)


@dataclass
class SurrogateSum:
    """Sum of the per-step surrogates x = A log pi (A detached) over some steps, and of their gradients over the
    actor parameters, at fixed weights. `episodes` are the episodes summed (held, so their id() stays theirs: the
    same data may come twice under one episode id, e.g. from a restarted simulator, and counts twice)."""

    steps: int = 0
    x: float = 0.0
    grads: list[torch.Tensor] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)

    @property
    def ids(self) -> set[int]:
        return {id(e) for e in self.episodes}

    def __add__(self, other: 'SurrogateSum') -> 'SurrogateSum':
        grads = [a + b for a, b in zip(self.grads, other.grads)] if self.grads and other.grads \
            else self.grads or other.grads
        return SurrogateSum(self.steps + other.steps, self.x + other.x, grads, self.episodes + other.episodes)

    def mean(self, params: list[torch.Tensor]) -> torch.Tensor:
        """A 1-element tensor: value x / steps, gradient over params grads / steps (empty if no steps)."""
        if not self.steps:
            return torch.zeros(0)
        return ((self.x + est.fixed_gradient(params, self.grads)) / self.steps).reshape(1)


def finite_state(learner) -> bool:
    """Every parameter, optimiser moment and coefficient statistic of the learner is finite."""
    tensors = [*learner.model.parameters(), *(t for state in learner.optimizer.state.values()
                                               for t in state.values() if isinstance(t, torch.Tensor))]
    return all(bool(torch.isfinite(t).all()) for t in tensors) and all(map(math.isfinite, learner.coef.state()))


def undo_if_nonfinite(learner, before: dict, metrics: dict) -> dict:
    """One batch of absurd data (rewards of 1e39 from a glitching sensor pass every finiteness check) can overflow
    the update into NaN weights or coefficient statistics, which could then be neither published nor resumed from,
    or would spoil every later update. Such an update is undone: the learner's state from before it (weights,
    optimiser, coefficient, RNGs) comes back, the iteration counts as skipped, and the version still advances, so
    the run goes on with the previous weights."""
    if finite_state(learner):
        return {**metrics, 'nonfinite_update': 0.0}
    learner.load_state_dict(before)
    return {**metrics, 'skipped': 1.0, 'nonfinite_update': 1.0}


def guarded_update(learner, hifi: list[Episode], paired: list[Episode], pool: list[Episode], step) -> dict:
    """What every learner's update shares around its own `step(hifi, paired, pool) -> metrics`: aborted segments
    left out, the step undone if it leaves a non-finite state, the common metrics, the version advanced."""
    t0 = time.perf_counter()
    before = copy.deepcopy(learner.state_dict())
    hifi, paired, pool = ([e for e in group if not e.aborted] for group in (hifi, paired, pool))
    metrics = undo_if_nonfinite(learner, before, step(hifi, paired, pool))
    metrics.update(iteration=learner.version, hf_segments=len(hifi), hf_steps=sum(len(e) for e in hifi),
                   lf_steps=sum(len(e) for e in (*paired, *pool)), update_seconds=time.perf_counter() - t0,
                   std=float(learner.model.log_std.detach().exp().mean()))
    learner.version += 1
    return metrics


class Learner:
    def __init__(self, cfg: AlgoConfig, contract: Contract, seed: int = 0):
        self.cfg, self.contract = cfg, contract
        self.model, self.optimizer = seeded_model(cfg, contract, seed)
        self.coef = est.Coefficient()
        self.permutation_rng = np.random.default_rng([seed, 7])
        self.version = 0
        self.prefetched = SurrogateSum()  # the current version's pool term, summed as its episodes arrived

    def prefetch_pool(self, pool: list[Episode]) -> None:
        """Sum the MF mean term over the pool episodes of the current version not summed yet, while other data
        are still on the way; update() then reuses the sum for these episodes (the same update up to float32
        summation order). A no-op unless the pool enters the update only through that sum (MF-REINFORCE,
        pairing 'paper')."""
        if self.cfg.algorithm != 'mf_reinforce' or self.cfg.estimator.pairing == 'matched':
            return
        done = self.prefetched.ids
        fresh = [e for e in pool if e.policy_version == self.version and not e.aborted and id(e) not in done]
        if fresh:
            self.prefetched = self.prefetched + self._surrogate_sum(fresh)

    def _surrogate_sum(self, episodes: list[Episode]) -> SurrogateSum:
        steps = est.flatten(episodes, self.cfg.gamma)
        if not len(steps):
            return SurrogateSum(episodes=list(episodes))
        x = self._x(steps).sum()
        return SurrogateSum(len(steps), float(x.detach()), est.actor_grads(x, self.model.actor_parameters()),
                            list(episodes))

    def _pool_sum(self, pool: list[Episode]) -> tuple[SurrogateSum, int]:
        """The pool's surrogate sum (what was prefetched, if it covers only episodes of `pool`, plus the rest) and
        the number of its steps that were prefetched."""
        done = self.prefetched if self.prefetched.ids <= {id(e) for e in pool} else SurrogateSum()
        summed = done.ids
        return done + self._surrogate_sum([e for e in pool if id(e) not in summed]), done.steps

    # ---- one iteration -------------------------------------------------------------------------------------
    def update(self, hifi: list[Episode], paired: list[Episode] = (), pool: list[Episode] = ()) -> dict:
        """Consume one version's segments, step the optimiser, advance the version. Returns metrics."""
        metrics = guarded_update(self, hifi, paired, pool, self._update)
        self.prefetched = SurrogateSum()
        return metrics

    def _update(self, hifi: list[Episode], paired: list[Episode], pool: list[Episode]) -> dict:
        policy_loss, fit, metrics = self._policy_loss(hifi, paired, pool)
        return {**metrics, **self._step(policy_loss, fit)}

    def policy_gradient(self, hifi, paired=(), pool=()) -> tuple[torch.Tensor, dict]:
        """The policy-gradient estimate (flattened over actor parameters) this data would give; no step taken."""
        policy_loss, _, metrics = self._policy_loss(*([e for e in g if not e.aborted] for g in (hifi, paired, pool)))
        return -torch.cat([g.flatten() for g in est.actor_grads(policy_loss, self.model.actor_parameters())]), metrics

    def _policy_loss(self, hifi, paired, pool) -> tuple[torch.Tensor, est.Steps, dict]:
        algorithm = self.cfg.algorithm
        if algorithm == 'mf_reinforce':
            return self._mf_terms(hifi, paired, pool)
        data = hifi if algorithm == 'reinforce' else [*paired, *pool]
        fit = est.flatten(data, self.cfg.gamma)
        x = self._advantages(fit) * self.model.log_prob(fit.obs, fit.actions)
        return -x.mean(), fit, {'n_aligned': len(fit)}

    def _advantages(self, steps: est.Steps) -> torch.Tensor:
        with torch.no_grad():
            return steps.returns - self.model.value(steps.obs) if len(steps) else steps.returns

    def _step(self, policy_loss: torch.Tensor, fit: est.Steps) -> dict:
        if len(fit) <= self.cfg.estimator.min_aligned_steps:
            return {'skipped': 1.0, 'policy_loss': float('nan'), 'value_loss': float('nan'), 'grad_norm': 0.0,
                    'policy_grad_norm': 0.0, 'value_grad_norm': 0.0}
        value_loss = torch.nn.functional.mse_loss(self.model.value(fit.obs), fit.returns)
        loss = policy_loss + self.cfg.vf_coef * value_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms = self._clip_gradients()
        self.optimizer.step()
        return {'skipped': 0.0, 'policy_loss': float(policy_loss.detach()), 'value_loss': float(value_loss.detach()),
                **norms}

    def _clip_gradients(self) -> dict:
        """Clip per `clip_mode`; returns the pre-clip norms: total, policy parameters (pi + log_std), value (vf,
        incl. vf_coef). The policy loss reaches only the policy parameters and the value loss only vf."""
        policy, value = self.model.actor_parameters(), list(self.model.vf.parameters())
        with torch.no_grad():
            g_pi, g_vf = (torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in group
                                                                if p.grad is not None] or [torch.zeros(())]))
                          for group in (policy, value))
        if self.cfg.clip_mode == 'separate':
            torch.nn.utils.clip_grad_norm_(policy, self.cfg.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(value, self.cfg.max_grad_norm)
            grad_norm = torch.sqrt(g_pi ** 2 + g_vf ** 2)
        else:  # joint: one global clip, exactly as before the switch existed
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        return {'grad_norm': float(grad_norm), 'policy_grad_norm': float(g_pi), 'value_grad_norm': float(g_vf)}

    def _hf_only_terms(self, hifi):
        """No low-fidelity data this iteration (e.g. a simulator timed out): plain HF REINFORCE."""
        fit = est.flatten(hifi, self.cfg.gamma)
        x_h = self._x(fit)
        var = float(x_h.detach().var(unbiased=False)) if len(fit) else 0.0
        return -x_h.mean(), fit, {'c': 0.0, 'n_pairs': 0, 'n_aligned': len(fit), 'var_without_cv': var,
                                  'var_with_cv': var, 'var_ratio': 1.0, 'pool_steps_prefetched': 0}

    def _x(self, steps: est.Steps) -> torch.Tensor:
        """Per-step surrogates A_t log pi(a_t|s_t), A detached."""
        return self._advantages(steps) * self.model.log_prob(steps.obs, steps.actions) if len(steps) \
            else torch.zeros(0)

    def _matched_terms(self, hifi, paired, pool):
        """pairing 'matched' (docs/pairing.md): every HF step; each segment's whole replay; its branches for mu."""
        m = est.match(hifi, paired, pool)
        if m is None:
            return self._hf_only_terms(hifi)
        gamma = self.cfg.gamma
        fit, lf, mu = (est.flatten(g, gamma) for g in (m.hifi, m.replays, m.branches))
        x_h, x_l, x_mu = self._x(fit), self._x(lf), self._x(mu)
        flat = est.segment_gradients(torch.cat([x_h, x_l, x_mu]), m.rows, self.model.actor_parameters())
        e = self.cfg.estimator
        c, stats = est.segment_c(self.coef, flat[:m.n], flat[m.n:], e.ema_alpha, e.fixed_c)
        stats.update(c=c, n_pairs=m.n, n_aligned=len(fit), lf_rollouts=len(m.branches))
        return est.matched_policy_loss(x_h, x_l, x_mu, m.branch_weights(), c), fit, stats

    def _mf_terms(self, hifi, paired, pool):
        if self.cfg.estimator.pairing == 'matched':
            return self._matched_terms(hifi, paired, pool)
        e, gamma = self.cfg.estimator, self.cfg.gamma
        pairs = est.pair_segments(hifi, paired)
        if not pairs:
            return self._hf_only_terms(hifi)
        cut = [min(len(h), len(r)) for h, r in pairs] if e.trim_pairs else [len(r) for _, r in pairs]
        lf = est.flatten([r for _, r in pairs], gamma, cut)
        if e.trim_pairs:
            hf = est.flatten([h for h, _ in pairs], gamma, cut)
        else:
            hf = est.flatten(hifi, gamma)
        mu, prefetched = self._pool_sum(pool)  # the mean term is linear in its steps: perhaps summed already
        if not e.mu_from_pool_only:
            mu = mu + self._surrogate_sum([r for _, r in pairs])

        adv_h, adv_l = self._advantages(hf), self._advantages(lf)
        lp_h = self.model.log_prob(hf.obs, hf.actions)
        lp_l = self.model.log_prob(lf.obs, lf.actions)
        x_h, x_l, x_mu = adv_h * lp_h, adv_l * lp_l, mu.mean(self.model.actor_parameters())

        c, stats = self._coefficient(hf, lf, adv_h, adv_l, lp_h, lp_l) if e.trim_pairs else (0.0, {})
        if not pairs or not mu.steps:
            c = 0.0  # no low-fidelity data this iteration: plain HF REINFORCE
        with torch.no_grad():
            xh, xl, xmu = x_h.detach().numpy(), x_l.detach().numpy(), mu.x / mu.steps if mu.steps else 0.0
            var_without = float(xh.var()) if len(xh) else 0.0
            var_with = float((xh + c * (xl - xmu)).var()) if len(xh) == len(xl) and len(xh) else var_without
        stats.update(c=c, n_pairs=len(pairs), n_aligned=len(hf), var_without_cv=var_without, var_with_cv=var_with,
                     var_ratio=var_with / var_without if var_without > 0 else 1.0, pool_steps_prefetched=prefetched)
        return est.mf_policy_loss(x_h, x_l, x_mu, c), hf, stats

    def _coefficient(self, hf, lf, adv_h, adv_l, lp_h, lp_l) -> tuple[float, dict]:
        e = self.cfg.estimator
        a_h, a_l = adv_h.numpy(), adv_l.numpy()
        if e.permutation_quirk:  # the authors pair A[perm i] with log-prob[i]; HF and LF share the permutation
            perm = self.permutation_rng.permutation(len(a_h))
            a_h, a_l = a_h[perm], a_l[perm]
        x_h, x_l = a_h * lp_h.detach().numpy(), a_l * lp_l.detach().numpy()
        rho, s_h, s_l = est.pearson_stats(x_h, x_l)
        previous = self.coef.value()
        if len(x_h) > 1:
            self.coef.update(rho, s_h, s_l, e.ema_alpha)
        if e.fixed_c is not None:
            c = e.fixed_c
        elif e.vector_c:
            c = est.trace_optimal_c(self._per_sample_grads(hf, adv_h), self._per_sample_grads(lf, adv_l))
        else:
            c = previous if e.c_from_previous else self.coef.value()
        if e.clamp_negative_rho and rho < 0 and e.fixed_c is None:
            c = 0.0
        return c, {'rho': rho, 'sigma_h': s_h, 'sigma_l': s_l, 'rho_ema': self.coef.rho}

    def _per_sample_grads(self, steps: est.Steps, adv: torch.Tensor) -> torch.Tensor:
        """Rows of d(A_t log pi_t)/d theta_policy, one per step (torch.func.vmap over samples)."""
        params = {k: v.detach() for k, v in self.model.named_parameters() if not k.startswith('vf.')}

        def surrogate(p, obs, act, a):
            return a * functional_call(self.model, p, (obs[None], act[None]), strict=False)[0]

        rows = vmap(grad(surrogate), in_dims=(None, 0, 0, 0))(params, steps.obs, steps.actions, adv)
        return torch.cat([g.reshape(len(steps), -1) for g in rows.values()], dim=1)

    # ---- checkpointing -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'coefficient': self.coef.state(), 'version': self.version,
                'permutation_rng': self.permutation_rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.coef.load(state['coefficient'])
        self.version = int(state['version'])
        self.permutation_rng.bit_generator.state = state['permutation_rng']
        self.prefetched = SurrogateSum()
