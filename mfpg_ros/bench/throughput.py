"""Closed-loop LF throughput: the engine vs Gymnasium's SyncVectorEnv loop vs the physics limit.

All three use a random-init 64-64 tanh Gaussian policy with batched inference and the same task physics (frame
skip, observation, reward, termination). The physics limit replays the engine's own per-step states and
controls open loop through mujoco.rollout with the same thread count, so it is exactly the engine's physics
work without anything between control steps. The figures are timed in rounds, each timing every loop once in
turn; a ratio is the median over rounds of the ratio within a round, so drift in the machine's speed (a shared
VM's vCPUs swing by 1.5x within seconds) hits both sides of a ratio alike.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import mujoco
import mujoco.rollout
import numpy as np
import torch

from mfpg_ros.core.episode import LOFI_POOL
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.policy import ActorCritic
from mfpg_ros.sim.engine import Engine

from mfpg_ros.sim.tasks import TASK_NAMES, make_task


def engine_rate(engine: Engine, policy, steps: int) -> float:
    start = time.perf_counter()
    engine.collect(policy, steps, 0, LOFI_POOL)
    return engine.n_envs * steps / (time.perf_counter() - start)


def record_workload(task, policy, n_envs: int, seed: int, nthread: int, warmup: int, steps: int):
    """Run an engine like the timed one (same seed, same calls) and keep every step's full state and control."""
    engine = Engine(task, n_envs, seed, nthread)
    engine.collect(policy, warmup, 0, LOFI_POOL)
    states, ctrls = [], []
    for lane in engine.lanes:
        def recording_step(ctrl, ids=None, sims=lane.sims, step=lane.sims.step):
            states.append(sims.batch.state.copy())
            ctrls.append(np.array(ctrl, dtype=np.float64))
            return step(ctrl, ids)
        lane.sims.step = recording_step
    engine.collect(policy, steps, 0, LOFI_POOL)
    model, data = task.model, mujoco.MjData(task.model)
    full = mujoco.mjtState.mjSTATE_FULLPHYSICS
    rows = np.concatenate(states)
    initial = np.empty((len(rows), mujoco.mj_stateSize(model, full)))
    warmstart = np.empty((len(rows), model.nv))
    for i, row in enumerate(rows):
        mujoco.mj_setState(model, data, row, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_getState(model, data, initial[i], full)
        warmstart[i] = data.qacc_warmstart
    control = np.repeat(np.concatenate(ctrls)[:, None, :], task.frame_skip, axis=1)
    return initial, warmstart, control


def physics_rate(task, roller, datas, workload) -> float:
    """Env-steps/s of the recorded workload as open-loop rollouts of one control period each."""
    initial, warmstart, control = workload
    start = time.perf_counter()
    roller.rollout(task.model, datas, initial, control, nstep=task.frame_skip, initial_warmstart=warmstart)
    return len(initial) / (time.perf_counter() - start)


def gym_rate(envs, model: ActorCritic, low, high, steps: int, seed: int) -> float:
    """The peer loop: SyncVectorEnv + batched torch inference + sampling, as an SB3-style collector does."""
    obs, _ = envs.reset(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            mean = model.mean(torch.as_tensor(obs, dtype=torch.float32))
            action = mean + model.log_std.exp() * torch.randn(mean.shape, generator=generator)
            obs, _, _, _, _ = envs.step(np.clip(action.numpy(), low, high))
    return envs.num_envs * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench throughput', description=__doc__.splitlines()[0])
    parser.add_argument('--task', default='Hopper-v5', choices=[t for t in TASK_NAMES if t != 'cartpole'])
    parser.add_argument('--envs', type=int, default=9, help='engine and gym batch (the authors\' LF pool: 9)')
    parser.add_argument('--large-envs', type=int, default=64, help='a larger engine batch (0: skip)')
    parser.add_argument('--steps', type=int, default=1000, help='control steps per env per timed run')
    parser.add_argument('--rounds', type=int, default=10, help='timing rounds (each times every loop once)')
    parser.add_argument('--nthread', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warmup = 20

    task = make_task(args.task)
    torch.manual_seed(args.seed)
    model = ActorCritic(task.contract.obs_dim, task.contract.act_dim)
    policy = NumpyPolicy(model)
    configs = [(args.envs, args.steps)]
    if args.large_envs:
        configs.append((args.large_envs, max(1, args.steps * args.envs // args.large_envs)))
    engines, workloads = {}, {}
    for n, steps in configs:
        engines[n] = Engine(task, n, args.seed, args.nthread)
        engines[n].collect(policy, warmup, 0, LOFI_POOL)
        workloads[n] = record_workload(task, policy, n, args.seed, args.nthread, warmup, steps)
    roller = mujoco.rollout.Rollout(nthread=args.nthread)
    datas = [mujoco.MjData(task.model) for _ in range(max(1, args.nthread))]
    import gymnasium
    envs = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make(args.task) for _ in range(args.envs)])

    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for n, steps in configs:
            rates.setdefault(f'engine{n}', []).append(engine_rate(engines[n], policy, steps))
            rates.setdefault(f'physics{n}', []).append(physics_rate(task, roller, datas, workloads[n]))
        rates.setdefault('gym', []).append(gym_rate(envs, model, task.action_low, task.action_high, args.steps,
                                                    args.seed + len(rates.get('gym', []))))
    envs.close()
    roller.close()

    def ratio(a: str, b: str) -> tuple[float, float, float]:
        """median and quartiles over rounds of rates[a] / rates[b] within a round"""
        r = [x / y for x, y in zip(rates[a], rates[b])]
        q1, _, q3 = statistics.quantiles(r, n=4) if len(r) > 1 else (r[0], r[0], r[0])
        return statistics.median(r), q1, q3

    def spread(a: str, b: str) -> str:
        m, q1, q3 = ratio(a, b)
        return f'{m:.2f} (quartiles {q1:.2f}-{q3:.2f})'

    print(f'task {args.task}: frame_skip {task.frame_skip}, nthread {args.nthread}, policy 64-64 tanh (random init), '
          f'{args.envs * args.steps} env steps per timed run, {args.rounds} rounds, {os.cpu_count()} CPUs')
    for n, steps in configs:
        engine, physics = statistics.median(rates[f'engine{n}']), statistics.median(rates[f'physics{n}'])
        print(f'engine n_envs={n} x {steps} steps: {engine:.0f} env-steps/s; physics limit of the same workload '
              f'(mujoco.rollout nthread={args.nthread}, the engine\'s own states and controls, open loop): '
              f'{physics:.0f} env-steps/s = {physics * task.frame_skip:.0f} mj_step/s; ratio '
              f'{spread(f"engine{n}", f"physics{n}")}')
    print(f'gymnasium SyncVectorEnv n={args.envs} + batched torch policy: {statistics.median(rates["gym"]):.0f} '
          f'env-steps/s; engine n_envs={args.envs} vs it: {spread(f"engine{args.envs}", "gym")}')
    n = max((n for n, _ in configs), key=lambda n: statistics.median(rates[f'engine{n}']))
    print(f'lofi_engine (fastest configuration, n_envs={n}): {statistics.median(rates[f"engine{n}"]):.0f} '
          'env-steps/s (medians over rounds; ratios below are medians of within-round ratios)')
    print(f'lofi_engine_vs_physics_limit: {ratio(f"engine{n}", f"physics{n}")[0]:.2f}')
    print(f'lofi_engine_vs_gymnasium: {ratio(f"engine{n}", "gym")[0]:.2f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
