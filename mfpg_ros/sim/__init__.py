"""MuJoCo side: task registry (tasks, cartpole), fidelity variants, the vectorised LF engine.

Imports core, never nodes."""
