from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'mfpg_ros'
NODES = ('learner', 'policy_server', 'lofi_sim', 'hifi_interface', 'twin_plant', 'bag_recorder', 'gazebo_reset')

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.perspective')),
        (f'share/{PACKAGE}/config/hardware', glob('config/hardware/*.yaml')),
        (f'share/{PACKAGE}/urdf', glob('urdf/*')),
    ],
    package_data={PACKAGE: ['../config/*.yaml', '../config/hardware/*.yaml', '../urdf/*']},
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='mfpg_ros developers',
    maintainer_email='mfpg-ros@example.org',
    description='Multi-fidelity policy gradients for ROS 2: few real-robot episodes plus many correlated MuJoCo ones.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [f'{n} = {PACKAGE}.nodes.{n}:main' for n in NODES]
        + ['mfpg = mfpg_ros.cli:main', f'mfpg_compose = {PACKAGE}.nodes.compose:main'],
    },
)
