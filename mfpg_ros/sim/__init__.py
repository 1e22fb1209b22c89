"""MuJoCo side: task registry (tasks, cartpole), fidelity variants, the vectorised LF engine; imports core, never nodes."""
