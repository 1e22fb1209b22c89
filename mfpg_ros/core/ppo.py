"""PPO (HF-only, 'ppo') and multi-fidelity PPO ('mf_ppo') behind the same interface as the REINFORCE Learner.

MF-PPO (docs/mf_ppo.md): each minibatch holds aligned HF steps together with their paired LF replays (one index
set for both) plus a slice of the independent LF pool; its policy loss is the control variate
    -[mean(x_h) + c * (mean(x_l) - mean(x_pool))],   x = per-step clipped surrogate min(r A, clip(r) A),
with c = -rho * sigma_h / sigma_l from the minibatch's paired surrogates (EMA, clamp and fixed_c as configured).
With c = 0 the update is operation for operation plain PPO on the aligned HF steps. Under pairing 'matched' the
correction is taken once per iteration: on the gradient at the rollout weights (ppo.cv_level 'gradient'), or on the
whole update, from PPO's updates on the replays and on batches of branches (cv_level 'update', docs/mf_ppo.md §7).
"""
from __future__ import annotations

import collections
import copy
from dataclasses import dataclass

import numpy as np
import torch

from mfpg_ros.core import estimator as est
from mfpg_ros.core.algorithms import guarded_update, seeded_model
from mfpg_ros.core.config import PPO_ALGORITHMS, AlgoConfig
from mfpg_ros.core.contract import Contract
from mfpg_ros.core.episode import Episode


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Generalised advantage estimates inside one segment. The value after its last step counts as 0 (no bootstrap,
    like the REINFORCE returns: segments carry no final observation), so lam = 1 gives reward-to-go minus V."""
    r, v, out = rewards.tolist(), values.tolist(), [0.0] * len(rewards)  # python floats: a faster loop
    running, next_value = 0.0, 0.0
    for t in range(len(r) - 1, -1, -1):
        running = r[t] + gamma * next_value - v[t] + gamma * lam * running
        out[t], next_value = running, v[t]
    return np.asarray(out, dtype=np.float64)


@dataclass
class Rollout:
    """Flat per-step tensors of some segments, frozen under the policy and critic that the update starts from."""

    obs: torch.Tensor
    actions: torch.Tensor
    old_log_prob: torch.Tensor
    old_value: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor  # value targets: advantages + old values

    def __len__(self) -> int:
        return int(self.advantages.shape[0])


@dataclass
class Batch:
    hf: Rollout
    lf: Rollout  # MF: the paired LF replays, step i aligned with hf step i
    pool: Rollout  # MF: the independent LF pool (the mean term)
    mf: bool  # control variate on (pairs and pool present)
    # pairing 'matched': the iteration's correction c * sum_i d_i / N per actor parameter, added to each CV minibatch
    correction: list[torch.Tensor] | None = None
    c: float = 0.0


class PPOLearner:
    """`update(hifi, paired, pool)` = n_epochs passes of clipped-surrogate minibatch steps; then the version advances.

    Estimator switches honoured for 'mf_ppo': ema_alpha, clamp_negative_rho, c_from_previous, fixed_c, trim_pairs
    (False: no pairs, so c = 0 and all HF steps are used), min_aligned_steps. The mean term always uses the pool
    only (mu_from_pool_only is ignored); vector_c and permutation_quirk are refused.
    """

    def __init__(self, cfg: AlgoConfig, contract: Contract, seed: int = 0):
        if cfg.algorithm not in PPO_ALGORITHMS:
            raise ValueError(f'PPOLearner runs {PPO_ALGORITHMS}, not {cfg.algorithm!r}')
        if cfg.estimator.vector_c or cfg.estimator.permutation_quirk:
            raise ValueError(f'{cfg.algorithm} supports neither algo.estimator.vector_c nor '
                             'algo.estimator.permutation_quirk')
        self.cfg, self.contract = cfg, contract
        self.model, self.optimizer = seeded_model(cfg, contract, seed)
        self.coef = est.Coefficient()
        self.minibatch_rng = np.random.default_rng([seed, 11])  # HF/pair minibatch order: the same as plain PPO's
        self.pool_rng = np.random.default_rng([seed, 13])  # pool slices: separate, so c = 0 stays plain PPO
        self.version = 0
        self._anchor = None  # during an update with ppo.cv_policy 'rollout': a copy of the rollout weights

    # ---- one iteration -------------------------------------------------------------------------------------
    def prefetch_pool(self, pool: list[Episode]) -> None:
        """Nothing can be summed ahead: PPO's pool terms change with the ratio at every epoch."""

    def update(self, hifi: list[Episode], paired: list[Episode] = (), pool: list[Episode] = ()) -> dict:
        return guarded_update(self, hifi, paired, pool, self._update)

    def _update(self, hifi: list[Episode], paired: list[Episode], pool: list[Episode]) -> dict:
        if self.cfg.algorithm == 'mf_ppo' and self.cfg.ppo.cv_level == 'update':
            metrics = self._update_level_cv(hifi, paired, pool)
        else:
            batch, stats = self._batch(hifi, paired, pool, self.coef)
            skip = len(batch.hf) <= self.cfg.estimator.min_aligned_steps
            metrics = {**(_SKIPPED if skip else self._optimise(batch)), **stats}  # the batch's statistics first
        if self.cfg.algorithm == 'ppo':  # HF-only, as the REINFORCE learner: no control-variate statistics at all
            dropped = _CONTROL_VARIATE_ONLY
        else:  # matched: c comes from segment gradients, so no surrogate rho and no LF ratios
            dropped = _PAPER_PAIRING_ONLY if self.cfg.estimator.pairing == 'matched' else ()
        for key in dropped:
            metrics.pop(key, None)
        return metrics

    def _update_level_cv(self, hifi: list[Episode], paired: list[Episode], pool: list[Episode]) -> dict:
        """cv_level 'update' (docs/mf_ppo.md §7): plain PPO's update on the HF segments, then the actor moves by
        c * (change(replays) - mean_k change(branch batch k)), each change being PPO's whole update run from the
        same start (weights, Adam state, random state) on that LF batch. c from earlier iterations only. An LF update
        that leaves non-finite weights drops the correction (counted), not the HF update."""
        start = copy.deepcopy(self)
        hf, empty = self._rollout(hifi), self._rollout([])
        skip = len(hf) <= self.cfg.estimator.min_aligned_steps
        metrics = {**(_SKIPPED if skip else self._optimise(Batch(hf, empty, empty, mf=False))), 'n_pairs': 0,
                   'n_aligned': len(hf), 'n_pool': 0, 'segment_cross': 0.0, 'segment_spread': 0.0, 'cv_batches': 0,
                   'nonfinite_lf_updates': 0}
        m = None if skip else est.match(hifi, paired, pool)
        if m is None:
            return metrics
        batches = self._branch_batches(m)
        metrics.update(n_pairs=m.n, n_pool=sum(len(b) for b in m.branches), cv_batches=len(batches))
        before = _actor_vector(start)
        d = start._change(m.replays) - torch.stack([start._change(b) for b in batches]).mean(0)
        if not torch.isfinite(d).all():
            metrics['nonfinite_lf_updates'] = 1
            return metrics
        e = self.cfg.estimator
        c, stats = est.segment_c(self.coef, (_actor_vector(self) - before)[None], d[None], e.ema_alpha, e.fixed_c)
        if c != 0.0:
            with torch.no_grad():
                start_at = 0
                for p in self.model.actor_parameters():
                    p.add_(d[start_at:start_at + p.numel()].view_as(p), alpha=c)
                    start_at += p.numel()
        metrics.update(stats, c=c, c_last=c)
        return metrics

    def _branch_batches(self, m: est.Matched) -> list[list[Episode]]:
        """Branch batch k: the k-th branch of every matched segment, in the replays' order; each is distributed as
        the replays (docs/pairing.md §2). At most ppo.cv_batches of them."""
        groups: dict[str, list[Episode]] = {}
        for b in m.branches:
            groups.setdefault(b.pair_of, []).append(b)
        count = min(self.cfg.ppo.cv_batches, *(len(groups[r.pair_of]) for r in m.replays))
        return [[groups[r.pair_of][k] for r in m.replays] for k in range(count)]

    def _change(self, episodes: list[Episode]) -> torch.Tensor:
        """The actor's weights after PPO's update on `episodes`, run on a copy (this learner is left as it is)."""
        twin = copy.deepcopy(self)
        empty = twin._rollout([])
        twin._optimise(Batch(twin._rollout(episodes), empty, empty, mf=False))
        return _actor_vector(twin)

    def policy_gradient(self, hifi, paired=(), pool=(), first_minibatch: bool = False) -> tuple[torch.Tensor, dict]:
        """The policy-gradient estimate at the current weights (every ratio is 1), flattened over actor parameters;
        no step is taken and no state changes. Full batch by default; with `first_minibatch`, the minibatch (and pool
        slice) the next update would start with. c comes from a copy of the running statistics. Gradient-level only:
        under ppo.cv_level 'update' the correction is not a gradient."""
        if self.cfg.algorithm == 'mf_ppo' and self.cfg.ppo.cv_level == 'update':
            raise ValueError("policy_gradient is the gradient-level estimate: set algo.ppo.cv_level: gradient")
        batch, metrics = self._batch(*([e for e in g if not e.aborted] for g in (hifi, paired, pool)))
        if first_minibatch:
            idx, pool_idx = self._epoch_minibatches(batch, copy.deepcopy(self.minibatch_rng),
                                                    copy.deepcopy(self.pool_rng))[0]
        else:
            idx, pool_idx = torch.arange(len(batch.hf)), torch.arange(len(batch.pool))
        policy_loss, info = self._policy_loss(batch, idx, pool_idx, copy.deepcopy(self.coef))
        metrics.update(info)
        return -torch.cat([g.flatten() for g in est.actor_grads(policy_loss, self.model.actor_parameters())]), metrics

    # ---- data ----------------------------------------------------------------------------------------------
    def _batch(self, hifi, paired, pool, coef: est.Coefficient | None = None) -> tuple[Batch, dict]:
        """The update's data. coef: the running c statistics that pairing 'matched' advances (default: a copy)."""
        e, coef = self.cfg.estimator, coef if coef is not None else copy.deepcopy(self.coef)
        if self.cfg.algorithm == 'ppo' or not paired:  # no LF data (e.g. an LF timeout): plain PPO on HF
            hf, empty = self._rollout(hifi), self._rollout([])
            return Batch(hf, empty, empty, mf=False), {'n_pairs': 0, 'n_aligned': len(hf), 'n_pool': 0}
        if e.pairing == 'matched':
            return self._matched_batch(hifi, paired, pool, coef)
        pairs = est.pair_segments(hifi, paired) if e.trim_pairs else []
        cut = [min(len(h), len(r)) for h, r in pairs]
        hf = self._rollout([h for h, _ in pairs], cut) if e.trim_pairs else self._rollout(hifi)
        lf, mu = self._rollout([r for _, r in pairs], cut), self._rollout(pool)
        if self.cfg.ppo.normalize_advantage and len(mu) > 1:
            # one affine map for paired LF and pool alike, symmetric in all LF steps: the CV's two means stay equal
            everything = torch.cat([lf.advantages, mu.advantages])
            mean, std = everything.mean(), everything.std()
            for part in (lf, mu):
                part.advantages = (part.advantages - mean) / (std + 1e-8)
        batch = Batch(hf, lf, mu, mf=bool(len(lf)) and bool(len(mu)))
        return batch, {'n_pairs': len(pairs), 'n_aligned': len(hf), 'n_pool': len(mu)}

    def _matched_batch(self, hifi, paired, pool, coef: est.Coefficient) -> tuple[Batch, dict]:
        """pairing 'matched' (docs/pairing.md): plain PPO's data on every HF step, and the iteration's control variate
        as one fixed vector c * sum_i d_i / N, taken at the rollout weights (ratio 1); c from earlier iterations,
        fitted against per-segment HF gradients. Advantages normalised per batch: HF alone, and replays and branches
        by one shared affine map (its dependence on this batch's LF data is the one inexact step: measured
        unbiased, docs/pairing.md)."""
        hf, empty = self._rollout(hifi), self._rollout([])
        m = est.match(hifi, paired, pool)
        if m is None:
            return Batch(hf, empty, empty, mf=False), {'n_pairs': 0, 'n_aligned': len(hf), 'n_pool': 0}
        lf, branches = self._rollout(m.replays), self._rollout(m.branches)
        adv_h = hf.advantages
        if self.cfg.ppo.normalize_advantage and len(adv_h) > 1:
            adv_h = (adv_h - adv_h.mean()) / (adv_h.std() + 1e-8)
            everything = torch.cat([lf.advantages, branches.advantages])
            mean, std = everything.mean(), everything.std()
            for part in (lf, branches):
                part.advantages = (part.advantages - mean) / (std + 1e-8)
        x = torch.cat([a * self.model.log_prob(r.obs, r.actions)
                       for a, r in ((adv_h, hf), (lf.advantages, lf), (branches.advantages, branches))])
        actor = self.model.actor_parameters()
        flat = est.segment_gradients(x, m.rows, actor)
        e = self.cfg.estimator
        c, stats = est.segment_c(coef, flat[:m.n], flat[m.n:], e.ema_alpha, e.fixed_c)
        total = c * flat[m.n:].sum(0) / len(hf)
        correction = [chunk.view_as(q) for chunk, q in zip(total.split([q.numel() for q in actor]), actor)]
        stats.update(n_pairs=m.n, n_aligned=len(hf), n_pool=len(branches))
        return Batch(hf, empty, empty, mf=c != 0.0, correction=correction, c=c), stats

    def _rollout(self, episodes: list[Episode], cut: list[int] | None = None) -> Rollout:
        """Old log-probs, old values and GAE over whole segments, then each segment cut to its first cut[i] steps."""
        if not episodes:
            z = torch.zeros(0)
            return Rollout(torch.zeros(0, self.contract.obs_dim), torch.zeros(0, self.contract.act_dim), z, z, z, z)
        obs = torch.as_tensor(np.concatenate([e.obs for e in episodes]), dtype=torch.float32)
        actions = torch.as_tensor(np.concatenate([e.actions for e in episodes]), dtype=torch.float32)
        with torch.no_grad():
            values, log_prob = self.model.value(obs), self.model.log_prob(obs, actions)
        v = values.double().numpy()
        p, start, keep, adv = self.cfg.ppo, 0, [], []
        for e, n in zip(episodes, cut or [len(e) for e in episodes]):
            adv.append(gae(e.rewards, v[start:start + len(e)], self.cfg.gamma, p.gae_lambda)[:n])
            keep.append(np.arange(start, start + n))
            start += len(e)
        keep = torch.as_tensor(np.concatenate(keep))
        advantages = torch.as_tensor(np.concatenate(adv), dtype=torch.float32)
        return Rollout(obs[keep], actions[keep], log_prob[keep], values[keep], advantages, advantages + values[keep])

    def _epoch_minibatches(self, batch: Batch, rng, pool_rng) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's (pair indices, pool indices) per minibatch. HF step i and LF replay i share an index."""
        n, size = len(batch.hf), max(1, self.cfg.ppo.minibatch_size)
        order = rng.permutation(n)
        chunks = [torch.as_tensor(order[i:i + size]) for i in range(0, n, size)]
        m = len(batch.pool)
        if not batch.mf:
            return [(idx, torch.arange(0)) for idx in chunks]
        per = self.cfg.ppo.pool_minibatch_size
        if per <= 0:  # the pool split evenly: each pool step is used once per epoch
            slices = np.array_split(pool_rng.permutation(m), len(chunks))
        else:
            perms = np.concatenate([pool_rng.permutation(m) for _ in range(-(-per * len(chunks) // m))])
            slices = [perms[k * per:(k + 1) * per] for k in range(len(chunks))]
        return [(idx, torch.as_tensor(s)) for idx, s in zip(chunks, slices)]

    # ---- losses --------------------------------------------------------------------------------------------
    def _ratio_and_advantages(self, part: Rollout, idx: torch.Tensor,
                              normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """r = pi / pi_old and the advantages (normalised per minibatch if asked) of the steps idx."""
        ratio = torch.exp(self.model.log_prob(part.obs[idx], part.actions[idx]) - part.old_log_prob[idx])
        adv = part.advantages[idx]
        if normalize and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        return ratio, adv

    def _clipped(self, ratio: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """Per-step clipped surrogate min(r A, clip(r) A)."""
        eps = self.cfg.ppo.clip_range
        return torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)

    def _policy_loss(self, batch: Batch, idx, pool_idx, coef: est.Coefficient,
                     cv: bool = True) -> tuple[torch.Tensor, dict]:
        """cv = False (an epoch past ppo.cv_epochs): the plain PPO loss on the aligned HF steps; c and its running
        statistics are left alone."""
        p = self.cfg.ppo
        ratio, adv_h = self._ratio_and_advantages(batch.hf, idx, p.normalize_advantage)
        x_h = self._clipped(ratio, adv_h)
        info = _ratio_stats(ratio, p.clip_range)
        if not batch.mf or not cv:
            return est.mf_policy_loss(x_h, x_h[:0], x_h[:0], 0.0), info
        if batch.correction is not None:  # matched: the fixed vector, as the linear loss -<correction, theta>
            info.update(c=batch.c)
            return est.mf_policy_loss(x_h, x_h[:0], x_h[:0], 0.0) - sum(
                (g * q).sum() for g, q in zip(batch.correction, self.model.actor_parameters())), info
        ratio_l, adv_l = self._ratio_and_advantages(batch.lf, idx, False)  # LF advantages: normalised per iteration
        ratio_mu, adv_mu = self._ratio_and_advantages(batch.pool, pool_idx, False)
        x_l, x_mu = self._clipped(ratio_l, adv_l), self._clipped(ratio_mu, adv_mu)
        c, stats = self._coefficient(x_h.detach(), x_l.detach(), coef)
        with torch.no_grad():
            xh, xl = x_h.double(), x_l.double()
            var_without = float(xh.var(unbiased=False))
            var_with = float((xh + c * (xl - x_mu.double().mean())).var(unbiased=False)) if len(x_mu) else var_without
        info.update(stats, c=c, lf_clip_fraction=_ratio_stats(ratio_l, p.clip_range)['clip_fraction'],
                    var_without_cv=var_without, var_with_cv=var_with,
                    var_ratio=var_with / var_without if var_without > 0 else 1.0)
        if p.cv_policy == 'rollout':
            return est.mf_policy_loss(x_h, x_h[:0], x_h[:0], 0.0) + self._rollout_cv(batch, idx, pool_idx, c), info
        if p.cv_clip == 'signed' and c != 0.0:  # the same gradient at r = 1; each term clipped with its sign
            return est.mf_policy_loss(x_h, self._clipped(ratio_l, c * adv_l),
                                      -self._clipped(ratio_mu, -c * adv_mu), 1.0), info
        return est.mf_policy_loss(x_h, x_l, x_mu, c), info

    def _rollout_cv(self, batch: Batch, idx: torch.Tensor, pool_idx: torch.Tensor, c: float) -> torch.Tensor:
        """-c (mean x_l - mean x_pool) with its gradient taken at the rollout weights (every ratio 1: the gradient
        is that of A log pi), as the linear loss -<g, theta> whose gradient is that fixed vector."""
        model = self.model if self._anchor is None else self._anchor  # None: outside an update, at the weights now
        terms = [(part.advantages[i] * model.log_prob(part.obs[i], part.actions[i])).mean()
                 for part, i in ((batch.lf, idx), (batch.pool, pool_idx))]
        grads = torch.autograd.grad(c * (terms[0] - terms[1]), model.actor_parameters(), allow_unused=True)
        return -sum((g * q).sum() for g, q in zip(grads, self.model.actor_parameters()) if g is not None)

    def _coefficient(self, x_h: torch.Tensor, x_l: torch.Tensor, coef: est.Coefficient) -> tuple[float, dict]:
        """c from this minibatch's paired surrogates, with the REINFORCE learner's EMA / clamp / fixed_c rules."""
        e = self.cfg.estimator
        rho, s_h, s_l = est.pearson_stats(x_h.double().numpy(), x_l.double().numpy())
        previous = coef.value()
        if len(x_h) > 1:
            coef.update(rho, s_h, s_l, e.ema_alpha)
        if e.fixed_c is not None:
            c = float(e.fixed_c)
        else:
            c = previous if e.c_from_previous else coef.value()
            if e.clamp_negative_rho and rho < 0:
                c = 0.0
        return c, {'rho': rho, 'sigma_h': s_h, 'sigma_l': s_l, 'rho_ema': coef.rho}

    def _value_loss(self, hf: Rollout, idx: torch.Tensor) -> torch.Tensor:
        """Critic fit on HF steps only (as the authors' REINFORCE learner); optionally PPO2-style clipped."""
        value, target = self.model.value(hf.obs[idx]), hf.returns[idx]
        if not self.cfg.ppo.clip_value:
            return torch.nn.functional.mse_loss(value, target)
        r, old = self.cfg.ppo.value_clip_range, hf.old_value[idx]
        clipped = old + torch.clamp(value - old, -r, r)
        return torch.max((value - target) ** 2, (clipped - target) ** 2).mean()

    # ---- the epochs ----------------------------------------------------------------------------------------
    def _optimise(self, batch: Batch) -> dict:
        p, log = self.cfg.ppo, collections.defaultdict(list)
        self._anchor = copy.deepcopy(self.model) if p.cv_policy == 'rollout' else None  # the rollout weights
        epochs = 0
        for epoch in range(p.n_epochs):
            epochs += 1
            kl_before, cv = len(log['approx_kl']), p.cv_epochs <= 0 or epoch < p.cv_epochs
            for idx, pool_idx in self._epoch_minibatches(batch, self.minibatch_rng, self.pool_rng):
                policy_loss, info = self._policy_loss(batch, idx, pool_idx, self.coef, cv)
                value_loss = self._value_loss(batch.hf, idx)
                self.optimizer.zero_grad(set_to_none=True)
                (policy_loss + self.cfg.vf_coef * value_loss).backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
                self.optimizer.step()
                info.update(policy_loss=float(policy_loss.detach()), value_loss=float(value_loss.detach()),
                            grad_norm=float(grad_norm))
                for key, value in info.items():
                    log[key].append(value)
            if p.target_kl is not None and np.mean(log['approx_kl'][kl_before:]) > 1.5 * p.target_kl:
                break
        self._anchor = None
        metrics = {**_SKIPPED, 'skipped': 0.0}
        metrics.update({key: float(np.mean(values)) for key, values in log.items()})
        metrics.update(n_updates=len(log['policy_loss']), epochs=epochs, c_last=log['c'][-1] if log['c'] else 0.0,
                       approx_kl_last=log['approx_kl'][-1])
        return metrics

    # ---- checkpointing -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Same keys as Learner.state_dict (so core/checkpoint.py stores it); both RNG states under permutation_rng."""
        return {'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'coefficient': self.coef.state(), 'version': self.version,
                'permutation_rng': {'minibatch': self.minibatch_rng.bit_generator.state,
                                    'pool': self.pool_rng.bit_generator.state}}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.coef.load(state['coefficient'])
        self.version = int(state['version'])
        self.minibatch_rng.bit_generator.state = state['permutation_rng']['minibatch']
        self.pool_rng.bit_generator.state = state['permutation_rng']['pool']


def _actor_vector(learner: PPOLearner) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(learner.model.actor_parameters()).detach().clone()


def _ratio_stats(ratio: torch.Tensor, clip_range: float) -> dict:
    """Fraction of steps outside the clip range and the k3 estimate of KL(old || new), E[(r - 1) - log r]."""
    with torch.no_grad():
        if not len(ratio):
            return {'clip_fraction': 0.0, 'approx_kl': 0.0}
        return {'clip_fraction': float(((ratio - 1).abs() > clip_range).float().mean()),
                'approx_kl': float(((ratio - 1) - ratio.log()).mean())}


# every metric an iteration reports, at its value when the update is skipped (too few aligned HF steps)
_SKIPPED = {'skipped': 1.0, 'policy_loss': float('nan'), 'value_loss': float('nan'), 'grad_norm': 0.0,
            'clip_fraction': 0.0, 'lf_clip_fraction': 0.0, 'approx_kl': 0.0, 'approx_kl_last': 0.0,
            'c': 0.0, 'c_last': 0.0, 'rho': 0.0, 'sigma_h': 0.0, 'sigma_l': 0.0, 'rho_ema': 0.0,
            'var_without_cv': 0.0, 'var_with_cv': 0.0, 'var_ratio': 1.0, 'n_updates': 0, 'epochs': 0}
_PAPER_PAIRING_ONLY = ('rho', 'sigma_h', 'sigma_l', 'rho_ema', 'lf_clip_fraction')
_CONTROL_VARIATE_ONLY = (*_PAPER_PAIRING_ONLY, 'c', 'c_last', 'var_without_cv', 'var_with_cv', 'var_ratio', 'n_pairs',
                         'n_pool')
