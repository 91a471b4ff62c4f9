"""Periodic closed-loop evaluation during `vmerpo train`: the meta-policy pi_c on a few
meta-train tasks in MuJoCo, through the same harness and safety limiter as `vmerpo eval`.
`learning` never imports `sim`; this layer joins them through `train(evaluate=...)`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from learning.export import DeployedPolicy
    from sim.envs import MetaWorldImageEnv


def sim_evaluator(data: str, run_dir: str, tasks: str, episodes: int, seed: int = 0
                  ) -> Callable[[DeployedPolicy, int], dict[str, float]]:
    """evaluate(module, step) -> {"success", "return"} on `tasks` of the store's family."""
    from learning.merpo_train import TorchPolicy, policy_spec
    from learning.store import EpisodeStore
    from sim.envs import FAMILIES, goal_pin_of, make_env, task_set

    store_spec = EpisodeStore.open(data, load="lazy").spec
    family = store_spec.env.get("family")
    if family not in FAMILIES:
        raise ValueError(f"{data}: periodic evaluation needs a store recorded by `vmerpo collect` "
                         f"(its env family is {family!r}); drop --eval-every")
    ids = task_set(family).select(tasks)
    env_cfg = store_spec.env
    state: dict[str, MetaWorldImageEnv | None] = {"env": None}

    def evaluate(module: DeployedPolicy, step: int) -> dict[str, float]:
        from sim.evaluate import evaluate as run_eval
        from vmerpo.commands.eval import LatentPolicy

        if state["env"] is None:  # made on first use: no renderer for runs that never evaluate
            state["env"] = make_env(family, store_spec.image_size, env_cfg.get("max_episode_steps", 150),
                                    env_cfg.get("action_repeat", 1),
                                    hand_init_noise=env_cfg.get("hand_init_noise_m", 0.0),
                                    goal_pin=goal_pin_of(env_cfg))
        env = state["env"]
        spec = policy_spec(module, store_spec, Path(run_dir).name, "", None)
        device = str(next(module.parameters()).device)
        policy = LatentPolicy(TorchPolicy(None, device, module=module, spec=spec), env)
        res = run_eval(policy, env, ids, episodes, seed=seed)
        return {"success": float(res["success_rate"]), "return": float(res["mean_return"])}

    return evaluate
