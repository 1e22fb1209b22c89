"""policy_server: the high-fidelity side's actor. Observation in, action out at control rate, with the noise eps it
used and the policy version, so the learner can pair the episode with low-fidelity replays of the same noise."""
from __future__ import annotations

import array

import numpy as np
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from mfpg_ros.core.codec import CodecError, decode_weights, build_model
from mfpg_ros.core.policy import NumpyPolicy
from mfpg_ros.nodes.common import ACTION, CONTROL, LATCHED, OBSERVATION, WEIGHTS, Diagnostics, Rejections, \
    msg_bytes, run, signing_key
from mfpg_ros.nodes.params import declare_config
from mfpg_ros.sim.tasks import make_task


class PolicyServer(Node):
    def __init__(self):
        super().__init__('policy_server')
        cfg = declare_config(self)
        self.deterministic = self.declare_parameter('deterministic', False).value
        self.key = signing_key(self)
        task = make_task(cfg.task)
        self.contract, self.clip = task.contract, task.clip_action
        self.rng = np.random.default_rng([cfg.seed, 13])
        self.policy: NumpyPolicy | None = None
        self.version = -1
        self.actions = 0
        self.rejections = Rejections(self)
        self.action_pub = self.create_publisher(Float64MultiArray, ACTION, CONTROL)
        self.create_subscription(UInt8MultiArray, WEIGHTS, self.on_weights, LATCHED)
        self.create_subscription(Float64MultiArray, OBSERVATION, self.on_observation, CONTROL)
        Diagnostics(self, lambda: {'policy_version': self.version, 'actions': self.actions,
                                   'rejected': self.rejections.total})

    def on_weights(self, msg: UInt8MultiArray) -> None:
        try:
            weights = decode_weights(msg_bytes(msg), contract=self.contract, key=self.key)
        except CodecError as err:
            self.rejections(WEIGHTS, err)
            return
        if weights.version <= self.version:
            self.rejections(WEIGHTS, f'out-of-order weights version {weights.version} <= {self.version}')
            return
        self.policy, self.version = NumpyPolicy(build_model(weights)), weights.version

    def on_observation(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (1 + self.contract.obs_dim,) or not np.isfinite(data).all():
            self.rejections(OBSERVATION, f'expected [seq, {self.contract.obs_dim} finite values], '
                                         f'got {data.size} values')
            return
        if self.policy is None:
            self.rejections(OBSERVATION, 'no policy weights received yet')
            return
        eps = np.zeros(self.contract.act_dim) if self.deterministic else self.rng.standard_normal(self.contract.act_dim)
        action = self.policy.sample(data[1:][None], eps[None])[0]
        command = self.clip(action)
        out = Float64MultiArray()
        out.data = array.array('d', [data[0], float(self.version), *action, *eps, *command])
        self.action_pub.publish(out)
        self.actions += 1


def main(args=None):
    run(PolicyServer, args)
