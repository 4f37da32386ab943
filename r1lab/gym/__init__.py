"""PPO, GRPO and branching GRPO on gymnasium control tasks and MuJoCo robots (`r1lab control`).

envs: making envs, same-start groups, saving / restoring a simulator's state; policies: categorical and Gaussian
policies over normalised observations; episodes: playing them; ppo, grpo: the agents; run: the training loop;
video: a GIF of a trained policy.
"""
