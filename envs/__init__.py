"""What the engine optimises: the `gpt` trainer, `synthetic` worlds with known truth, and any
`command` that prints a metric. Importing the package registers every kind in ENVS."""
from envs.base import ENVS, Env, Outcome, make_env
from envs.command import CommandEnv
from envs.gpt import GptEnv
from envs.synthetic import BestReachable, Interaction, SyntheticEnv

__all__ = [
    "ENVS", "BestReachable", "CommandEnv", "Env", "GptEnv", "Interaction", "Outcome",
    "SyntheticEnv", "make_env",
]
