"""The nodes that only act, simulate or record start without torch (seconds and ~180 MB each): only the learner
trains. test_graph checks the same on a running graph; this is the quick check, bag_recorder included."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize('node', ['policy_server', 'lofi_sim', 'hifi_interface', 'twin_plant', 'bag_recorder'])
def test_node_module_imports_no_torch(node):
    code = f'import sys, mfpg_ros.nodes.{node}; print(sorted(m for m in sys.modules if m.split(".")[0] == "torch")[:3])'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


def test_the_learner_does_import_torch():  # the check above would pass vacuously if the probe were broken
    code = 'import sys, mfpg_ros.nodes.learner; print("torch" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'True'
